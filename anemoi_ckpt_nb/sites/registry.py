"""Sites: the places that hold copies of a catalogue's checkpoints.

A site is described once, in ``catalogue.json`` (the descriptor's ``sites``
list): a name, a kind (``s3`` or ``filesystem``), where its copies go (an
``s3://bucket/prefix`` or a path prefix on a shared file system) and, for S3,
the endpoint URL and the AWS *profile name* to use. Credentials are never
stored: each user's ordinary AWS configuration supplies them for that profile.

The catalogue's own storage is a site too: its blobs (``blobs/sha256/<hash>``)
are the implicit first location of every uploaded checkpoint. Its name is the
descriptor's ``catalogue_site`` (default ``"catalogue"``).

The site this machine belongs to is ``$ANEMOI_CKPT_SITE``: downloads and
prefetches try that site's copies first (see :mod:`.fetch`).

Related modules: :mod:`.locations` (which site holds which checkpoint),
:mod:`.transfer` (replicate, verify), :mod:`.fetch` (site-aware
download), :mod:`.drop` (drop one copy safely).
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from anemoi_ckpt_nb.catalogue.copies import CATALOGUE_SITE_KEY, DEFAULT_CATALOGUE_SITE
from anemoi_ckpt_nb.catalogue.store import catalogue_site_name
from anemoi_ckpt_nb.errors import (
    ConflictError,
    SchemaError,
    SiteError,
    UnknownSiteError,
)

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore
    from anemoi_ckpt_nb.storage.base import Storage

#: Environment variable naming the site this machine belongs to.
ENV_SITE = "ANEMOI_CKPT_SITE"

SiteKind = Literal["s3", "filesystem"]
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_MAX_ATTEMPTS = 50


class Site(BaseModel):
    """One site of ``catalogue.json``'s ``sites`` list.

    ``url`` is ``s3://bucket/prefix`` for an S3 site and an absolute path for
    a filesystem site. ``endpoint_url`` and ``profile`` only apply to S3; when
    unset, boto3's ordinary configuration (``AWS_ENDPOINT_URL``,
    ``AWS_PROFILE``) decides.
    """

    model_config = ConfigDict(extra="allow")

    name: str
    kind: SiteKind
    url: str
    endpoint_url: str | None = None
    profile: str | None = None
    description: str | None = None
    added_at: str | None = None
    added_by: str | None = None


class CatalogueSite(BaseModel):
    """The catalogue's own storage, seen as a site (not stored in ``sites``)."""

    name: str
    kind: Literal["catalogue"] = "catalogue"
    url: str


