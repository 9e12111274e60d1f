"""Lineage graphs: a pure model and DOT builder over catalogue records, and a displayable object.

Graphs are text first (as graphviz's Python package does it): :func:`lineage_dot`
returns DOT source without needing any program; :class:`LineageGraph` renders
it to SVG lazily, through the first renderer that works here (see
:mod:`anemoi_ckpt_nb.notebook.render`).

Records are "record-likes" (``CheckpointRecord``, ``IndexEntry`` or mappings
with ``uuid``, ``kind``, ``parents``, ``global_step``, ``name``...). Edges point
from parent to child, labelled with the child's relation (``resumed-from``...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from anemoi_ckpt_nb.catalogue.lineage import text_tree
from anemoi_ckpt_nb.notebook import text as _text
from anemoi_ckpt_nb.notebook.model import (
    COLOURS,
    FOCUS_LINE,
    INK,
    LABEL,
    LINE,
    Direction,
    LineageModel,
    lineage_model,
)


def dot_string(value: Any) -> str:
    """``value`` as a quoted DOT string: backslashes and quotes escaped, so no label can
    break out of its string or use Graphviz escapes (``\\N``, ``\\l``...)."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch >= " " else " " for ch in escaped)
    return f'"{escaped}"'


def _dot_label(lines: Iterable[str]) -> str:
    # Each line is escaped on its own; the only line breaks are the ones we put between them.
    return '"' + "\\n".join(dot_string(line)[1:-1] for line in lines) + '"'


def model_dot(model: LineageModel) -> str:
    """DOT source of a :class:`LineageModel` (parents above children)."""
    out = [
        "digraph lineage {",
        # A transparent background: the page's own shows through, in light and dark themes.
        '  graph [rankdir=TB, nodesep=0.3, ranksep=0.45, fontname="Helvetica", bgcolor="transparent"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, '
        f'fillcolor="{COLOURS["other"]}", color="{LINE}", fontcolor="{INK}"];',
        f'  edge [fontname="Helvetica", fontsize=9, color="{LINE}", fontcolor="{LABEL}"];',
    ]
    for node in model.nodes:
        attrs = [f"label={_dot_label(node.lines)}"]
        if node.focus:
            attrs += [f'fillcolor="{COLOURS["focus"]}"', "penwidth=2.5", f'color="{FOCUS_LINE}"']
        elif node.kind == "missing":
            attrs += ['style="rounded,dashed,filled"']
        elif node.kind == "collapsed":
            attrs += ['shape=note', 'style="dashed,filled"']
        elif node.kind in COLOURS:
            attrs.append(f'fillcolor="{COLOURS[node.kind]}"')
        out.append(f"  {dot_string(node.id)} [{', '.join(attrs)}];")
    for edge in model.edges:
        out.append(f"  {dot_string(edge.parent)} -> {dot_string(edge.child)} [label={dot_string(edge.relation)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def lineage_dot(
    records: Iterable[Any],
    focus: str,
    *,
    depth: int | None = None,
    direction: Direction = "family",
    tags: Mapping[str, Iterable[str]] | None = None,
    collapse: int | None = 4,
) -> str:
    """DOT source of the lineage of ``focus``: see :func:`lineage_model` for the arguments.

    Returns:
        DOT text, renderable by ``dot -Tsvg``.

    Raises:
        ValueError: ``direction`` or ``depth`` is not valid.
        NotRegisteredError: ``focus`` is not among the records.
    """
    model = lineage_model(records, focus, depth=depth, direction=direction, tags=tags, collapse=collapse)
    return model_dot(model)


def model_text(model: LineageModel) -> str:
    """The drawing as an indented text tree (``text/plain``); the focus line ends with ``<==``."""
    parents: dict[str, list[tuple[str, str]]] = {node.id: [] for node in model.nodes}
    for edge in model.edges:
        parents[edge.child].append((edge.parent, edge.relation))
    lines = {node.id: " | ".join(node.lines) for node in model.nodes}
    order = {node.id: i for i, node in enumerate(model.nodes)}
    header = f"Lineage of {_text.short_uuid(model.focus)} ({model.direction}, depth {model.depth if model.depth is not None else 'all'})"
    # From every node with no parent in the drawing: a family can have several first saves.
    tops = [node.id for node in model.nodes if not parents[node.id]]
    tree = text_tree(parents, model.focus, label=lines.__getitem__, sort_key=order.__getitem__, tops=tops)
    return header + "\n" + tree


class LineageGraph:
    """The lineage of one checkpoint, displayed as SVG in Jupyter.

    Attributes:
        model: The :class:`LineageModel` (nodes and edges after collapsing).
        source: DOT source text.
    """

    def __init__(self, model: LineageModel, *, renderer: str | None = None) -> None:
        self.model = model
        self.source = model_dot(model)
        self.renderer = renderer
        self._svg: dict[str, str] = {}

    @classmethod
    def from_records(
        cls,
        records: Iterable[Any],
        focus: str,
        *,
        depth: int | None = None,
        direction: Direction = "family",
        tags: Mapping[str, Iterable[str]] | None = None,
        collapse: int | None = 4,
        renderer: str | None = None,
    ) -> LineageGraph:
        """Build the graph of ``focus`` among ``records`` (arguments as :func:`lineage_model`).

        Args:
            renderer: ``"dot"``, ``"graphviz-pure"`` or ``"builtin"``; None picks the first available.
        """
        model = lineage_model(records, focus, depth=depth, direction=direction, tags=tags, collapse=collapse)
        return cls(model, renderer=renderer)

    def svg(self, *, renderer: str | None = None) -> str:
        """The drawing as SVG text (cached per renderer).

        Args:
            renderer: Overrides the one given at construction; see :func:`~anemoi_ckpt_nb.notebook.render.render_svg`.

        Raises:
            RenderError: The chosen renderer failed.
        """
        from anemoi_ckpt_nb.notebook.render import render_svg

        key = renderer or self.renderer or "auto"
        if key not in self._svg:
            self._svg[key] = render_svg(self.source, model=self.model, renderer=renderer or self.renderer)
        return self._svg[key]

    def text(self) -> str:
        """The drawing as an indented text tree."""
        return model_text(self.model)

    def html(self) -> str:
        """The drawing inline in HTML, so that its colours follow the notebook's theme."""
        from anemoi_ckpt_nb.notebook.html import lineage_view

        return lineage_view(self.svg(), self.text())

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        # Only what is asked for: no drawing when the front end wants text. Front ends that show
        # HTML (JupyterLab, VS Code) draw it inline and themed; the SVG image serves the others.
        makers = {"text/html": self.html, "image/svg+xml": self.svg, "text/plain": self.text}
        return {
            mime: make() for mime, make in makers.items() if (not include or mime in include) and mime not in (exclude or ())
        }

    def __repr__(self) -> str:
        return (
            f"<LineageGraph of {_text.short_uuid(self.model.focus)}: "
            f"{len(self.model.nodes)} nodes, {len(self.model.edges)} edges>"
        )
