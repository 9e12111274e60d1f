"""Applying a retention policy: plan with :mod:`anemoi_ckpt_nb.catalogue.policy`, then delete.

Deletion order for one checkpoint: the record first (from then on nothing
points at its blobs), then its index entry (a ``delete`` delta), its tag
state, and finally the file and metadata blobs unless another record still
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

import logging
from collections import Counter
from collections.abc import Callable, Iterable

from anemoi_ckpt_nb.catalogue import events as _events
from anemoi_ckpt_nb.catalogue import index as _index
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.policy import CleanPlan, Decision, plan_clean
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, RetentionPolicy, utcnow
from anemoi_ckpt_nb.catalogue.store import CatalogueStore

LOG = logging.getLogger(__name__)

#: Drops a deleted checkpoint's copies at other sites and its locations document; returns notes to log.
ForgetCopies = Callable[[CatalogueStore, CheckpointRecord], Iterable[str]]


def clean(
    store: CatalogueStore,
    policy: RetentionPolicy | None = None,
    *,
    dry_run: bool = True,
    forget_copies: ForgetCopies,
) -> CleanPlan:
    """Remove the checkpoints a retention policy selects, unless protected.

    Args:
        store: The catalogue.
        policy: The rules; default the catalogue's own (``catalogue.json``).
        dry_run: Only say what would go (the default).
        forget_copies: Called for each checkpoint deleted, to drop its copies at
            other sites (``anemoi_ckpt_nb.sites.drop.forget``).

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
    if dry_run:
        return plan
    # How many records use each blob: two records may share bytes (content addressing).
    users = Counter(key for e in entries.values() for key in (e.get("blob"), e.get("metadata_blob")) if key)
    done: list[Decision] = []
    for decision in plan.delete:
        entry = entries.get(decision.uuid)
        record = store.read_record(decision.uuid)
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
        store.storage.delete(layout.record_key(record.uuid))
        store.publish([_events.delete_event(record.uuid, _events.generation_of(record))])
        store.storage.delete(layout.tags_key(record.uuid))
        # Copies at other sites and locations/<uuid>.json (anemoi_ckpt_nb.sites.drop).
        for note in forget_copies(store, record):
            LOG.warning("clean %s: %s", record.uuid, note)
        for key in (record.blob, record.metadata_blob):
            if key:
                users[key] -= 1
                if users[key] <= 0:
                    store.storage.delete(key)
        done.append(decision)
    plan.delete = done
    plan.applied = True
    return plan
