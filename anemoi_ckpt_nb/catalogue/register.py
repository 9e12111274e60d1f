"""Registration: files -> blobs -> records, in lineage order, refusing orphans.

Order of writes for one file, so that nothing half-done is ever visible:

1. hash the file, read its metadata (:func:`.records.inspect_file`);
2. upload the bytes to ``blobs/sha256/<hash>`` (skipped when the backend
   knows the object there hashes to that sha256: content addressing stores a
   file once however often, and from wherever, it is registered; an object of
   the right size but unknown or other hash is written again); the backend
   verifies the sha256;
3. store the metadata JSON as its own blob;
4. create ``records/<uuid>.json`` create-only: only now is the checkpoint
   registered. A failure before this step leaves no record (at worst an
   unreferenced blob);
5. publish the index entry, then apply the requested tags.

Lineage comes from the metadata (``parent_uuid``: ``resumed-from`` when the
parent's run id is the same, else ``forked-from``; ``converted_from`` or an
inference file's shared uuid: ``converted-from``), from the run manifests of
forks (a weights-only fork records no ``parent_uuid``; the manifest ``fork``
or ``plan`` stored names its new run id and its parent) and from explicit
``parents``. A parent is found by any uuid its file holds (a current training
file holds two) and links name the uuid its record is filed under. Every parent must be registered already or be part of the same
call, which registers parents first; otherwise :class:`MissingParentError`
names the missing uuid and the command that registers it.
"""

from __future__ import annotations

import heapq
import itertools
import json
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from anemoi_ckpt_nb.catalogue import events as _events
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.records import (
    FileFacts,
    inspect_file,
    make_record,
    metadata_document,
)
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, ParentLink, SourceLocation
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.compat.environment import EnvironmentSnapshot, capture_environment
from anemoi_ckpt_nb.errors import (
    CatalogueError,
    ConflictError,
    MissingParentError,
    ObjectNotFoundError,
    UuidClashError,
)

#: File names a run folder's checkpoints have.
CHECKPOINT_PATTERNS = ("*.ckpt", "*.safetensors", "*.pt", "*.pth")

ParentSpec = ParentLink | tuple[str, str] | dict


@dataclass
class Registration:
    """The outcome for one file."""

    path: Path
    record: CheckpointRecord
    #: False when the same file (uuid and sha256) was registered before: nothing was written.
    created: bool


def _as_links(parents: Iterable[ParentSpec] | None) -> list[ParentLink]:
    links = []
    for parent in parents or ():
        if isinstance(parent, ParentLink):
            links.append(parent)
        elif isinstance(parent, tuple):
            links.append(ParentLink(uuid=parent[0], relation=parent[1]))
        elif isinstance(parent, dict):
            links.append(ParentLink.model_validate(parent))
        else:
            raise TypeError(f"a parent is a ParentLink, (uuid, relation) or dict, not {parent!r}")
    return links


def find_checkpoints(folders: Iterable[str | Path]) -> list[Path]:
    """Checkpoint files under each folder (recursively), sorted, without duplicates.

    Raises:
        CatalogueError: a folder does not exist or holds no checkpoint.
    """
    found: dict[Path, None] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise CatalogueError(f"{folder}: not a folder", hint="pass the run folder that holds the .ckpt files")
        files = sorted({p for pattern in CHECKPOINT_PATTERNS for p in folder.rglob(pattern) if p.is_file()})
        if not files:
            raise CatalogueError(
                f"{folder}: no checkpoint files ({', '.join(CHECKPOINT_PATTERNS)}) in this folder",
                hint="pass the folder anemoi-training wrote its checkpoints to",
            )
        for path in files:
            found.setdefault(path.resolve(), None)
    return list(found)


# --- lineage of a batch --------------------------------------------------------------------


def _metadata_parent(facts: FileFacts) -> str | None:
    """The uuid the file's own metadata names as its origin."""
    if facts.derived:
        return facts.metadata_uuid
    if facts.converted_from:
        return facts.converted_from
    return facts.parent_uuid


