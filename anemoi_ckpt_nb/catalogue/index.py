"""The compacted index under ``index/``: list and search 100,000 records in one read.

Why: ``records/`` holds one object per checkpoint. Reading them all costs one
request each (minutes on S3 for a large catalogue). The index keeps a small
entry per record (:class:`~anemoi_ckpt_nb.catalogue.schema.IndexEntry`: names,
kind, run, parents, step, size, tags) in a few objects instead.

Layout::

    index/snapshot.json.gz          every entry as of the last compaction (gzip JSON)
    index/deltas/<ns>-<rand>.json   one small create-only object per change

Writers never rewrite the snapshot to record a change. After a record is
created (or its tags are swapped, or it is cleaned) the writer adds one delta
holding *state*, not an operation:

* ``put``: the whole entry of a new record;
* ``tags``: the record's full tag list with the tag state's ``revision``;
* ``delete``: the uuid and generation (``registered_at``) of a removed record.

Applying a delta is therefore idempotent and order-insensitive: an entry keeps
the tags of the highest revision seen, a put never revives a deleted
generation (tombstones are kept), and tags that arrive before their record's
put wait in ``pending_tags``. A reader lists ``index/deltas/`` first, then
reads the snapshot, then applies every listed delta. If a listed delta has
vanished, a compaction merged and removed it after the listing, so the
snapshot just read may be older than that merge: the reader starts again.

Compaction merges the deltas into a new snapshot. Any writer runs it after
its own delta when ``COMPACT_EVERY`` or more deltas are waiting: list the
deltas, read the snapshot and its etag, apply, then write the new snapshot by
compare-and-swap (create-only when there was none). Only the winner of the
swap deletes the deltas it listed; a loser does nothing, as someone else has
just compacted. A delta written after the listing is untouched and merged
next time, so no change is lost however many writers race. Compaction
failures never fail the write that triggered them.

The truth is ``records/`` and ``tags/``: a writer that dies between creating
a record and writing its delta leaves the record out of the index until the
next :func:`rebuild` (``anemoi-ckpt reindex``, ``Catalogue.rebuild_index()``),
or until the same file is registered again, which re-publishes the entry.
:func:`check` compares the index with a listing of ``records/`` (``anemoi-ckpt
reindex --check``); a rebuild keeps the index's tombstones, so a deletion is
never undone by a late ``put``. Lookups by exact uuid or
uuid prefix read ``records/`` directly and never depend on the index.

Costs: a read is one LIST, one GET of the snapshot (about 4 MB gzipped for
100,000 entries) and one GET per waiting delta (fewer than ``COMPACT_EVERY``);
a ``Catalogue`` keeps the index in memory and only re-reads the snapshot when
its etag changed. A write is one PUT plus one LIST, and every
``COMPACT_EVERY`` writes one snapshot rewrite.

The snapshot is parsed as plain dicts (``pydantic_core.from_json``) rather than
validated model by model, which is several times faster at 100,000 entries;
it is a cache that :func:`rebuild` can always recreate from the records.
"""

from __future__ import annotations

import gc
import gzip
import logging
import time
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pydantic_core

from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.events import Entry, Event
from anemoi_ckpt_nb.catalogue.schema import IndexDelta, utcnow
from anemoi_ckpt_nb.errors import (
    CatalogueError,
    CkptError,
    ConflictError,
    ObjectNotFoundError,
    SchemaError,
)
from anemoi_ckpt_nb.storage.base import Storage

LOG = logging.getLogger(__name__)


#: Waiting deltas that make a writer compact.
COMPACT_EVERY = 64


#: Snapshot layout version this module reads and writes.
SNAPSHOT_VERSION = 1
#: Largest inflated snapshot read (about 800,000 entries): a few MB of gzip can inflate to
#: gigabytes, and anyone who can write to the catalogue can write the snapshot.
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024


_READ_ATTEMPTS = 8


_FETCH_THREADS = 8


def inflate(data: bytes, limit: int) -> bytes:
    """Gunzip ``data``, refusing to inflate past ``limit`` bytes.

    Raises:
        SchemaError: the document inflates past ``limit``.
        zlib.error, EOFError: it is not whole gzip.
    """
    inflater = zlib.decompressobj(wbits=31)  # gzip header and trailer
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise SchemaError(
            f"{layout.SNAPSHOT}: inflates to more than {limit:,} bytes, refused",
            hint="rebuild the index from the records with `anemoi-ckpt reindex`",
        )
    if not inflater.eof:
        raise EOFError("the gzip stream is truncated")
    return out


