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

Lineage is settled first, for the whole batch, before anything is written (:mod:`.parents`); the
bytes go to content-addressed blobs (:mod:`.blobs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from anemoi_ckpt_nb.catalogue import events as _events
from anemoi_ckpt_nb.catalogue.blobs import existing_record, restore_blobs, store_metadata, upload_blob
from anemoi_ckpt_nb.catalogue.parents import CHECKPOINT_PATTERNS, Lineage, links_for, order
from anemoi_ckpt_nb.catalogue.records import FileFacts, inspect_file, make_record
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, ParentLink, SourceLocation
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.compat.environment import EnvironmentSnapshot, capture_environment
from anemoi_ckpt_nb.errors import CatalogueError, ConflictError, UuidClashError

__all__ = [
    "CHECKPOINT_PATTERNS",
    "ParentSpec",
    "Registration",
    "find_checkpoints",
    "import_records",
    "register_paths",
    "register_run",
]

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
    """Register one file whose lineage is settled; ``existing`` is its record read by :func:`.blobs.existing_record`."""
    from anemoi_ckpt_nb.catalogue.tags import change_tags

    stored = _Counted(progress)
    if existing is None:
        blob = upload_blob(store, facts, stored) if upload else None
        metadata_blob = store_metadata(store, facts)
        # Aliases before the record: an alias of a record not (yet) created finds nothing.
        for other in facts.other_uuids:
            store.create_alias(other, facts.uuid)
        record = make_record(
            facts, parents=links, name=name, blob=blob, metadata_blob=metadata_blob, registered_with=environment
        )
        try:
            store.create_record(record)
        except ConflictError:  # registered concurrently by someone else: theirs stands
            existing = existing_record(store, facts)
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
        restore_blobs(store, record, facts, upload=upload, progress=stored)
        # Re-publish the entry if a crashed writer left it out of the index.
        entry = store.index(refresh=False).entries.get(record.uuid)
        if entry is None or entry["registered_at"] != _events.generation_of(record):
            state, _ = store.read_tags(record.uuid)
            store.publish([_events.put_event(record, state)])
    if tags:
        change_tags(store, record.uuid, add=tags)
    stored.finish(facts.size)
    return Registration(path=facts.path, record=record, created=existing is None)


class _Counted:
    """A progress callback that counts, so that a file's storing step can report the bytes it skipped
    (already stored, not uploaded): each file then accounts for its size twice, hashing and storing,
    and a bar's total is known before anything is read."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress, self.done = progress, 0

    def __call__(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(count)

    def finish(self, size: int) -> None:
        if size > self.done:
            self(size - self.done)


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
        progress: Called with byte counts while hashing and storing; each file accounts for its
            size twice (hashed, then uploaded, found already stored or not uploaded), so a bar's
            total is twice the sum of the files' sizes.
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
    lineage = Lineage(store, inspected)
    for facts in inspected:
        facts.source = source
        facts.extra_parents = list(extra)
        facts.links = links_for(facts, lineage, allow_missing_parents=allow_missing_parents)
    batch: dict[str, FileFacts] = {}
    for facts in inspected:
        hashed = _Counted(progress)
        facts.hash(progress=hashed)
        hashed.finish(facts.size)  # a hash given by the caller reads nothing
        other = batch.get(facts.uuid)
        if other is not None:
            if other.sha256 != facts.sha256:
                raise UuidClashError(
                    facts.uuid,
                    f"{other.path} and {facts.path} carry the same uuid {facts.uuid} but differ",
                    hint="register them separately; one of them is a modified copy",
                )
            _Counted(progress).finish(facts.size)  # stored once, with the other
            continue  # the same file twice (e.g. last.ckpt next to its epoch file)
        batch[facts.uuid] = facts
    ordered = order(list(batch.values()))
    # Refuse a uuid clash before uploading anything; a record created meanwhile is a conflict later.
    existing = [existing_record(store, facts) for facts in ordered]
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