def _order(batch: list[FileFacts]) -> list[FileFacts]:
    """Parents before children (Kahn); otherwise training files first, then by step and path."""
    by_uuid = {f.uuid: f for f in batch}
    children: dict[str, list[FileFacts]] = {}
    waiting: dict[str, int] = {}
    for facts in batch:
        parents = {link.uuid for link in facts.links if link.uuid in by_uuid}
        parents.discard(facts.uuid)
        waiting[facts.uuid] = len(parents)
        for parent in parents:
            children.setdefault(parent, []).append(facts)

    def key(f: FileFacts) -> tuple:
        return (f.kind != "training", f.global_step if f.global_step is not None else -1, str(f.path))

    # A heap of (key, arrival, file): the smallest key first and, among equal keys,
    # the one that became ready first (what a stable sort of a ready list gives),
    # in O(n log n) for a batch of thousands of files.
    ready: list[tuple[tuple, int, FileFacts]] = []
    arrivals = itertools.count()
    for facts in batch:
        if waiting[facts.uuid] == 0:
            heapq.heappush(ready, (key(facts), next(arrivals), facts))
    ordered: list[FileFacts] = []
    while ready:
        _, _, facts = heapq.heappop(ready)
        ordered.append(facts)
        for child in children.get(facts.uuid, []):
            waiting[child.uuid] -= 1
            if waiting[child.uuid] == 0:
                heapq.heappush(ready, (key(child), next(arrivals), child))
    if len(ordered) != len(batch):
        done = {id(f) for f in ordered}
        stuck = [f.path.name for f in batch if id(f) not in done]
        raise CatalogueError(f"the lineage of {', '.join(stuck)} is a cycle", hint="check the files' parent_uuid")
    return ordered


class _Lineage:
    """What the parents of one registration call are looked up in: the batch, then the catalogue.

    A parent is found by any uuid its file holds (a current training file has two, see
    :attr:`CheckpointRecord.other_uuids`), and links name the uuid its record is filed under.
    """

    def __init__(self, store: CatalogueStore, batch: list[FileFacts]) -> None:
        self.store = store
        # Every uuid of the files that own theirs -> the file (an inference file sharing its
        # training file's uuid does not own it).
        self.batch: dict[str, FileFacts] = {}
        for facts in batch:
            if not facts.derived:
                for uuid in (facts.uuid, *facts.other_uuids):
                    self.batch.setdefault(uuid, facts)
        self.known: dict[str, CheckpointRecord | None] = {}
        self._forks: dict[str, str] | None = None

    def lookup(self, uuid: str) -> CheckpointRecord | FileFacts | None:
        if uuid in self.batch:
            return self.batch[uuid]
        if uuid not in self.known:
            self.known[uuid] = self.store.find_record(uuid)
        return self.known[uuid]

    def fork_parent(self, run_id: str) -> str | None:
        """The checkpoint a run was forked from, from the run manifests ``fork``/``plan`` stored.

        A fork that loads only the weights (``training.load_weights_only=true``) records no
        ``parent_uuid``: its run id in a manifest is what links it to its parent.
        """
        from anemoi_ckpt_nb.catalogue.forks import fork_parents

        if self._forks is None:  # once per call; across calls, forks caches what each manifest says
            self._forks = fork_parents(self.store)
        return self._forks.get(run_id)


def _links_for(
    facts: FileFacts,
    lineage: _Lineage,
    *,
    allow_missing_parents: bool,
) -> list[ParentLink]:
    """The parent links of one file; raise MissingParentError for an unregistered parent."""
    links: dict[str, ParentLink] = {}
    origin = _metadata_parent(facts)
    if origin is not None and (facts.derived or origin not in (facts.uuid, *facts.other_uuids)):
        parent = lineage.lookup(origin)
        if facts.derived or facts.converted_from:
            relation = "converted-from"
        elif parent is None:
            relation = "forked-from" if facts.fork_run_id else "resumed-from"
        else:
            same_run = parent.run_id is not None and parent.run_id == facts.run_id
            relation = "resumed-from" if same_run else "forked-from"
        uuid = parent.uuid if parent is not None else origin
        links[uuid] = ParentLink(uuid=uuid, relation=relation)
    elif origin is None and facts.kind == "training" and facts.run_id:
        forked = lineage.fork_parent(facts.run_id)
        if forked is not None:
            parent = lineage.lookup(forked)
            uuid = parent.uuid if parent is not None else forked
            links[uuid] = ParentLink(uuid=uuid, relation="forked-from")
    for link in facts.extra_parents:  # explicit arguments win for the same uuid
        parent = lineage.lookup(link.uuid)
        if parent is not None and parent.uuid != link.uuid:
            link = ParentLink(uuid=parent.uuid, relation=link.relation)
        links[link.uuid] = link
    missing = [uuid for uuid in links if lineage.lookup(uuid) is None]
    if missing and not allow_missing_parents:
        who = facts.uuid if not facts.derived else f"the inference file {facts.path.name}"
        raise MissingParentError(who, missing, hint=_register_hint(facts, missing))
    return list(links.values())


