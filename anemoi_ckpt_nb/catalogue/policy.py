"""Retention: which checkpoints ``clean`` may remove. Pure functions over index entries.

Rules select candidates; protections then keep some of them:

* ``keep_last=N``: in each run, the checkpoints after the newest N (by global
  step, then epoch, then registration time) are candidates. Training and
  inference checkpoints are counted separately; checkpoints without a run id
  are not subject to this rule.
* ``older_than_days=D``: checkpoints without any tag registered more than D
  days ago are candidates.

A candidate is kept, whatever the rules say, when it

* carries a protected tag (``production-ready`` by default, see ``catalogue.json``), or
* has a registered descendant: removing it would break the lineage of a
  checkpoint that is still there. Its turn may come once the descendants are gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from anemoi_ckpt_nb.catalogue.schema import RetentionPolicy
from anemoi_ckpt_nb.errors import CatalogueError

Entry = dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """What ``clean`` does with one candidate, and why."""

    uuid: str
    delete: bool
    reason: str
    size: int = 0
    label: str = ""
    #: Every object ``clean`` deletes (or would delete) for it: catalogue keys, then site copies.
    files: tuple[str, ...] = ()


@dataclass
class CleanPlan:
    """The outcome of :func:`plan_clean`: candidates to delete and candidates kept."""

    delete: list[Decision] = field(default_factory=list)
    keep: list[Decision] = field(default_factory=list)
    #: Filled in by ``clean`` when the plan was applied.
    applied: bool = False

    @property
    def freed_bytes(self) -> int:
        return sum(d.size for d in self.delete)


def _parse_time(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _newest_first(entry: Entry) -> tuple:
    step, epoch = entry.get("global_step"), entry.get("epoch")
    return (step if step is not None else -1, epoch if epoch is not None else -1, entry["registered_at"])


def _label(entry: Entry) -> str:
    step = entry.get("global_step")
    return f"{entry['uuid'][:8]} {entry.get('name') or entry.get('filename')}" + (
        f" (step {step})" if step is not None else ""
    )


def plan_clean(
    entries: Iterable[Entry],
    *,
    policy: RetentionPolicy,
    protected_tags: Sequence[str],
    now: dt.datetime,
) -> CleanPlan:
    """Decide which checkpoints a clean removes.

    Args:
        entries: Every index entry of the catalogue (needed to see descendants).
        policy: The rules; at least one must be set.
        protected_tags: Tags whose checkpoints are never removed.
        now: The time the age rule measures from.

    Returns:
        The plan; candidates that are protected appear in ``keep`` with the reason.

    Raises:
        CatalogueError: no rule is set.
    """
    if policy.keep_last is None and policy.older_than_days is None:
        raise CatalogueError(
            "no retention rule: nothing to clean",
            hint="give --keep-last N and/or --older-than DAYS; a catalogue's own policy is set "
            "when it is created, with `anemoi-ckpt init URL --keep-last N`",
        ).with_python_hint("give keep_last and/or older_than_days, or set a retention policy in catalogue.json")
    entries = list(entries)
    reasons: dict[str, str] = {}
    if policy.keep_last is not None:
        runs: dict[tuple[str, str], list[Entry]] = {}
        for entry in entries:
            if entry.get("run_id"):
                runs.setdefault((entry["run_id"], entry["kind"]), []).append(entry)
        for (run_id, kind), members in runs.items():
            members.sort(key=_newest_first, reverse=True)
            for entry in members[policy.keep_last :]:
                reasons[entry["uuid"]] = f"not among the last {policy.keep_last} {kind} checkpoints of run {run_id[:8]}"
    if policy.older_than_days is not None:
        limit = now - dt.timedelta(days=policy.older_than_days)
        for entry in entries:
            if not entry.get("tags") and _parse_time(entry["registered_at"]) < limit:
                reasons.setdefault(
                    entry["uuid"], f"untagged and registered more than {policy.older_than_days:g} days ago"
                )
    protected = set(protected_tags)
    has_children: dict[str, list[str]] = {}
    for entry in entries:
        for parent in entry.get("parents") or ():
            has_children.setdefault(parent["uuid"], []).append(entry["uuid"])
    plan = CleanPlan()
    for entry in sorted(entries, key=lambda e: (e["registered_at"], e["uuid"])):
        uuid = entry["uuid"]
        if uuid not in reasons:
            continue
        shield = sorted(protected.intersection(entry.get("tags") or ()))
        size, label = entry.get("size", 0), _label(entry)
        if shield:
            plan.keep.append(Decision(uuid, False, f"protected by tag {', '.join(shield)}", size, label))
        elif uuid in has_children:
            kids = has_children[uuid]
            plan.keep.append(
                Decision(uuid, False, f"has {len(kids)} registered descendant(s), e.g. {kids[0][:8]}", size, label)
            )
        else:
            plan.delete.append(Decision(uuid, True, reasons[uuid], size, label))
    return plan
