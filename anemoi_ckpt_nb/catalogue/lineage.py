"""Lineage queries over records: pure functions, no storage.

The graph is a mapping ``uuid -> [(parent_uuid, relation), ...]`` built by
:func:`parents_map` from records, index entries or plain dicts. Edges point
from a checkpoint to the checkpoint it came from (``resumed-from``,
``forked-from``, ``converted-from``, ``fine-tuned-from``). A parent uuid that is
not a key of the mapping is an unregistered checkpoint (registered with
``allow_missing_parents``): it still appears in ancestors and trees.

In Anemoi every checkpoint saved by a session names the checkpoint the
session started from, so the recorded links make the checkpoints of one run
siblings, and a run started from scratch has as many roots as saves.
:func:`lineage_graph` adds what a user reads into a run: each checkpoint of a
training session (same run, same recorded parents) continues from the one
saved before it (``continued-from``, derived from the steps, never stored).
Every face (``anemoi-ckpt lineage``, its ``--json``, the notebook graph) shows
that graph, over the same scope: the :func:`family` of the checkpoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from anemoi_ckpt_nb.errors import CatalogueError, NotRegisteredError

Parents = Mapping[str, Sequence[tuple[str, str]]]


def _get(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def parents_map(records: Iterable[Any]) -> dict[str, list[tuple[str, str]]]:
    """``uuid -> [(parent_uuid, relation)]`` from records, index entries or dicts.

    Args:
        records: Objects or dicts with ``uuid`` and ``parents`` (each parent
            with ``uuid`` and ``relation``, or a ``(uuid, relation)`` pair).
    """
    graph: dict[str, list[tuple[str, str]]] = {}
    for record in records:
        links = []
        for parent in _get(record, "parents") or ():
            if isinstance(parent, (tuple, list)):
                links.append((str(parent[0]), str(parent[1])))
            else:
                links.append((_get(parent, "uuid"), _get(parent, "relation")))
        graph[_get(record, "uuid")] = links
    return graph


#: The relation between successive checkpoints of one training session: derived, never stored.
CONTINUED_FROM = "continued-from"


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def lineage_graph(records: Iterable[Any]) -> dict[str, list[tuple[str, str]]]:
    """The graph every lineage view shows: :func:`parents_map` plus the order of each training session.

    A session is the training checkpoints of one run that share their recorded parents (none
    for a run started from scratch, the checkpoint resumed or forked from otherwise). Its
    checkpoints are grouped by step; each checkpoint of a later step continues from one of the
    step before (``continued-from``), which replaces its recorded links: those stay on the
    session's first step, so a run reads as a chain and its resumes and forks branch off it.
    Of several saves of one step (``by_epoch``, ``by_time``, ``last.ckpt``), the one continued
    from is the first by file name, ``last.ckpt`` last: it is overwritten by the next save.

    Args:
        records: Records, index entries or dicts, as :func:`parents_map`; ``kind``, ``run_id``,
            ``global_step`` and ``filename`` order the sessions (without a run or a step, a
            checkpoint keeps its recorded links only).
    """
    records = list(records)
    graph = parents_map(records)
    sessions: dict[tuple, dict[int, list[Any]]] = {}
    for record in records:
        run, step = _field(record, "run_id"), _field(record, "global_step")
        if _field(record, "kind") != "training" or run is None or step is None:
            continue
        key = (run, tuple(sorted(graph[_get(record, "uuid")])))
        sessions.setdefault(key, {}).setdefault(int(step), []).append(record)
    for groups in sessions.values():
        steps = sorted(groups)
        for before, step in zip(steps, steps[1:]):
            previous = min(
                groups[before],
                key=lambda r: (_field(r, "filename") == "last.ckpt", _field(r, "filename") or "", _get(r, "uuid")),
            )
            for record in groups[step]:
                graph[_get(record, "uuid")] = [(_get(previous, "uuid"), CONTINUED_FROM)]
    return graph


def display_order(record: Any) -> tuple:
    """The order of checkpoints in every lineage view: training before inference, by step, then the
    saves of one step as anemoi-training names them (``by_epoch``, ``by_time``, ``last.ckpt`` last).
    Never by run id first: run ids are random, and the tutorials' stored outputs must not move."""
    step, name = _field(record, "global_step"), _field(record, "filename") or ""
    return (_field(record, "kind") != "training", step if step is not None else -1, name == "last.ckpt", name,
            str(_get(record, "uuid")))


def family(parents: Parents, uuid: str, *, run_of: Mapping[str, str | None] | None = None) -> tuple[list[str], list[str]]:
    """``(tops, members)``: the scope of every lineage view of ``uuid``.

    The tops are its roots, and with ``run_of`` the other parentless checkpoints of
    their runs (saves of one first step, side by side); the members are the tops
    and everything that descends from them, ``uuid`` included, in walking order.

    Raises:
        NotRegisteredError: ``uuid`` is not in the graph.
    """
    children = children_map(parents)
    _known(parents, uuid, children)
    tops = roots(parents, uuid)
    if run_of is not None:
        runs = {run_of.get(u) for u in tops} - {None}
        tops = sorted(set(tops) | {u for u, links in parents.items() if not links and run_of.get(u) in runs})
    members: list[str] = []
    seen: set[str] = set()
    for top in tops:
        for node in [top, *_walk(top, lambda u: [c for c, _ in children.get(u, ())])]:
            if node not in seen:
                seen.add(node)
                members.append(node)
    return tops, members