def _quick_uuid(path: Path) -> str | None:
    """The metadata uuid embedded in a zip checkpoint, without unpickling anything.

    For a current training file that is its second uuid, not the one children name.
    """
    from anemoi_ckpt_nb.read.embedded import find_metadata_entry

    try:
        with zipfile.ZipFile(path) as zf:
            found = find_metadata_entry(zf.namelist())
            if found is None:
                return None
            return json.loads(zf.read(found[0])).get("uuid")
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def _register_hint(facts: FileFacts, missing: list[str]) -> str:
    """The command that registers the missing parent, naming its file when we can find it.

    A resume's parent sits in the same run folder, a fork's in a sibling run
    folder (``checkpoints/<run_id>/``), so those two levels are searched.
    """
    folder = facts.path.resolve().parent
    candidates = sorted(p for pattern in CHECKPOINT_PATTERNS for p in folder.glob(pattern))
    candidates += sorted(
        p for pattern in CHECKPOINT_PATTERNS for p in folder.parent.glob(f"*/{pattern}") if p.parent != folder
    )
    found = _file_holding(set(missing), [p for p in candidates[:500] if p.resolve() != facts.path.resolve()])
    if found is not None:
        return (
            f"register the parent first: `anemoi-ckpt register {found}`, "
            f"or both at once: `anemoi-ckpt register {found} {facts.path}`"
        )
    return f"register the parent first: `anemoi-ckpt register PATH_OF_{missing[0]}`"


def _file_holding(wanted: set[str], candidates: list[Path]) -> Path | None:
    """The training file that holds one of ``wanted``, else any file that does.

    A child names its parent's pickled uuid, which the inference file saved beside the
    parent (``inference-<name>``) embeds too: the training file ``<name>`` is the parent.
    """
    fallback = None
    for path in candidates:
        if _quick_uuid(path) not in wanted:
            continue
        if not path.name.startswith("inference-"):
            return path
        training = path.with_name(path.name.removeprefix("inference-"))
        if training.is_file() and wanted & set(_file_uuids(training)):
            return training
        fallback = fallback or path
    for path in candidates:  # a training file found by the uuid in its pickle alone
        if fallback is None and not path.name.startswith("inference-") and wanted & set(_file_uuids(path)):
            return path
    return fallback


def _file_uuids(path: Path) -> list[str]:
    """Every uuid the file holds (read safely); none if it cannot be read."""
    from anemoi_ckpt_nb.errors import CheckpointReadError
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    try:
        with open_checkpoint(path) as ck:
            return list(ck.uuids)
    except CheckpointReadError:
        return []


# --- writing ---------------------------------------------------------------------------------


def _upload_blob(store: CatalogueStore, facts: FileFacts, progress: Callable[[int], None] | None) -> str:
    """Store the file under its content-addressed key; return the key.

    An object already under the key is not trusted for having the right size:
    a crashed or foreign writer, or bit rot, can leave other bytes of that
    size. ``upload_file`` itself skips the transfer only when the backend
    knows the stored object hashes to ``facts.sha256`` (memory: its content;
    local: the sha256 cached when it was written; S3: the sha256 our uploads
    record in the object's metadata) and otherwise writes the file again,
    verified, so what the record will name is these very bytes.
    """
    key = layout.blob_key(facts.sha256)
    store.storage.upload_file(key, facts.path, sha256=facts.sha256, progress=progress)
    return key


def _metadata_blob(facts: FileFacts) -> tuple[str, bytes]:
    """Key and bytes of the file's metadata blob."""
    import hashlib

    document = metadata_document(facts.metadata)
    return layout.blob_key(hashlib.sha256(document).hexdigest()), document


def _store_metadata(store: CatalogueStore, facts: FileFacts) -> str:
    key, document = _metadata_blob(facts)
    try:
        store.storage.put(key, document, if_absent=True)
    except ConflictError:
        pass  # content-addressed: what is there is these very bytes
    return key


def _existing(store: CatalogueStore, facts: FileFacts) -> CheckpointRecord | None:
    """The record already registered for this file, or None; raise if the uuid names other bytes.

    Earlier releases filed a current training file under its embedded uuid: a record of
    these very bytes under one of the file's other uuids is this file's record.
    """
    record = store.read_record(facts.uuid)
    if record is None:
        for other in facts.other_uuids:
            earlier = store.read_record(other)
            if earlier is not None and earlier.sha256 == facts.sha256:
                return earlier
        return None
    if record.sha256 != facts.sha256:
        raise UuidClashError(
            facts.uuid,
            f"{facts.path}: uuid {facts.uuid} is already registered for another file "
            f"({record.filename}, sha256 {record.sha256[:12]}..., this file {facts.sha256[:12]}...)",
            hint=f"a checkpoint uuid names one file; compare with `anemoi-ckpt show {facts.uuid}`. "
            "A modified copy needs a new uuid (save it again with anemoi-training or convert it)",
        )
    return record