def validate_site_name(name: str) -> str:
    """Return ``name`` if it can name a site: 1-64 letters, digits, ``_ . -``.

    Raises:
        SiteError: the name breaks the rule.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise SiteError(
            f"invalid site name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter, digit or '_'",
            hint="for example `ecmwf`, `leonardo` or `lumi-scratch`",
        )
    return name


def local_site() -> str | None:
    """The site this machine belongs to (``$ANEMOI_CKPT_SITE``), or None."""
    from anemoi_ckpt_nb import settings

    return settings.site().value


def refresh(store: CatalogueStore) -> None:
    """Re-read ``catalogue.json``: another process may have described a site since it was opened."""
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore as _Store

    store.descriptor = _Store.open(store.storage).descriptor


def list_sites(store: CatalogueStore, *, fresh: bool = False) -> list[Site]:
    """The sites described in the catalogue's descriptor, in the order they were added.

    Args:
        store: The catalogue.
        fresh: Re-read ``catalogue.json`` first.

    Raises:
        SchemaError: an entry of ``sites`` is not a valid site description.
    """
    if fresh:
        refresh(store)
    sites = []
    for raw in store.descriptor.sites:
        try:
            sites.append(Site.model_validate(raw))
        except ValidationError as error:
            raise SchemaError(
                f"{store.url}/catalogue.json: a site entry is invalid ({error.errors()[0]['msg']}): {raw!r}",
                hint="fix or remove it with `anemoi-ckpt site rm NAME`",
            ) from None
    return sites


def get_site(store: CatalogueStore, name: str) -> Site | CatalogueSite:
    """The site called ``name``: a described site, or the catalogue's own storage.

    Raises:
        UnknownSiteError: no such site.
    """
    for fresh in (False, True):  # on a miss, look again in a fresh catalogue.json
        if name == catalogue_site_name(store):
            return CatalogueSite(name=name, url=store.url)
        for site in list_sites(store, fresh=fresh):
            if site.name == name:
                return site
    known = [catalogue_site_name(store)] + [s.name for s in list_sites(store)]
    raise UnknownSiteError(
        name,
        f"no site {name!r} in {store.url}/catalogue.json (known: {', '.join(known)})",
        hint=f"describe it with `anemoi-ckpt site add {name} --s3 s3://bucket/prefix` or `--path /shared/folder`",
    )


def open_site_storage(site: Site | CatalogueSite, store: CatalogueStore | None = None) -> Storage:
    """The storage holding a site's copies (lazy: no request is made here).

    Args:
        site: The site.
        store: The catalogue, needed for the catalogue's own site.

    Returns:
        A :class:`~anemoi_ckpt_nb.storage.base.Storage` rooted at the site's prefix.
    """
    from anemoi_ckpt_nb.storage import open_storage

    if isinstance(site, CatalogueSite):
        if store is None:
            raise TypeError("the catalogue's own site needs the catalogue store")
        return store.storage
    if site.kind == "filesystem":
        return open_storage(Path(site.url), role=f"site {site.name!r} ({site.url})")
    options = {k: v for k, v in (("endpoint_url", site.endpoint_url), ("profile", site.profile)) if v}
    return open_storage(site.url, **options)


# --- changing the descriptor (compare-and-swap on catalogue.json) -----------------------


def _update_descriptor(store: CatalogueStore, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the descriptor as JSON and write it back by compare-and-swap.

    ``change`` may raise to refuse; it is re-run on the fresh document after a conflict.
    """
    from anemoi_ckpt_nb.catalogue import layout
    from anemoi_ckpt_nb.catalogue.documents import read_document
    from anemoi_ckpt_nb.catalogue.schema import CatalogueDescriptor

    for attempt in range(_MAX_ATTEMPTS):
        data, etag = store.storage.get(layout.DESCRIPTOR)
        descriptor = read_document(CatalogueDescriptor, "descriptor", data, f"{store.url}/{layout.DESCRIPTOR}")
        document = descriptor.model_dump(mode="json")
        change(document)
        new = CatalogueDescriptor.model_validate(document)
        try:
            store.storage.replace(layout.DESCRIPTOR, layout.dump(new), etag=etag)
        except ConflictError:
            time.sleep(random.uniform(0.002, 0.02) * min(attempt + 1, 10))
            continue
        store.descriptor = new
        return
    raise SiteError(f"{store.url}/catalogue.json kept changing; gave up", hint="retry the command")


def _check_s3_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise SiteError(f"{url!r} is not an s3://bucket/prefix URL", hint="e.g. --s3 s3://my-bucket/anemoi-replicas")
    return f"s3://{parts.netloc}/{parts.path.strip('/')}".rstrip("/")


