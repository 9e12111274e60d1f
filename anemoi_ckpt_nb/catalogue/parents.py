"""The parents of the files being registered: links from their metadata, fork manifests and arguments, parents first.

Lineage comes from the metadata (``parent_uuid``: ``resumed-from`` when the
parent's run id is the same, else ``forked-from``; ``converted_from`` or an
inference file's shared uuid: ``converted-from``), from the run manifests of
forks (a weights-only fork records no ``parent_uuid``; the manifest ``fork``
or ``plan`` stored names its new run id and its parent) and from explicit
``parents``. A parent is found by any uuid its file holds (a current training
file holds two) and links name the uuid its record is filed under. Every parent must be registered already or be part of the same
call, which registers parents first; otherwise :class:`~anemoi_ckpt_nb.errors.MissingParentError`
names the missing uuid and the command that registers it.
"""

from __future__ import annotations

import heapq
import itertools
import json
import zipfile
from pathlib import Path

from anemoi_ckpt_nb.catalogue.records import FileFacts
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, ParentLink
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import CatalogueError, MissingParentError

#: File names a run folder's checkpoints have.
CHECKPOINT_PATTERNS = ("*.ckpt", "*.safetensors", "*.pt", "*.pth")


def _metadata_parent(facts: FileFacts) -> str | None:
    """The uuid the file's own metadata names as its origin."""
    if facts.derived:
        return facts.metadata_uuid
    if facts.converted_from:
        return facts.converted_from
    return facts.parent_uuid


def order(batch: list[FileFacts]) -> list[FileFacts]:
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


class Lineage:
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


def links_for(
    facts: FileFacts,
    lineage: Lineage,
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