class Index:
    """The merged view of the snapshot and the deltas: ``entries`` by uuid."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.pending: dict[str, Event] = {}
        self.deleted: set[tuple[str, str]] = set()
        #: Etag of the snapshot this view started from (None: there was none).
        self.snapshot_etag: str | None = None
        #: Delta keys already applied on top of that snapshot.
        self.applied: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    # --- applying changes -------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Apply one event; idempotent and independent of order (see the module docstring)."""
        op = event["op"]
        if op == "put":
            self._put(dict(event["entry"]))
        elif op == "tags":
            self._tags(event)
        elif op == "delete":
            self._delete(event["uuid"], event["generation"])
        elif op == "locations":
            self._locations(event)
        else:  # a newer writer's event: keep going, the records stay the truth
            LOG.warning("index: ignoring unknown event %r", op)

    def _put(self, entry: Entry) -> None:
        uuid, generation = entry["uuid"], entry["registered_at"]
        if (uuid, generation) in self.deleted:
            return
        current = self.entries.get(uuid)
        if current is not None:
            if current["registered_at"] > generation:
                return  # a stale put of an older registration
            if current["registered_at"] == generation:
                # Tags and sites may have changed after this put was made: keep the newest.
                for field in ("tags", "sites"):
                    revision = f"{field}_revision"
                    if current.get(revision, 0) > entry.get(revision, 0):
                        entry[field], entry[revision] = current[field], current[revision]
        self.entries[uuid] = entry
        waiting = self.pending.get(uuid)
        if waiting is not None and waiting["generation"] == generation:
            del self.pending[uuid]
            self._tags(waiting)

    def _tags(self, event: Event) -> None:
        uuid, generation = event["uuid"], event["generation"]
        if (uuid, generation) in self.deleted:
            return
        entry = self.entries.get(uuid)
        if entry is not None and entry["registered_at"] == generation:
            if event["revision"] > entry.get("tags_revision", 0):
                entry["tags"] = list(event["tags"])
                entry["tags_revision"] = event["revision"]
            return
        waiting = self.pending.get(uuid)
        if waiting is None or (waiting["generation"], waiting["revision"]) < (generation, event["revision"]):
            self.pending[uuid] = dict(event)

    def _locations(self, event: Event) -> None:
        # Sites holding copies (anemoi_ckpt_nb.catalogue.copies). An event for an entry not
        # in the index yet is dropped: locations/<uuid>.json stays the truth, and
        # rebuild() reads it.
        entry = self.entries.get(event["uuid"])
        if entry is not None and entry["registered_at"] == event["generation"]:
            if event["revision"] > entry.get("sites_revision", 0):
                entry["sites"] = list(event["sites"])
                entry["sites_revision"] = event["revision"]

    def _delete(self, uuid: str, generation: str) -> None:
        self.deleted.add((uuid, generation))
        entry = self.entries.get(uuid)
        if entry is not None and entry["registered_at"] == generation:
            del self.entries[uuid]
        waiting = self.pending.get(uuid)
        if waiting is not None and waiting["generation"] == generation:
            del self.pending[uuid]

    # --- snapshot (de)serialisation ------------------------------------------------

    @classmethod
    def from_snapshot(cls, data: bytes, *, etag: str | None) -> Index:
        # Parsing allocates hundreds of thousands of small objects, none cyclic:
        # the cyclic collector would only rescan them again and again.
        enabled = gc.isenabled()
        gc.disable()
        try:
            document = pydantic_core.from_json(inflate(data, MAX_SNAPSHOT_BYTES), cache_strings="keys")
        except (zlib.error, EOFError, ValueError) as error:
            if isinstance(error, SchemaError):
                raise
            raise SchemaError(
                f"{layout.SNAPSHOT}: damaged ({type(error).__name__}: {error})",
                hint="rebuild the index from the records with `anemoi-ckpt reindex`",
            ).with_python_hint("rebuild the index from the records with Catalogue(url).rebuild_index()") from None
        finally:
            if enabled:
                gc.enable()
        version = document.get("schema_version")
        if version != SNAPSHOT_VERSION:
            raise SchemaError(
                f"{layout.SNAPSHOT}: index snapshot schema_version {version!r}, this release reads {SNAPSHOT_VERSION}",
                hint="upgrade anemoi-ckpt-nb, or rebuild the index with `anemoi-ckpt reindex`",
            ).with_python_hint("upgrade anemoi-ckpt-nb, or rebuild the index with Catalogue(url).rebuild_index()")
        index = cls()
        index.entries = {entry["uuid"]: entry for entry in document.get("entries", [])}
        index.pending = {event["uuid"]: event for event in document.get("pending_tags", [])}
        index.deleted = {(uuid, generation) for uuid, generation in document.get("deleted", [])}
        index.snapshot_etag = etag
        return index

    def to_snapshot(self) -> bytes:
        document = {
            "schema_version": SNAPSHOT_VERSION,
            "compacted_at": utcnow().isoformat(),
            "entries": list(self.entries.values()),
            "pending_tags": list(self.pending.values()),
            "deleted": sorted(self.deleted),
        }
        return gzip.compress(pydantic_core.to_json(document), compresslevel=1)


