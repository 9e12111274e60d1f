"""Rebuilding the index from the truth (``records/``, ``tags/``, ``locations/``), and checking it against them.

The index (:mod:`.index`) is only a cache: :func:`rebuild` recreates its snapshot from the stored documents, swapping
it in by compare-and-swap, and :func:`check` says what a stale index misses or keeps too many.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.events import Event, generation_of, put_event
from anemoi_ckpt_nb.catalogue.index import (
    _FETCH_THREADS,
    _READ_ATTEMPTS,
    LOG,
    Index,
    _delta_keys,
    _json_keys,
    load,
)
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, TagState
from anemoi_ckpt_nb.errors import (
    CatalogueError,
    ConflictError,
    ObjectNotFoundError,
    SchemaError,
    StorageError,
)
from anemoi_ckpt_nb.storage.base import Storage

LOG = logging.getLogger(__name__)


def _record_events(storage: Storage, key: str, tag_keys: set[str], location_keys: set[str]) -> list[Event]:
    """The events that index one record: its put (with its tags) and its locations, read from the truth."""
    from anemoi_ckpt_nb.catalogue.copies import locations_event, parse_state
    from anemoi_ckpt_nb.catalogue.documents import read_document

    try:
        record = layout.check_record(
            read_document(CheckpointRecord, "record", storage.get(key)[0], key), layout.uuid_of_key(key), key
        )
    except ObjectNotFoundError:
        return []  # cleaned since the listing
    except SchemaError as error:
        # A record edited by hand is not indexed: the index must not carry keys it refused.
        LOG.warning("index rebuild: skipped %s", error)
        return []
    tags = None
    if (tags_key := layout.tags_key(record.uuid)) in tag_keys:
        try:
            tags = read_document(TagState, "tags", storage.get(tags_key)[0], tags_key)
        except ObjectNotFoundError:
            pass
    events = [put_event(record, tags)]
    if (locations_key := layout.locations_key(record.uuid)) in location_keys:
        try:
            state = parse_state(storage.get(locations_key)[0], locations_key)
        except (ObjectNotFoundError, SchemaError):
            state = None
        if state is not None and state.generation == generation_of(record):
            events.append(locations_event(state))
    return events


def _rebuild_base(storage: Storage) -> tuple[list[str], str | None, set[tuple[str, str]]]:
    """What a rebuild starts from: the delta keys it will replace, the etag of the
    snapshot it will swap, and the tombstones of the current index.

    Read *before* the records, so that a compaction during the scan (which may merge
    a delete the scan missed) makes the final compare-and-swap fail instead of being
    overwritten. Tombstones are kept because a writer whose view predates a deletion
    may still publish a ``put`` of the deleted record (a re-registration repairing
    what it thought was a lost entry); without them that put would revive it.
    """
    try:
        current = load(storage)
    except StorageError:
        raise
    except (SchemaError, ValueError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        # A snapshot or delta this release cannot read: exactly what a rebuild replaces,
        # at the cost of its tombstones (put events older than the rebuild may revive).
        LOG.warning("index rebuild: the current index is unreadable (%s); starting without its tombstones", error)
        keys = _delta_keys(storage)
        try:
            etag: str | None = storage.stat(layout.SNAPSHOT).etag
        except ObjectNotFoundError:
            etag = None
        return keys, etag, set()
    return sorted(current.applied), current.snapshot_etag, set(current.deleted)


def rebuild(storage: Storage) -> Index:
    """Recreate the snapshot from ``records/``, ``tags/`` and ``locations/`` (the truth).

    Use after a crash between a record and its delta (``anemoi-ckpt reindex``), or
    to drop an index written by a newer release. Deltas present at the start are
    merged and removed; deltas written during the rebuild are kept and applied on
    top, so a record deleted meanwhile stays deleted. Tombstones of the current
    index carry over, except for a generation whose record exists (the records win).

    Returns:
        The rebuilt index.

    Raises:
        CatalogueError: other writers compacted the index during every attempt.
    """
    for _ in range(_READ_ATTEMPTS):
        keys, etag, tombstones = _rebuild_base(storage)
        record_keys = _json_keys(storage, layout.RECORDS)
        tag_keys = set(_json_keys(storage, layout.TAGS))
        location_keys = set(_json_keys(storage, layout.LOCATIONS))
        with ThreadPoolExecutor(max_workers=_FETCH_THREADS) as pool:
            found = list(pool.map(lambda key: _record_events(storage, key, tag_keys, location_keys), record_keys))
        live = {(events[0]["entry"]["uuid"], events[0]["entry"]["registered_at"]) for events in found if events}
        index = Index()
        index.deleted = tombstones - live
        for events in found:
            for event in events:
                index.apply(event)
        try:
            if etag is None:
                storage.put(layout.SNAPSHOT, index.to_snapshot(), if_absent=True)
            else:
                storage.replace(layout.SNAPSHOT, index.to_snapshot(), etag=etag)
        except ConflictError:
            continue  # compacted or rebuilt by someone else meanwhile: scan again
        for key in keys:
            storage.delete(key)
        return load(storage)
    raise CatalogueError(
        f"{storage.url}: the index kept changing during the rebuild ({_READ_ATTEMPTS} attempts)",
        hint=f"retry `anemoi-ckpt reindex --catalogue {storage.url}` when fewer writers are busy",
    )


@dataclass(frozen=True)
class IndexCheck:
    """How the index differs from ``records/`` (see :func:`check`)."""

    #: Records that have no index entry (a writer died before its delta).
    missing: list[str] = field(default_factory=list)
    #: Index entries whose record is gone (a clean died before its delta).
    stale: list[str] = field(default_factory=list)
    #: Records listed.
    records: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.stale


def check(storage: Storage, index: Index | None = None) -> IndexCheck:
    """Compare the index with the uuids under ``records/`` (one LIST, no GET per record).

    Args:
        storage: The catalogue's storage.
        index: The index to check (default: read it now).

    Returns:
        The uuids missing from the index and the index entries without a record.
    """
    index = index if index is not None else load(storage)
    uuids = {layout.uuid_of_key(key) for key in _json_keys(storage, layout.RECORDS)}
    return IndexCheck(
        missing=sorted(uuids.difference(index.entries)),
        stale=sorted(set(index.entries).difference(uuids)),
        records=len(uuids),
    )
