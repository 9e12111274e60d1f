"""Site-aware download: take a checkpoint from the best of its copies, fall back on failure.

Order in which the copies (:mod:`.locations`) are tried:

1. copies at this machine's site (``$ANEMOI_CKPT_SITE``, or ``site=``);
2. copies on a file system this machine sees (the site's folder exists here);
3. the catalogue's own blob;
4. copies on other S3 sites, then file-system copies not visible here;

and, within that, copies whose last check found a problem come last, and
otherwise the order they were added. A copy that is unreachable, missing or
does not hash to the record's sha256 is skipped for the next one; missing
and damaged copies are marked in ``locations/<uuid>.json`` so that ``clean``
no longer counts them. Every copy holds the same bytes, so a ``.part`` file
left by a failed attempt is resumed from the next copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from anemoi_ckpt_nb.errors import (
    CkptError,
    IntegrityError,
    NoReachableCopyError,
    ObjectNotFoundError,
    SymlinkRefusedError,
)
from anemoi_ckpt_nb.sites import locations as _loc
from anemoi_ckpt_nb.sites.registry import (
    CatalogueSite,
    get_site,
    local_site,
    open_site_storage,
)

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore
    from anemoi_ckpt_nb.storage.base import Storage


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch` did."""

    #: The verified file.
    path: Path
    #: The site whose copy was used.
    site: str
    #: That copy.
    location: _loc.Location
    #: ``(site, what went wrong)`` for each copy tried before, in order.
    attempts: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        """One line for people: which copy was used, and what was skipped."""
        text = f"fetched from site {self.site} ({self.location.url})"
        if self.attempts:
            text += "; skipped " + "; ".join(f"{site}: {why}" for site, why in self.attempts)
        return text


def open_location(
    store: CatalogueStore, location: _loc.Location, record: CheckpointRecord | None = None
) -> tuple[Storage, str]:
    """The storage and key of a copy (no request is made).

    Raises:
        UnknownSiteError: the copy's site is no longer described in ``catalogue.json``.
        SiteError: the location's key is not the one the layout derives (:func:`.locations.check_location`).
    """
    if record is not None:
        _loc.check_location(record, location)
    if location.kind == "catalogue-blob":
        return store.storage, location.key
    return open_site_storage(get_site(store, location.site), store), location.key


def visible_here(store: CatalogueStore, location: _loc.Location) -> bool:
    """True for a file-system copy whose folder this machine sees."""
    if location.kind != "filesystem":
        return False
    try:
        site = get_site(store, location.site)
    except CkptError:
        return False
    return not isinstance(site, CatalogueSite) and Path(site.url).is_dir()


def order(store: CatalogueStore, locations: list[_loc.Location], *, site: str | None = None) -> list[_loc.Location]:
    """The copies in the order :func:`fetch` tries them (see the module docstring)."""
    here = site if site is not None else local_site()

    def rank(location: _loc.Location) -> tuple[bool, int]:
        if here and location.site == here:
            group = 0
        elif visible_here(store, location):
            group = 1
        elif location.kind == "catalogue-blob":
            group = 2
        elif location.kind == "s3":
            group = 3
        else:
            group = 4
        return location.problem is not None, group

    return sorted(locations, key=rank)


def describe_error(error: BaseException) -> str:
    """A short reason for an attempt that failed."""
    if isinstance(error, ObjectNotFoundError):
        return "missing"
    if isinstance(error, IntegrityError):
        return "sha256 mismatch"
    if isinstance(error, SymlinkRefusedError):
        return error.cli_text()  # what to do about a planted link matters as much as where it is
    if isinstance(error, CkptError):
        return error.message
    return f"{type(error).__name__}: {error}"


def mark(store: CatalogueStore, record: CheckpointRecord, location: _loc.Location, problem: str | None) -> None:
    """Record the outcome of using a copy: a problem, or (None) that its bytes verified now.

    Best effort: a catalogue we cannot write to (offline, read-only) does not fail the caller.
    """
    now = _loc.now()

    def change(state: _loc.LocationsState) -> list[_loc.LocationEvent]:
        current = state.at(location.site)
        if current is None or current.key != location.key:
            return []
        current.checked_at = now
        if problem is None:
            current.verified_at, current.problem = now, None
            return [_loc.event("verify", location.site, "sha256 verified while downloading")]
        current.problem = problem
        return [_loc.event("problem", location.site, problem)]

    try:
        _loc.update(store, record, change)
    except (CkptError, OSError):
        pass


def fetch(
    store: CatalogueStore,
    record: CheckpointRecord,
    dest: str | os.PathLike,
    *,
    progress: Callable[[int], None] | None = None,
    site: str | None = None,
) -> FetchResult:
    """Download a checkpoint from the first of its copies that works, verified by sha256.

    Args:
        store: The catalogue.
        record: The checkpoint.
        dest: A file path, or a folder to put ``record.filename`` in: an existing one, or
            one ending with ``/`` (created).
            Written through ``<dest>.part`` (resumed if an earlier attempt was
            interrupted) and renamed into place once verified.
        progress: Called with byte counts.
        site: This machine's site (default ``$ANEMOI_CKPT_SITE``): its copies are tried first.

    Returns:
        The path, the site used and the attempts skipped before it.

    Raises:
        NoReachableCopyError: every copy failed (or there is none); names each one and why.
    """
    from anemoi_ckpt_nb.storage.disk import file_in

    dest = file_in(dest, record.filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts: list[tuple[str, str]] = []
    for location in order(store, _loc.list_locations(store, record), site=site):
        try:
            storage, key = open_location(store, location, record)
            path = storage.download_file(key, dest, sha256=record.sha256, progress=progress)
        except (CkptError, OSError) as error:
            attempts.append((location.site, describe_error(error)))
            if isinstance(error, ObjectNotFoundError):
                mark(store, record, location, "missing")
            elif isinstance(error, IntegrityError):
                mark(store, record, location, f"sha256 mismatch: {error.message}")
            continue
        if location.problem is not None:
            mark(store, record, location, None)
        return FetchResult(path=Path(path), site=location.site, location=location, attempts=attempts)
    hint = "check the sites with `anemoi-ckpt locations ID --verify`"
    if not attempts and record.blob is None:
        hint = (
            f"it was registered without its file (upload=False); copy it from {record.source.host}:{record.source.path}, "
            f"or replicate it from there with `anemoi-ckpt replicate {record.uuid} --to SITE`"
        )
    raise NoReachableCopyError(record.uuid, attempts, hint=hint)
