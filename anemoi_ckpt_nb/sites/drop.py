"""Dropping copies: one location of a kept checkpoint, or all of a removed one.

The rule for :func:`drop_location`: a checkpoint that stays registered always
keeps at least one *verified* copy (verified at least once, and no problem
found by the last check). So a copy may only be dropped while another
verified copy remains, and, unless ``check=False``, while one of those is
confirmed present right now (same size, and the sha256 the storage records
for it). The rule is checked again inside the compare-and-swap that removes
the location, so two people dropping the two last copies at once cannot
both succeed. The location is removed from ``locations/<uuid>.json`` first,
then the bytes are deleted: a failure in between leaves unreferenced bytes,
never a location without bytes.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from anemoi_ckpt_nb.errors import CkptError, LastCopyError, SiteError
from anemoi_ckpt_nb.sites import locations as _loc
from anemoi_ckpt_nb.sites.fetch import describe_error, open_location, order
from anemoi_ckpt_nb.sites.transfer import holds, location_url
from anemoi_ckpt_nb.storage import copy as _copy

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore
    from anemoi_ckpt_nb.storage.base import Storage

LOG = logging.getLogger(__name__)


@dataclass
class DropResult:
    """What :func:`drop_location` did (or would do, in a dry run)."""

    uuid: str
    site: str
    location: _loc.Location
    #: The verified copies that remain.
    remaining: list[_loc.Location]
    #: The site whose copy was confirmed present before dropping (None with ``check=False``).
    confirmed_by: str | None
    applied: bool = False
    #: Set when the location was removed but its bytes could not be deleted.
    leftover: str | None = None
    notes: list[str] = field(default_factory=list)


def _others(state: _loc.LocationsState, site: str) -> list[_loc.Location]:
    return [loc for loc in state.locations if loc.site != site and loc.ok]


def _last_copy(record: CheckpointRecord, site: str, why: str) -> LastCopyError:
    return LastCopyError(
        record.uuid,
        site,
        f"refusing to drop the copy of {record.uuid} at site {site}: {why}",
        hint=f"replicate it first (`anemoi-ckpt replicate {record.uuid} --to SITE`) or verify the others "
        f"(`anemoi-ckpt locations {record.uuid} --verify`)",
    )


def drop_location(
    store: CatalogueStore,
    record: CheckpointRecord,
    site: str,
    *,
    dry_run: bool = True,
    check: bool = True,
) -> DropResult:
    """Remove one copy of a checkpoint that stays registered.

    Args:
        store: The catalogue.
        record: The checkpoint.
        site: The site whose copy goes (the catalogue's own site drops its blob).
        dry_run: Only check and report (the default).
        check: Confirm that another verified copy is present right now.

    Returns:
        What was (or would be) done.

    Raises:
        SiteError: the checkpoint has no copy at ``site``.
        LastCopyError: no other verified copy remains, or none could be confirmed.
    """
    state, _ = _loc.read_state(store, record)
    location = state.at(site)
    if location is None:
        held = ", ".join(loc.site for loc in state.locations) or "none"
        raise SiteError(f"{record.uuid} has no copy at site {site!r} (copies at: {held})", hint=f"list them with `anemoi-ckpt locations {record.uuid}`")
    others = _others(state, site)
    if not others:
        raise _last_copy(record, site, "it is the last verified copy")
    confirmed = None
    notes: list[str] = []
    if check:
        for other in order(store, others):
            try:
                storage, key = open_location(store, other, record)
                if holds(storage, key, record):
                    confirmed = other.site
                    break
                notes.append(f"{other.site}: not present with the right size and sha256")
            except (CkptError, OSError) as error:
                notes.append(f"{other.site}: {describe_error(error)}")
        if confirmed is None:
            raise _last_copy(record, site, "no other verified copy could be confirmed now (" + "; ".join(notes) + ")")
    result = DropResult(record.uuid, site, location, others, confirmed, notes=notes)
    if dry_run:
        return result

    def change(fresh: _loc.LocationsState) -> list[_loc.LocationEvent]:
        current = fresh.at(site)
        if current is None:
            return []
        if not _others(fresh, site):  # someone dropped the others meanwhile
            raise _last_copy(record, site, "it became the last verified copy")
        fresh.locations.remove(current)
        return [_loc.event("remove", site, current.url)]

    after = _loc.update(store, record, change)
    result.remaining = _others(after, site)
    result.applied = True
    result.leftover = _delete_bytes(store, record, location)
    return result


def _shared_blob(store: CatalogueStore, record: CheckpointRecord, key: str) -> bool:
    """Whether another checkpoint still uses this catalogue blob (content addressing)."""
    from anemoi_ckpt_nb.sites.registry import catalogue_site_name

    name = catalogue_site_name(store)
    for entry in store.index().entries.values():
        if entry["uuid"] != record.uuid and entry.get("blob") == key and name in _loc.sites_of_entry(entry, name):
            return True
    return False


def _delete_bytes(store: CatalogueStore, record: CheckpointRecord, location: _loc.Location) -> str | None:
    """Delete a dropped copy's bytes; returns a note when they could not be deleted.

    Only the key the layout derives for this checkpoint is ever deleted: a location edited
    to name another key is left alone (docs/threat-model.md).
    """
    try:
        _loc.check_location(record, location)
    except SiteError as error:
        LOG.warning("%s", error)
        return error.message
    if location.kind == "catalogue-blob" and _shared_blob(store, record, location.key):
        return None
    try:
        storage, key = open_location(store, location, record)
        storage.delete(key)
        _remove_empty_folder(storage, key)
    except (CkptError, OSError) as error:
        LOG.warning("could not delete %s: %s", location.url, error)
        return f"{location.url} could not be deleted ({describe_error(error)}); delete it by hand"
    return None


def _remove_empty_folder(storage: Storage, key: str) -> None:
    root = _copy.local_root(storage)
    if root is not None and "/" in key:
        with contextlib.suppress(OSError):
            (Path(root) / key).parent.rmdir()


def planned(store: CatalogueStore, record: CheckpointRecord) -> list[str]:
    """Where :func:`forget` would delete copies of ``record``: the URL of each site copy it may delete."""
    try:
        state, etag = _loc.read_state(store, record)
    except CkptError:
        return []
    if etag is None:
        return []
    where = []
    for location in state.locations:
        if location.kind == "catalogue-blob":
            continue
        try:
            # The URL of the derived key at the site as described now, not the document's own text.
            storage, key = open_location(store, location, record)
            where.append(location_url(storage, key))
        except CkptError as error:
            where.append(f"nothing at site {location.site}: {describe_error(error)}")
    return where


def forget(store: CatalogueStore, record: CheckpointRecord) -> list[str]:
    """Delete every site copy of a checkpoint whose record was removed, and its locations document.

    Called by ``clean`` after it removed the record; the catalogue blob is
    left to ``clean``, which knows which other records share it.

    Returns:
        Notes about copies that could not be deleted (an unreachable site).
    """
    try:
        state, etag = _loc.read_state(store, record)
    except CkptError as error:
        return [f"locations of {record.uuid}: {error}"]
    notes = []
    if etag is not None:
        for location in state.locations:
            if location.kind != "catalogue-blob":
                note = _delete_bytes(store, record, location)
                if note:
                    notes.append(note)
    _loc.delete_state(store, record.uuid)
    return notes
