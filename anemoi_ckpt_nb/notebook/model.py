"""The lineage of a checkpoint as a small graph model: nodes (records, with their tags) and edges (parent to child, by relation).

:func:`lineage_model` walks the records around a focus, to a depth, and collapses long fans and chains;
:mod:`.graph` turns the model into DOT and text, :mod:`.layout` and :mod:`.render` into SVG.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from anemoi_ckpt_nb.catalogue.lineage import children_map, display_order, family, lineage_graph
from anemoi_ckpt_nb.errors import NotRegisteredError
from anemoi_ckpt_nb.notebook import text as _text

Direction = Literal["family", "ancestors", "descendants", "both"]


DIRECTIONS: tuple[str, ...] = ("family", "ancestors", "descendants", "both")


#: Longest label line before it is shortened with an ellipsis.
MAX_LINE = 40


#: Tags shown on a node before "+N".
MAX_TAGS = 3


#: Fill colours by kind; the focus gets its own.
COLOURS = {"training": "#e8f5e9", "inference": "#ede7f6", "focus": "#ffe082", "other": "#f5f5f5"}
#: Text in the boxes, box outlines and edges, the focus's outline, edge labels (on the page).
#: These and COLOURS are tokens: every renderer writes them as they are, and ``static/lineage.css``
#: repaints each one from the page's theme (a light drawing with dark ink where the SVG is an image).
INK, LINE, FOCUS_LINE, LABEL = "#212121", "#607d8b", "#e65100", "#37474f"


@dataclass(frozen=True)
class Node:
    """One box of the drawing: a checkpoint, a parent missing from the records, or a collapsed chain."""

    id: str
    lines: tuple[str, ...]
    kind: str = "other"  # "training" | "inference" | "missing" | "collapsed" | other kinds as recorded
    focus: bool = False
    tags: tuple[str, ...] = ()
    hidden: int = 0  # for a collapsed chain: how many checkpoints it stands for


@dataclass(frozen=True)
class Edge:
    """``parent`` -> ``child``, labelled with how the child came from the parent."""

    parent: str
    child: str
    relation: str


@dataclass
class LineageModel:
    """What a lineage drawing shows, before any layout: nodes in a stable order, and edges."""

    focus: str
    direction: str
    depth: int | None
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        """The node with this id (KeyError if absent)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


def _shorten(line: str) -> str:
    # One line per value: a newline in a name must not start a new label line.
    line = " ".join(str(line).split())
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def _node_lines(record: Any, tags: list[str]) -> tuple[str, ...]:
    title = _text.field(record, "name") or _text.short_uuid(_text.field(record, "uuid"))
    lines = [_shorten(title)]
    details = [str(_text.field(record, "kind", "?"))]
    if _text.field(record, "global_step") is not None:
        details.append(f"step {_text.field(record, 'global_step')}")
    lines.append(_shorten(" · ".join(details)))
    if tags:
        shown = "tags: " + ", ".join(tags[:MAX_TAGS]) + (f" +{len(tags) - MAX_TAGS}" if len(tags) > MAX_TAGS else "")
        lines.append(_shorten(shown))
    return tuple(lines)


def _walk(start: str, neighbours: Mapping[str, list[str]], depth: int | None) -> dict[str, int]:
    """Breadth-first distances from ``start`` along ``neighbours``, up to ``depth`` hops."""
    seen = {start: 0}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if depth is not None and seen[current] >= depth:
            continue
        for other in neighbours.get(current, []):
            if other not in seen:
                seen[other] = seen[current] + 1
                queue.append(other)
    return seen