def _fetch_deltas(storage: Storage, keys: list[str]) -> list[list[Event]]:
    """The events of each delta, in the order of ``keys``; raises ObjectNotFoundError."""

    def fetch(key: str) -> list[Event]:
        data, _ = storage.get(key)
        return IndexDelta.model_validate_json(data).model_dump(mode="json")["events"]

    if len(keys) <= 2:
        return [fetch(key) for key in keys]
    with ThreadPoolExecutor(max_workers=min(_FETCH_THREADS, len(keys))) as pool:
        return list(pool.map(fetch, keys))


def _json_keys(storage: Storage, prefix: str) -> list[str]:
    return [info.key for info in storage.list(prefix) if info.key.endswith(".json")]


def _delta_keys(storage: Storage) -> list[str]:
    return _json_keys(storage, layout.DELTAS)


def _read_snapshot(storage: Storage, cached: Index | None) -> Index:
    """The snapshot as an index: ``cached`` itself while its snapshot is current
    (one HEAD), else one GET; an empty index when there is no snapshot yet."""
    if cached is not None:
        try:
            etag: str | None = storage.stat(layout.SNAPSHOT).etag
        except ObjectNotFoundError:
            etag = None
        if cached.snapshot_etag == etag:
            return cached
    try:
        data, etag = storage.get(layout.SNAPSHOT)
    except ObjectNotFoundError:
        return Index()
    return Index.from_snapshot(data, etag=etag)


def load(storage: Storage, cached: Index | None = None) -> Index:
    """The current index, reusing ``cached`` when the snapshot has not changed.

    Args:
        storage: The catalogue's storage.
        cached: An index returned by an earlier call; it is updated in place
            and returned when its snapshot is still current.

    Returns:
        The merged index.

    Raises:
        CatalogueError: compactions kept racing this read (retried several times first).
        SchemaError: the snapshot was written by a newer release.
    """
    for attempt in range(_READ_ATTEMPTS):
        keys = _delta_keys(storage)
        base = _read_snapshot(storage, cached)
        fresh = [key for key in keys if key not in base.applied]
        try:
            deltas = _fetch_deltas(storage, fresh)
        except ObjectNotFoundError:
            # Merged into a snapshot newer than the one we read: read again.
            cached = base if base is cached else None
            time.sleep(0.01 * (attempt + 1))
            continue
        for events in deltas:
            for event in events:
                base.apply(event)
        base.applied.update(fresh)
        return base
    raise CatalogueError(
        f"{storage.url}: the index kept changing while it was read ({_READ_ATTEMPTS} attempts)",
        hint="retry; if it persists, check that writers are not compacting in a loop",
    )


def publish(storage: Storage, events: Iterable[Event], *, compact_every: int | None = None) -> str:
    """Record changes as one create-only delta, then compact if enough deltas wait.

    Args:
        storage: The catalogue's storage.
        events: ``put`` / ``tags`` / ``delete`` events (see :func:`put_event` and friends).
        compact_every: Compact when at least this many deltas are waiting
            (default :data:`COMPACT_EVERY`).

    Returns:
        The key of the delta written.
    """
    document = IndexDelta.model_validate({"events": list(events)})
    data = document.model_dump_json().encode()
    while True:
        key = layout.delta_key(time.time_ns())
        try:
            storage.put(key, data, if_absent=True)
            break
        except ConflictError:  # the same nanosecond and random suffix: astronomically rare
            continue
    try:
        compact(storage, min_deltas=compact_every or COMPACT_EVERY)
    except (CkptError, OSError) as error:  # the change is recorded; merging can wait
        LOG.warning("index compaction skipped: %s", error)
    return key


def compact(storage: Storage, *, min_deltas: int = 1) -> bool:
    """Merge the waiting deltas into the snapshot by compare-and-swap.

    Args:
        storage: The catalogue's storage.
        min_deltas: Do nothing when fewer deltas are waiting.

    Returns:
        True if this call wrote a new snapshot; False if there was nothing to
        do or another writer compacted first.
    """
    keys = _delta_keys(storage)
    if not keys or len(keys) < min_deltas:
        return False
    index = _read_snapshot(storage, None)
    etag = index.snapshot_etag
    try:
        deltas = _fetch_deltas(storage, keys)
    except ObjectNotFoundError:
        return False  # someone else is compacting these very deltas
    for events in deltas:
        for event in events:
            index.apply(event)
    snapshot = index.to_snapshot()
    try:
        if etag is None:
            storage.put(layout.SNAPSHOT, snapshot, if_absent=True)
        else:
            storage.replace(layout.SNAPSHOT, snapshot, etag=etag)
    except ConflictError:
        return False
    for key in keys:
        storage.delete(key)
    return True


def reindex_hint(url: str) -> str:
    """The command that rebuilds the index of the catalogue at ``url``."""
    return f"rebuild the index from the records with `anemoi-ckpt reindex --catalogue {url}`"
