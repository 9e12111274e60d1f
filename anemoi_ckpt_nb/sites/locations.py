"""Where a checkpoint's bytes are: ``locations/<uuid>.json``, one document per checkpoint.

Records are written once and never change, so the places holding a
checkpoint's bytes live in a document of their own, changed by
compare-and-swap like the tags (S3 ``If-Match``; create-only for the first
write; re-read and re-apply on a conflict). Each location says which site
holds the bytes, under which key (and URL or path), their sha256 and size,
when the copy was made and by whom, when it was last verified, and what the
last check found wrong, if anything.

Until a checkpoint has a document, its only location is implicit: the
catalogue's blob (``blobs/sha256/<hash>``) when the file was uploaded. The
first change writes that location into the document, and from then on the
document alone is the truth (so the catalogue's copy can be dropped too).

A document belongs to one registration (``generation`` is the record's
``registered_at``, as for tags): one left over from a cleaned and
re-registered checkpoint is ignored.

After each change the writer publishes an index event with the sites that
hold a copy, so that ``search(site=...)`` needs no extra reads; the
catalogue's own blob is listed there as :data:`CATALOGUE_TOKEN`, so renaming
the catalogue's site changes nothing stored.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from anemoi_ckpt_nb.catalogue.copies import (
    CATALOGUE_TOKEN,
    locations_event,
    sites_of_entry,
    sites_of_state,
)
from anemoi_ckpt_nb.catalogue.copies import parse_state as _parse
from anemoi_ckpt_nb.catalogue.layout import LOCATIONS, locations_key
from anemoi_ckpt_nb.catalogue.schema import (
    Location,
    LocationEvent,
    LocationsState,
    utcnow,
)
from anemoi_ckpt_nb.catalogue.store import catalogue_site_name
from anemoi_ckpt_nb.errors import (
    ConflictError,
    NotRegisteredError,
    ObjectNotFoundError,
    SiteError,
)

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore

MAX_ATTEMPTS = 100

LocationKind = Literal["catalogue-blob", "s3", "filesystem"]

__all__ = ["CATALOGUE_TOKEN", "sites_of_entry", "sites_of_state", "locations_event", "LOCATIONS", "Location", "LocationEvent", "LocationsState", "list_locations", "read_state", "update", "add_location"]


def _generation(record: CheckpointRecord) -> str:
    return record.registered_at.isoformat()


def implicit_state(store: CatalogueStore, record: CheckpointRecord) -> LocationsState:
    """The locations of a checkpoint that has no document: its catalogue blob, if uploaded."""
    state = LocationsState(uuid=record.uuid, generation=_generation(record))
    if record.blob:
        state.locations.append(
            Location(
                site=catalogue_site_name(store),
                kind="catalogue-blob",
                key=record.blob,
                url=f"{store.url.rstrip('/')}/{record.blob}",
                sha256=record.sha256,
                size=record.size,
                added_at=record.registered_at,
                added_by=record.registered_by,
                method="registered",
                # The blob was verified by sha256 before the record was created.
                verified_at=record.registered_at,
            )
        )
    return state



def read_state(store: CatalogueStore, record: CheckpointRecord) -> tuple[LocationsState, str | None]:
    """``(state, etag)`` of a checkpoint's locations; the implicit state and None without a document.

    The catalogue blob's location always carries the catalogue's current site name.
    """
    key = locations_key(record.uuid)
    try:
        data, etag = store.storage.get(key)
    except ObjectNotFoundError:
        return implicit_state(store, record), None
    state = _parse(data, f"{store.url.rstrip('/')}/{key}")
    if state.generation != _generation(record):
        # Left over from an earlier registration of this uuid: not ours.
        fresh = implicit_state(store, record)
        fresh.revision = state.revision
        return fresh, etag
    name = catalogue_site_name(store)
    for location in state.locations:
        if location.kind == "catalogue-blob":
            location.site = name
    return state, etag


def replica_key(record: CheckpointRecord) -> str:
    """Where a site keeps a checkpoint: ``<uuid>/<file name>`` under its prefix."""
    from pathlib import PurePosixPath

    name = PurePosixPath(record.filename).name or "checkpoint"
    if name.startswith("."):  # dotted names are reserved by the folder backend
        name = "_" + name[1:]
    return f"{record.uuid}/{name}"


def layout_key(record: CheckpointRecord, location: Location) -> str:
    """The only key a copy of ``record`` may have: its blob key, or :func:`replica_key` at a site.

    A locations document is untrusted input (anyone who can write to the catalogue can edit
    it): the key it states is used only when it equals the key derived here.
    """
    from anemoi_ckpt_nb.catalogue.layout import blob_key

    return blob_key(record.sha256) if location.kind == "catalogue-blob" else replica_key(record)


def check_location(record: CheckpointRecord, location: Location) -> Location:
    """Return ``location`` if its key is the one the layout derives, else raise.

    Raises:
        SiteError: the key names anything else; the copy is neither read nor deleted.
    """
    expected = layout_key(record, location)
    if location.key != expected:
        raise SiteError(
            f"the copy of {record.uuid} at site {location.site} is recorded under key {location.key!r}, "
            f"not {expected!r} where the layout keeps it: left alone",
            hint=f"someone edited locations/{record.uuid}.json by hand; fix or remove that location",
        )
    return location


def list_locations(store: CatalogueStore, record: CheckpointRecord) -> list[Location]:
    """Every recorded copy of a checkpoint, in the order they were added."""
    return read_state(store, record)[0].locations





def update(
    store: CatalogueStore,
    record: CheckpointRecord,
    change: Callable[[LocationsState], list[LocationEvent] | None],
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> LocationsState:
    """Change a checkpoint's locations by compare-and-swap, retrying on conflicts.

    Args:
        store: The catalogue.
        record: The checkpoint (must still be registered).
        change: Edits the state in place and returns the history events it
            made, or None / an empty list for "nothing to change". It is run
            again on the fresh state after a conflict, so it may raise to refuse.
        max_attempts: Compare-and-swap attempts before giving up.

    Returns:
        The state as written (or as read, when nothing changed).

    Raises:
        NotRegisteredError: the record was removed meanwhile.
        SiteError: the document kept changing for ``max_attempts`` attempts.
    """
    key = locations_key(record.uuid)
    for attempt in range(max_attempts):
        state, etag = read_state(store, record)
        events = change(state)
        if not events:
            return state
        state.history.extend(events)
        state.revision += 1
        try:
            if etag is None:
                store.storage.put(key, _dump(state), if_absent=True)
            else:
                store.storage.replace(key, _dump(state), etag=etag)
        except ConflictError:
            time.sleep(random.uniform(0.002, 0.02) * min(attempt + 1, 10))
            continue
        if store.read_record(record.uuid) is None:
            # Cleaned while we wrote: the document must not outlive its record.
            store.storage.delete(key)
            raise NotRegisteredError(record.uuid, hint="it was removed from the catalogue meanwhile")
        store.publish([locations_event(state)])
        return state
    raise SiteError(f"{store.url}: locations of {record.uuid} kept changing; gave up after {max_attempts} attempts", hint="retry the command")


def _dump(state: LocationsState) -> bytes:
    return state.model_dump_json(indent=2).encode() + b"\n"


def event(action: str, site: str, detail: str | None = None) -> LocationEvent:
    """A history event by the current user, now."""
    from anemoi_ckpt_nb.catalogue.layout import whoami

    return LocationEvent(action=action, site=site, by=whoami(), at=utcnow(), detail=detail)


def add_location(store: CatalogueStore, record: CheckpointRecord, location: Location) -> LocationsState:
    """Record a copy (replacing an earlier record of the same site).

    Raises:
        SiteError: the copy's sha256 or size differ from the record's.
    """
    if location.sha256 != record.sha256 or location.size != record.size:
        raise SiteError(f"{location.url}: sha256/size {location.sha256}/{location.size} differ from the record of {record.uuid}")

    def change(state: LocationsState) -> list[LocationEvent]:
        state.locations = [loc for loc in state.locations if loc.site != location.site]
        state.locations.append(location)
        return [event("add", location.site, f"{location.method or 'added'}: {location.url}")]

    return update(store, record, change)


def delete_state(store: CatalogueStore, uuid: str) -> None:
    """Remove a checkpoint's locations document (when its record is removed)."""
    store.storage.delete(locations_key(uuid))


def now() -> dt.datetime:
    """Now, in UTC (what ``verified_at`` and ``checked_at`` record)."""
    return utcnow()