def lineage_model(
    records: Iterable[Any],
    focus: str,
    *,
    depth: int | None = None,
    direction: Direction = "family",
    tags: Mapping[str, Iterable[str]] | None = None,
    collapse: int | None = 4,
) -> LineageModel:
    """Select the lineage of ``focus`` among ``records`` and collapse long plain chains.

    Args:
        records: Record-likes of the catalogue (at least the focus and its relatives).
        focus: uuid of the checkpoint to centre on; highlighted.
        depth: Hops to follow from the focus; None for all.
        direction: ``"family"`` (what ``anemoi-ckpt lineage`` prints: from the first saves of the
            focus's run down to every descendant, see :func:`~anemoi_ckpt_nb.catalogue.lineage.family`),
            ``"ancestors"``, ``"descendants"`` or ``"both"`` (ancestors and descendants only).
        tags: uuid -> tags; by default each record's own ``tags`` field (index entries have one).
        collapse: A run of more than this many linked checkpoints, each with one parent and one
            child, no tags and not the focus, is drawn as one "… N more …" node; None keeps all.

    Returns:
        A :class:`LineageModel`.

    Raises:
        ValueError: ``direction`` or ``depth`` is not valid.
        NotRegisteredError: ``focus`` is not among the records.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be 0 or more (or None for all), not {depth}")
    by_uuid = {str(_text.field(record, "uuid")): record for record in records}
    if focus not in by_uuid:
        raise NotRegisteredError(focus, hint="anemoi-ckpt ls lists the registered checkpoints")
    # The graph the CLI prints: recorded links plus the order of each training session.
    parents = lineage_graph(by_uuid.values())
    up = {u: [p for p, _ in links] for u, links in parents.items()}
    down = {u: [c for c, _ in links] for u, links in children_map(parents).items()}

    selected: dict[str, int] = {focus: 0}
    if direction == "family":
        run_of = {u: _text.field(r, "run_id") for u, r in by_uuid.items()}
        tops, members = family(parents, focus, run_of=run_of)
        either = {u: [n for n in up.get(u, []) + down.get(u, []) if n in members] for u in members}
        for top in tops:  # the first saves of a run sit side by side, one hop apart, as in the CLI tree
            either[top] += [other for other in tops if other != top]
        selected.update(_walk(focus, either, depth))
    if direction in ("ancestors", "both"):
        selected.update(_walk(focus, up, depth))
    if direction in ("descendants", "both"):
        selected.update(_walk(focus, down, depth))

    def order(uuid: str) -> tuple:
        return display_order(by_uuid.get(uuid, {"uuid": uuid}))

    nodes: dict[str, Node] = {}
    for uuid in sorted(selected, key=order):
        record = by_uuid.get(uuid)
        if record is None:
            nodes[uuid] = Node(uuid, (_text.short_uuid(uuid), "not in the records"), kind="missing")
            continue
        node_tags = list(tags.get(uuid, ()) if tags is not None else _text.field(record, "tags", []) or [])
        kind = str(_text.field(record, "kind", "other"))
        nodes[uuid] = Node(uuid, _node_lines(record, node_tags), kind=kind, focus=uuid == focus, tags=tuple(node_tags))
    edges = [
        Edge(parent, child, relation)
        for child in nodes
        for parent, relation in parents.get(child, [])
        if parent in nodes
    ]
    model = LineageModel(focus=focus, direction=direction, depth=depth, nodes=list(nodes.values()), edges=edges)
    if collapse is not None:
        _collapse_fans(model, collapse, by_uuid)
        _collapse_chains(model, collapse, by_uuid)
    return model


def _plain(node: Node) -> bool:
    """A checkpoint nobody marked: not the focus, no tags, a real record."""
    return not node.focus and not node.tags and node.kind not in ("missing", "collapsed")


def _steps_line(records: Iterable[Any]) -> list[str]:
    steps = [_text.field(r, "global_step") for r in records if _text.field(r, "global_step") is not None]
    return [f"steps {min(steps)}–{max(steps)}"] if steps else []


def _replace(model: LineageModel, hidden: set[str], collapsed: Node, new_edges: list[Edge]) -> None:
    """Swap the ``hidden`` nodes for ``collapsed`` (where the first of them was, for a stable layout)."""
    position = next(i for i, n in enumerate(model.nodes) if n.id in hidden)
    model.nodes = [n for n in model.nodes[:position] if n.id not in hidden] + [collapsed] + [
        n for n in model.nodes[position:] if n.id not in hidden
    ]
    model.edges = [e for e in model.edges if e.parent not in hidden and e.child not in hidden] + new_edges


def _collapse_fans(model: LineageModel, limit: int, by_uuid: Mapping[str, Any]) -> None:
    """Replace more than ``limit`` plain leaf children of one parent by the newest and one node.

    The saves of one session are a chain (``continued-from``, see
    :func:`~anemoi_ckpt_nb.catalogue.lineage.lineage_graph`) when their steps are known; without
    steps, or for many forks or conversions of one checkpoint, they stay a fan under their parent.
    """
    into: dict[str, list[Edge]] = {}
    out: dict[str, list[Edge]] = {}
    for edge in model.edges:
        into.setdefault(edge.child, []).append(edge)
        out.setdefault(edge.parent, []).append(edge)
    nodes = {node.id: node for node in model.nodes}
    for parent, edges in list(out.items()):
        groups: dict[tuple[str, str], list[str]] = {}
        for edge in edges:
            child = nodes[edge.child]
            if _plain(child) and len(into[child.id]) == 1 and not out.get(child.id):
                groups.setdefault((edge.relation, child.kind), []).append(child.id)
        for (relation, _), leaves in groups.items():
            if len(leaves) <= limit:
                continue
            leaves.sort(key=lambda u: (_text.field(by_uuid[u], "global_step", -1), u))
            hidden = leaves[:-1]  # the newest stays in view
            records = [by_uuid[u] for u in hidden]
            collapsed = Node(
                f"collapsed-{parent}-{relation}",
                (f"… {len(hidden)} more …", *_steps_line(records)),
                kind="collapsed",
                hidden=len(hidden),
            )
            _replace(model, set(hidden), collapsed, [Edge(parent, collapsed.id, relation)])


def _collapse_chains(model: LineageModel, limit: int, by_uuid: Mapping[str, Any]) -> None:
    """Replace runs of more than ``limit`` plain chain links by one node, in place."""
    into: dict[str, list[Edge]] = {}
    out: dict[str, list[Edge]] = {}
    for edge in model.edges:
        into.setdefault(edge.child, []).append(edge)
        out.setdefault(edge.parent, []).append(edge)

    plain_ids = {
        node.id
        for node in model.nodes
        if _plain(node) and len(into.get(node.id, [])) == 1 and len(out.get(node.id, [])) == 1
    }
    done: set[str] = set()
    runs: list[list[str]] = []
    for node in model.nodes:
        if node.id not in plain_ids or node.id in done:
            continue
        # Walk up to the start of the run, then down to its end; the sets guard
        # against a cycle in damaged records.
        start, seen = node.id, {node.id}
        while into[start][0].parent in plain_ids and into[start][0].parent not in seen:
            start = into[start][0].parent
            seen.add(start)
        run, in_run = [start], {start}
        while out[run[-1]][0].child in plain_ids and out[run[-1]][0].child not in in_run:
            run.append(out[run[-1]][0].child)
            in_run.add(run[-1])
        done.update(run)
        if len(run) > limit:
            runs.append(run)

    for run in runs:
        relations = sorted({into[u][0].relation for u in run[1:]})
        lines = [f"… {len(run)} more …", *_steps_line(by_uuid[u] for u in run)]
        if relations:
            lines.append(_shorten(", ".join(relations)))
        collapsed = Node(f"collapsed-{run[0]}", tuple(lines), kind="collapsed", hidden=len(run))
        first_in, last_out = into[run[0]][0], out[run[-1]][0]
        _replace(
            model,
            set(run),
            collapsed,
            [Edge(first_in.parent, collapsed.id, first_in.relation), Edge(collapsed.id, last_out.child, last_out.relation)],
        )
