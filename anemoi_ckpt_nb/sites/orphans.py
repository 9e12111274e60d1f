"""What killed writers left in a catalogue and at its sites: ``anemoi-ckpt clean --orphans``.

A ``register``, ``replicate`` or ``convert`` killed half-way leaves a temporary file (a folder)
or an unfinished multipart upload (S3) that no record points at. The next run into the same
folder removes the temporaries of its own kind; this sweeps them all, in the catalogue's storage
and at every site of ``catalogue.json``, and the catalogue's aliases no record stands behind
(:mod:`anemoi_ckpt_nb.catalogue.aliases`):

* a temporary file counts when no process holds it: every writer holds an ``flock`` on its
  temporaries for as long as it lives (:mod:`anemoi_ckpt_nb.storage.temporaries`), so a live
  one is never touched, whatever its age;
* a multipart upload counts when no part was added for ``min_age`` seconds (default a day):
  nothing else tells a live upload from a dead one.

The dry run (the default) lists each one with its size and age; ``apply`` removes them, except
one a writer took up since it was listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from anemoi_ckpt_nb.errors import CkptError
from anemoi_ckpt_nb.sites.registry import CatalogueSite, list_sites, open_site_storage

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore
    from anemoi_ckpt_nb.storage.base import Orphan, Storage

#: Seconds a multipart upload must have had no new part to count as left by a killed writer.
DEFAULT_MIN_AGE = 24 * 3600.0


@dataclass
class OrphanReport:
    """What :func:`clean_orphans` found, and did."""

    #: ``(site name, orphan)``: all found (dry run) or removed (applied).
    orphans: list[tuple[str, Orphan]] = field(default_factory=list)
    #: Found, but taken up by a writer (or gone) before it could be removed.
    skipped: list[tuple[str, Orphan]] = field(default_factory=list)
    #: ``(site name, why)``: sites that could not be looked at.
    unreachable: list[tuple[str, str]] = field(default_factory=list)
    applied: bool = False

    @property
    def freed_bytes(self) -> int:
        return sum(orphan.size for _, orphan in self.orphans)


def _storages(store: CatalogueStore) -> list[tuple[str, Storage]]:
    """The catalogue's storage and each site's, once each (a site may be the catalogue's folder)."""
    from anemoi_ckpt_nb.catalogue.store import catalogue_site_name

    name = catalogue_site_name(store)
    found = [(name, open_site_storage(CatalogueSite(name=name, url=store.url), store))]
    for site in list_sites(store):
        if site.kind != "catalogue":
            found.append((site.name, open_site_storage(site, store)))
    seen: set[str] = set()
    unique = []
    for site_name, storage in found:
        if storage.url.rstrip("/") not in seen:
            seen.add(storage.url.rstrip("/"))
            unique.append((site_name, storage))
    return unique


def clean_orphans(store: CatalogueStore, *, min_age: float = DEFAULT_MIN_AGE, dry_run: bool = True) -> OrphanReport:
    """Find (and with ``dry_run=False`` remove) what killed writers left in the catalogue and at its sites.

    Args:
        store: The catalogue.
        min_age: Seconds without a new part before a multipart upload counts (and, on a
            filesystem without ``flock``, without a change before a temporary counts).
        dry_run: Only list (the default).

    Returns:
        The report; a site that cannot be reached is named in ``unreachable``, not raised.
    """
    if min_age < 0:
        raise ValueError(f"min_age must be 0 or more seconds, got {min_age}")
    report = OrphanReport(applied=not dry_run)
    for site_name, storage in _storages(store):
        try:
            found = list(storage.orphans(min_age=min_age))
        except CkptError as error:
            report.unreachable.append((site_name, error.message))
            continue
        except OSError as error:
            report.unreachable.append((site_name, str(error)))
            continue
        for orphan in found:
            if dry_run or storage.remove_orphan(orphan):
                report.orphans.append((site_name, orphan))
            else:
                report.skipped.append((site_name, orphan))
    _sweep_aliases(store, report, min_age=min_age, dry_run=dry_run)
    return report


def _sweep_aliases(store: CatalogueStore, report: OrphanReport, *, min_age: float, dry_run: bool) -> None:
    """The catalogue's aliases that no record stands behind (:mod:`anemoi_ckpt_nb.catalogue.aliases`)."""
    from anemoi_ckpt_nb.catalogue import aliases
    from anemoi_ckpt_nb.catalogue.store import catalogue_site_name
    from anemoi_ckpt_nb.storage.base import Orphan

    name = catalogue_site_name(store)
    try:
        strays = aliases.stray_aliases(store, min_age=min_age)
    except (CkptError, OSError) as error:
        report.unreachable.append((name, f"aliases: {error}"))
        return
    for stray in strays:
        url = f"{store.url.rstrip('/')}/{stray.key}"
        orphan = Orphan(url=url, kind=f"stray alias: {stray.why}", size=stray.size, age=stray.age, handle=stray)
        if dry_run or aliases.remove_stray_alias(store, stray):
            report.orphans.append((name, orphan))
        else:
            report.skipped.append((name, orphan))