def children_map(parents: Parents) -> dict[str, list[tuple[str, str]]]:
    """``uuid -> [(child_uuid, relation)]``, children in uuid order."""
    children: dict[str, list[tuple[str, str]]] = {}
    for child in sorted(parents):
        for parent, relation in parents[child]:
            children.setdefault(parent, []).append((child, relation))
    return children


def _known(parents: Parents, uuid: str, children: Mapping[str, Any] | None = None) -> None:
    if uuid not in parents and not (children and uuid in children):
        raise NotRegisteredError(uuid, hint="list the catalogue with `anemoi-ckpt ls`")


def _walk(start: str, step: Callable[[str], Iterable[str]]) -> list[str]:
    seen = {start}
    order = []
    queue = deque([start])
    while queue:
        for nxt in step(queue.popleft()):
            if nxt not in seen:
                seen.add(nxt)
                order.append(nxt)
                queue.append(nxt)
    return order


def ancestors(parents: Parents, uuid: str) -> list[str]:
    """Every checkpoint ``uuid`` came from, nearest first (breadth-first).

    Raises:
        NotRegisteredError: ``uuid`` is not in the graph.
    """
    _known(parents, uuid)
    return _walk(uuid, lambda u: [p for p, _ in parents.get(u, ())])


def descendants(parents: Parents, uuid: str, *, children: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> list[str]:
    """Every checkpoint that came from ``uuid``, nearest first.

    Args:
        parents: The graph.
        uuid: The checkpoint.
        children: :func:`children_map` of the graph, to reuse across calls.

    Raises:
        NotRegisteredError: ``uuid`` is neither in the graph nor a parent in it.
    """
    children = children if children is not None else children_map(parents)
    _known(parents, uuid, children)
    return _walk(uuid, lambda u: [c for c, _ in children.get(u, ())])


def roots(parents: Parents, uuid: str | None = None) -> list[str]:
    """Checkpoints with no parent: all of them, or the ones ``uuid`` descends from.

    A checkpoint with no parent is its own root.
    """
    if uuid is None:
        found = {u for u, links in parents.items() if not links}
        found |= {p for links in parents.values() for p, _ in links if p not in parents}
        return sorted(found)
    family = [uuid, *ancestors(parents, uuid)]
    return sorted(u for u in family if not parents.get(u))


def path(parents: Parents, a: str, b: str) -> list[str]:
    """The shortest chain of lineage links from ``a`` to ``b``, both included.

    Links are followed in either direction, so two forks of one checkpoint are
    joined through it.

    Raises:
        NotRegisteredError: ``a`` or ``b`` is not in the graph.
        CatalogueError: they share no lineage.
    """
    children = children_map(parents)
    _known(parents, a, children)
    _known(parents, b, children)
    previous: dict[str, str | None] = {a: None}
    queue = deque([a])
    while queue:
        node = queue.popleft()
        if node == b:
            chain = [node]
            while previous[chain[-1]] is not None:
                chain.append(previous[chain[-1]])  # type: ignore[arg-type]
            return chain[::-1]
        for nxt in [p for p, _ in parents.get(node, ())] + [c for c, _ in children.get(node, ())]:
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    raise CatalogueError(f"{a} and {b} share no lineage", hint=f"see `anemoi-ckpt lineage {a}`")


def text_tree(
    parents: Parents,
    uuid: str,
    *,
    label: Callable[[str], str] | None = None,
    sort_key: Callable[[str], Any] | None = None,
    tops: Sequence[str] | None = None,
) -> str:
    """A text tree of ``uuid``'s family: from each of its roots down to every descendant.

    The line of ``uuid`` ends with ``<==``; a checkpoint reached through a
    second parent is shown once more with ``(see above)``; an unregistered
    parent is marked ``(not registered)``.

    Args:
        parents: The graph.
        uuid: The checkpoint to centre on.
        label: Text of a node (default: the first 8 characters of its uuid).
        sort_key: Order of siblings and tops (default: by uuid).
        tops: The nodes to start from (default: the roots of ``uuid``); the
            API adds the other first checkpoints of the roots' runs, so that
            forks from a sibling show too.

    Returns:
        The tree, one line per node, without a trailing newline.
    """
    children = children_map(parents)
    _known(parents, uuid, children)
    label = label or (lambda u: u[:8])
    sort_key = sort_key or (lambda u: u)
    lines: list[str] = []
    shown: set[str] = set()

    def text(node: str, relation: str | None) -> str:
        parts = [label(node)]
        if relation:
            parts.append(f"({relation})")
        if node not in parents:
            parts.append("(not registered)")
        if node == uuid:
            parts.append("<==")
        return "  ".join(parts)

    # Depth-first with an explicit stack, not recursion: a chain of thousands of
    # resumes would otherwise exceed Python's recursion limit. Children are pushed
    # last-first so they pop in order, which gives the same pre-order as recursion.
    # Each frame: (node, relation, prefix, connector, the prefix its children add).
    stack: list[tuple[str, str | None, str, str, str]] = [
        (top, None, "", "", "") for top in reversed(sorted(tops if tops is not None else roots(parents, uuid), key=sort_key))
    ]
    while stack:
        node, relation, prefix, connector, below = stack.pop()
        if node in shown:
            lines.append(f"{prefix}{connector}{text(node, relation)}  (see above)")
            continue
        shown.add(node)
        lines.append(f"{prefix}{connector}{text(node, relation)}")
        kids = sorted(children.get(node, ()), key=lambda cr: sort_key(cr[0]))
        for i in range(len(kids) - 1, -1, -1):
            child, rel = kids[i]
            last = i == len(kids) - 1
            stack.append((child, rel, prefix + below, "└── " if last else "├── ", "    " if last else "│   "))
    return "\n".join(lines)