def _restore_blobs(
    store: CatalogueStore, record: CheckpointRecord, facts: FileFacts, *, upload: bool, progress: Callable[[int], None] | None
) -> None:
    """Put back the blobs of an existing record that were removed or damaged outside anemoi-ckpt.

    Registering the file again is the advertised repair for a missing file or metadata blob,
    and for a damaged metadata blob (its bytes no longer hash to its content-addressed key).
    """
    import hashlib

    if upload and record.blob is not None and not store.storage.exists(record.blob):
        _upload_blob(store, facts, progress)
    if record.metadata_blob is None:
        return
    key, document = _metadata_blob(facts)
    # Only the very bytes the record names: another reader release may render them otherwise.
    if key != record.metadata_blob:
        return
    try:
        stored, _ = store.storage.get(key)
    except ObjectNotFoundError:
        _store_metadata(store, facts)
        return
    if layout.blob_key(hashlib.sha256(stored).hexdigest()) != key:
        store.storage.put(key, document)


def _register_one(
    store: CatalogueStore,
    facts: FileFacts,
    links: list[ParentLink],
    *,
    existing: CheckpointRecord | None,
    name: str | None,
    tags: Sequence[str],
    upload: bool,
    progress: Callable[[int], None] | None,
    environment: EnvironmentSnapshot | None = None,
) -> Registration:
    """Register one file whose lineage is settled; ``existing`` is its record read by :func:`_existing`."""
    from anemoi_ckpt_nb.catalogue.tags import change_tags

    if existing is None:
        blob = _upload_blob(store, facts, progress) if upload else None
        metadata_blob = _store_metadata(store, facts)
        # Aliases before the record: an alias of a record not (yet) created finds nothing.
        for other in facts.other_uuids:
            store.create_alias(other, facts.uuid)
        record = make_record(
            facts, parents=links, name=name, blob=blob, metadata_blob=metadata_blob, registered_with=environment
        )
        try:
            store.create_record(record)
        except ConflictError:  # registered concurrently by someone else: theirs stands
            existing = _existing(store, facts)
            if existing is None:  # pragma: no cover - the record vanished between two reads
                raise
        else:
            store.publish([_events.put_event(record)])
    if existing is not None:
        record = existing
        # A record filed by an older release under another of the file's uuids: link the rest to it.
        for uuid in (facts.uuid, *facts.other_uuids):
            if uuid != record.uuid:
                store.create_alias(uuid, record.uuid)
        _restore_blobs(store, record, facts, upload=upload, progress=progress)
        # Re-publish the entry if a crashed writer left it out of the index.
        entry = store.index(refresh=False).entries.get(record.uuid)
        if entry is None or entry["registered_at"] != _events.generation_of(record):
            state, _ = store.read_tags(record.uuid)
            store.publish([_events.put_event(record, state)])
    if tags:
        change_tags(store, record.uuid, add=tags)
    return Registration(path=facts.path, record=record, created=existing is None)


