"""Applying a retention policy: plan with :mod:`anemoi_ckpt_nb.catalogue.policy`, then delete.

Deletion order for one checkpoint: the record first (from then on nothing
points at its blobs), then its index entry (a ``delete`` delta), its tag
state and the aliases of its other uuids, and finally the file and metadata blobs unless another record still
uses them. A crash part-way leaves at worst an unreferenced blob.

Just before deleting, the tag state is read again (the truth, not the index):
a checkpoint tagged with a protected tag since the plan was made is kept.

Copies at other sites are not the catalogue's business: whoever applies a
policy passes ``forget_copies`` (the sites package's
:func:`anemoi_ckpt_nb.sites.drop.forget`), so the catalogue never imports the sites.

Not guarded: a descendant registered by another process while ``clean``
runs may lose its parent. Run ``clean`` when no registrations are in flight.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable

from anemoi_ckpt_nb.catalogue import events as _events
from anemoi_ckpt_nb.catalogue import index as _index
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.policy import CleanPlan, Decision, plan_clean
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, RetentionPolicy, utcnow
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import CkptError, SchemaError, SymlinkRefusedError

#: A record that cannot be trusted: edited by hand, or a symlink planted in a folder catalogue.
_UNTRUSTED = (SchemaError, SymlinkRefusedError)

LOG = logging.getLogger(__name__)

#: Drops a deleted checkpoint's copies at other sites and its locations document; returns notes to log.
ForgetCopies = Callable[[CatalogueStore, CheckpointRecord], Iterable[str]]
#: Where ``forget_copies`` would delete a checkpoint's copies (URLs), for the dry run.
PlannedCopies = Callable[[CatalogueStore, CheckpointRecord], Iterable[str]]


def clean(
    store: CatalogueStore,
    policy: RetentionPolicy | None = None,
    *,
    dry_run: bool = True,
    forget_copies: ForgetCopies,
    planned_copies: PlannedCopies | None = None,
) -> CleanPlan:
    """Remove the checkpoints a retention policy selects, unless protected.

    Args:
        store: The catalogue.
        policy: The rules; default the catalogue's own (``catalogue.json``).
        dry_run: Only say what would go (the default).
        forget_copies: Called for each checkpoint deleted, to drop its copies at
            other sites (``anemoi_ckpt_nb.sites.drop.forget``).
        planned_copies: Says where ``forget_copies`` would delete (``anemoi_ckpt_nb.sites.drop.planned``),
            so that the plan lists every object that goes.

    Returns:
        The plan; ``plan.applied`` is True when deletions were made, and
        ``plan.delete`` then lists what was actually removed.

    Raises:
        CatalogueError: no retention rule is set.
    """
    policy = policy or store.descriptor.retention
    protected = store.descriptor.protected_tags
    entries = store.index().entries
    plan = plan_clean(entries.values(), policy=policy, protected_tags=protected, now=utcnow())
    # How many records use each blob: two records may share bytes (content addressing).
    users = Counter(key for e in entries.values() for key in (e.get("blob"), e.get("metadata_blob")) if key)
    if dry_run:
        plan.delete = [_with_files(store, d, users, planned_copies) for d in plan.delete]
        return plan
    done: list[Decision] = []
    for decision in plan.delete:
        entry = entries.get(decision.uuid)
        try:
            record = store.read_record(decision.uuid)
        except _UNTRUSTED as error:  # nothing it names is trusted, nothing is deleted
            LOG.warning("clean %s: %s", decision.uuid, error)
            plan.keep.append(Decision(decision.uuid, False, "its record does not follow the layout", decision.size, decision.label))
            continue
        if entry is None or record is None:
            if entry is not None:  # removed by a clean that died before unindexing it
                LOG.warning(
                    "clean %s: in the index but its record is gone; %s",
                    decision.uuid, _index.reindex_hint(store.url),
                )
            continue
        state, _ = store.read_tags(decision.uuid)
        shield = set(protected).intersection(state.tags if state else ())
        if shield:
            reason = f"protected by tag {', '.join(sorted(shield))}"
            plan.keep.append(Decision(decision.uuid, False, reason, decision.size, decision.label))
            continue
        decision = _with_files(store, decision, users, planned_copies, record)
        store.storage.delete(layout.record_key(record.uuid))
        store.publish([_events.delete_event(record.uuid, _events.generation_of(record))])
        _delete(store, record, layout.tags_key(record.uuid))
        for key in _aliases_of(store, record):
            _delete(store, record, key)
        # Copies at other sites and locations/<uuid>.json (anemoi_ckpt_nb.sites.drop).
        for note in forget_copies(store, record):
            LOG.warning("clean %s: %s", record.uuid, note)
        for key in _blobs_to_delete(store, record, users):
            _delete(store, record, key)
        done.append(decision)
    plan.delete = done
    plan.applied = True
    return plan


def _delete(store: CatalogueStore, record: CheckpointRecord, key: str) -> None:
    try:
        store.storage.delete(key)
    except SymlinkRefusedError as error:  # planted: left for a person to look at, the rest goes on
        LOG.warning("clean %s: %s", record.uuid, error)


def _present(store: CatalogueStore, key: str) -> bool:
    try:
        return store.storage.exists(key)
    except SymlinkRefusedError:
        return False  # a planted link is never deleted: not listed


def _blobs_to_delete(store: CatalogueStore, record: CheckpointRecord, users: Counter, *, count: bool = True) -> list[str]:
    """The record's blobs that no other record uses and that hold what they must.

    ``read_record`` already refused blob keys other than ``blobs/sha256/...`` (and a file blob
    other than the record's own sha256); a metadata blob must moreover be this checkpoint's
    metadata, so that a record cannot name another checkpoint's metadata for deletion.
    """
    keys = []
    for key in (record.blob, record.metadata_blob):
        if not key:
            continue
        left = users[key] - 1
        if count:
            users[key] = left
        if left > 0:
            continue
        if key == record.metadata_blob and not _is_metadata_of(store, key, record):
            LOG.warning("clean %s: %s does not hold its metadata; left alone", record.uuid, key)
            continue
        keys.append(key)
    return keys


def _aliases_of(store: CatalogueStore, record: CheckpointRecord) -> list[str]:
    """The ``aliases/<uuid>.json`` documents that file another of the record's uuids under it.

    Only the uuids the record names, and only documents that say so: a record cannot name
    another record's alias for deletion.
    """
    keys = []
    for uuid in dict.fromkeys((*record.other_uuids, record.metadata_uuid)):
        if uuid == record.uuid or not layout.is_uuid(uuid):
            continue
        try:
            target = store.read_alias(uuid)
        except _UNTRUSTED as error:
            LOG.warning("clean %s: %s; left alone", record.uuid, error)
            continue
        if target == record.uuid:
            keys.append(layout.alias_key(uuid))
    return keys


def _is_metadata_of(store: CatalogueStore, key: str, record: CheckpointRecord) -> bool:
    try:
        data, _ = store.storage.get(key)
        document = json.loads(data)
    except (CkptError, ValueError):
        return False
    uuids = {record.uuid, record.metadata_uuid, *getattr(record, "other_uuids", ())}
    return isinstance(document, dict) and str(document.get("uuid")) in uuids


def _with_files(
    store: CatalogueStore,
    decision: Decision,
    users: Counter,
    planned_copies: PlannedCopies | None,
    record: CheckpointRecord | None = None,
) -> Decision:
    """``decision`` with :attr:`Decision.files`: every object clean deletes for it, by key or URL."""
    if record is None:
        try:
            record = store.read_record(decision.uuid)
        except _UNTRUSTED as error:
            return dataclasses.replace(decision, files=(f"nothing: {error.message}",))
        if record is None:
            return decision
    base = store.url.rstrip("/")
    keys = [layout.record_key(record.uuid)]
    keys += [k for k in (layout.tags_key(record.uuid), layout.locations_key(record.uuid)) if _present(store, k)]
    keys += _aliases_of(store, record)
    keys += _blobs_to_delete(store, record, users, count=False)
    files = [f"{base}/{key}" for key in keys] + list(planned_copies(store, record) if planned_copies else ())
    return dataclasses.replace(decision, files=tuple(files))