def add_site(
    store: CatalogueStore,
    name: str,
    *,
    s3: str | None = None,
    path: str | os.PathLike | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    description: str | None = None,
    replace: bool = False,
) -> Site:
    """Describe a site in ``catalogue.json`` (compare-and-swap, safe with concurrent writers).

    Args:
        store: The catalogue.
        name: The site's name (see :func:`validate_site_name`).
        s3: ``s3://bucket/prefix`` where the site keeps its copies.
        path: Or an absolute folder on the site's shared file system.
        endpoint_url: S3 endpoint of the site (default: the user's AWS configuration).
        profile: AWS profile name whose credentials reach the site; only the name is stored.
        description: Free text shown by ``site ls``.
        replace: Overwrite an existing site of the same name.

    Returns:
        The stored site.

    Raises:
        SiteError: bad name or options, or the site exists and ``replace`` is false.
    """
    from anemoi_ckpt_nb.catalogue.layout import whoami
    from anemoi_ckpt_nb.catalogue.schema import utcnow

    validate_site_name(name)
    if (s3 is None) == (path is None):
        raise SiteError(f"site {name!r}: give exactly one of an S3 URL or a path", hint="--s3 s3://bucket/prefix or --path /shared/folder")
    if s3 is not None:
        site = Site(name=name, kind="s3", url=_check_s3_url(s3), endpoint_url=endpoint_url, profile=profile)
    else:
        if endpoint_url or profile:
            raise SiteError(f"site {name!r}: --endpoint-url and --profile only apply to S3 sites")
        folder = Path(os.fspath(path)).expanduser()
        if not folder.is_absolute():
            raise SiteError(f"site {name!r}: {folder} is not an absolute path", hint="give the full path, as every machine of the site sees it")
        site = Site(name=name, kind="filesystem", url=str(folder))
    site.description = description
    site.added_at = utcnow().isoformat(timespec="seconds")
    site.added_by = str(whoami())

    def change(document: dict[str, Any]) -> None:
        # Checked on the fresh document: the catalogue's site may have been named since the store was opened.
        if name == (document.get(CATALOGUE_SITE_KEY) or DEFAULT_CATALOGUE_SITE):
            raise SiteError(f"{name!r} is the catalogue's own site", hint="choose another name")
        sites = document.setdefault("sites", [])
        existing = [i for i, s in enumerate(sites) if s.get("name") == name]
        if existing and not replace:
            raise SiteError(f"site {name!r} is already described in {store.url}/catalogue.json", hint="remove it first with `anemoi-ckpt site rm NAME`, or pass --replace")
        entry = site.model_dump(mode="json", exclude_none=True)
        if existing:
            sites[existing[0]] = entry
        else:
            sites.append(entry)

    _update_descriptor(store, change)
    return site


def remove_site(store: CatalogueStore, name: str, *, force: bool = False) -> None:
    """Remove a site's description; refused while a checkpoint lists a copy there.

    Args:
        store: The catalogue.
        name: The site.
        force: Remove even if copies are recorded there (they become unusable).

    Raises:
        UnknownSiteError: no such site.
        SiteError: copies are recorded there and ``force`` is false.
    """
    site = get_site(store, name)
    if isinstance(site, CatalogueSite):
        raise SiteError(f"{name!r} is the catalogue's own storage and cannot be removed", hint="rename it with `anemoi-ckpt site name-catalogue NAME`")
    if not force:
        from anemoi_ckpt_nb.sites.locations import sites_of_entry

        catalogue = catalogue_site_name(store)
        users = [e["uuid"] for e in store.index().entries.values() if name in sites_of_entry(e, catalogue)]
        if users:
            raise SiteError(
                f"site {name!r} holds copies of {len(users)} checkpoint(s), e.g. {users[0]}",
                hint=f"drop them first (`anemoi-ckpt clean --drop-location {name} ID --apply`) or pass --force",
            )

    def change(document: dict[str, Any]) -> None:
        document["sites"] = [s for s in document.get("sites", []) if s.get("name") != name]

    _update_descriptor(store, change)


def name_catalogue_site(store: CatalogueStore, name: str) -> None:
    """Give the catalogue's own storage a site name (e.g. the site that hosts it).

    Raises:
        SiteError: invalid name, or a described site already has it.
    """
    validate_site_name(name)

    def change(document: dict[str, Any]) -> None:
        # Checked on the fresh document: a site of that name may have been added since the store was opened.
        if any(site.get("name") == name for site in document.get("sites", [])):
            raise SiteError(f"a described site is already called {name!r}", hint="choose another name")
        document[CATALOGUE_SITE_KEY] = name

    _update_descriptor(store, change)


def describe_sites(store: CatalogueStore) -> list[dict[str, Any]]:
    """Every site as plain data, the catalogue's own first (what ``site ls --json`` prints)."""
    sites = list_sites(store, fresh=True)
    rows: list[dict[str, Any]] = [{"name": catalogue_site_name(store), "kind": "catalogue", "url": store.url}]
    rows += [site.model_dump(mode="json", exclude_none=True) for site in sites]
    local = local_site()
    for row in rows:
        row["local"] = row["name"] == local
    return rows