def register_paths(
    store: CatalogueStore,
    paths: Sequence[str | Path],
    *,
    name: str | None = None,
    tags: Sequence[str] = (),
    parents: Iterable[ParentSpec] | None = None,
    upload: bool = True,
    allow_missing_parents: bool = False,
    progress: Callable[[int], None] | None = None,
    on_registered: Callable[[Registration], None] | None = None,
    code_checkout: str | Path | None = None,
    environment: EnvironmentSnapshot | None = None,
    sha256: str | None = None,
    source: SourceLocation | None = None,
) -> list[Registration]:
    """Register checkpoint files, parents before children.

    All lineage is checked before anything is written: a missing parent
    refuses the whole call.

    Args:
        store: The catalogue.
        paths: Checkpoint files; any order.
        name: A name for the record (only with a single path).
        tags: Tags to add to every registered file.
        parents: Extra parent links (``ParentLink`` or ``(uuid, relation)``),
            only with a single path; they win over the metadata's for the same uuid.
        upload: Store the file's bytes in the catalogue; with False only the
            record and metadata are stored and the file stays where it is.
        allow_missing_parents: Register even when a parent is not in the
            catalogue (the link is kept, pointing at an unregistered uuid).
        progress: Called with byte counts while hashing and uploading.
        on_registered: Called after each file, e.g. to print a line.
        code_checkout: A git checkout of the training code: its commit and dirty
            state go into each new record's ``registered_with``.
        environment: The registering environment to record, instead of capturing
            it here (``code_checkout`` is then ignored).
        sha256: The file's sha256, only with a single path, when the caller has
            just computed it over these very bytes (``convert`` hashes what it
            writes), so the file is not read a second time. Trusted as given:
            never pass a hash from elsewhere (an upload still verifies it).
        source: Where the file was saved, only with a single path, when it is registered
            from a copy (``anemoi-ckpt sync`` registers a spool's captures): kept in the record.

    Returns:
        One :class:`Registration` per distinct file, in registration order.

    Raises:
        MissingParentError: a parent is neither registered nor in ``paths``.
        UuidClashError: a uuid is registered (or given twice) with other bytes.
        CheckpointReadError: a file is not a readable checkpoint.
        StorageError: an upload failed; no record was created for that file.
        CodeCheckoutError: ``code_checkout`` is not a readable git checkout; nothing was written.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise CatalogueError("nothing to register", hint="pass at least one checkpoint file")
    if len(paths) > 1 and (name is not None or parents or sha256 or source):
        raise CatalogueError(
            "name, parents, sha256 and source apply to a single checkpoint", hint="register the files one by one to name them"
        )
    extra = _as_links(parents)
    from anemoi_ckpt_nb.catalogue.schema import validate_tag

    tags = [validate_tag(t) for t in tags]
    # Captured once per call, before any file is read: a bad checkout refuses the whole call.
    environment = environment or capture_environment(code_path=code_checkout)
    # Lineage first, from the metadata alone: a refusal must not wait for gigabytes to be hashed.
    inspected = [inspect_file(path, hash=False, sha256=sha256) for path in paths]
    lineage = _Lineage(store, inspected)
    for facts in inspected:
        facts.source = source
        facts.extra_parents = list(extra)
        facts.links = _links_for(facts, lineage, allow_missing_parents=allow_missing_parents)
    batch: dict[str, FileFacts] = {}
    for facts in inspected:
        facts.hash(progress=progress)
        other = batch.get(facts.uuid)
        if other is not None:
            if other.sha256 != facts.sha256:
                raise UuidClashError(
                    facts.uuid,
                    f"{other.path} and {facts.path} carry the same uuid {facts.uuid} but differ",
                    hint="register them separately; one of them is a modified copy",
                )
            continue  # the same file twice (e.g. last.ckpt next to its epoch file)
        batch[facts.uuid] = facts
    ordered = _order(list(batch.values()))
    # Refuse a uuid clash before uploading anything; a record created meanwhile is a conflict later.
    existing = [_existing(store, facts) for facts in ordered]
    for record in existing:
        if record is not None and name is not None and record.name != name:
            # A record is created once and never rewritten: its name cannot change afterwards.
            was = f"as {record.name!r}" if record.name else "without a name"
            raise CatalogueError(
                f"{record.filename} is already registered {was} ({record.uuid}); a record's name cannot change, "
                f"so it is not named {name!r}",
                hint=f"refer to it by {'its name or ' if record.name else ''}its uuid; nothing was changed",
            )
    results = []
    for facts, record in zip(ordered, existing):
        registration = _register_one(
            store,
            facts,
            facts.links,
            existing=record,
            name=name,
            tags=tags,
            upload=upload,
            progress=progress,
            environment=environment,
        )
        results.append(registration)
        if on_registered is not None:
            on_registered(registration)
    return results


def register_run(
    store: CatalogueStore,
    folders: Sequence[str | Path],
    **options,
) -> list[Registration]:
    """Register every checkpoint under one or more run folders, in lineage order.

    Passing the folders of a run and of its resumes and forks together
    registers the whole family in one call.

    Args:
        store: The catalogue.
        folders: Run folders (searched recursively for ``*.ckpt``, ``*.safetensors``, ...).
        **options: As for :func:`register_paths` (``tags``, ``upload``, ...).

    Returns:
        One :class:`Registration` per distinct file.
    """
    return register_paths(store, find_checkpoints(folders), **options)


def import_records(store: CatalogueStore, records: Iterable[CheckpointRecord]) -> int:
    """Create records that were built elsewhere (another site, a benchmark), in one index delta.

    No file is read or uploaded and lineage is not checked: the caller
    vouches for the records. Records whose uuid exists are skipped.

    Returns:
        How many records were created.
    """
    events = []
    for record in records:
        try:
            store.create_record(record)
        except ConflictError:
            continue
        events.append(_events.put_event(record))
    if events:
        store.publish(events)
    return len(events)
