"""A small layered SVG drawing of a lineage model, in pure Python.

The last resort when neither Graphviz's ``dot`` nor the ``graphviz-pure`` program
is available. Lineage graphs are DAGs, mostly chains with a few forks, so a
simple Sugiyama-style layout is enough: layers by longest path from the roots,
a few barycentre sweeps to order each layer, children placed under their
parents, edges as curves with their relation as label.
"""

from __future__ import annotations

import html

from anemoi_ckpt_nb.notebook.model import COLOURS, FOCUS_LINE, INK, LABEL, LINE, LineageModel, Node

CHAR_WIDTH = 7.0  # px per character at FONT_SIZE, generous so text never overflows its box
FONT_SIZE = 11
LINE_HEIGHT = 14
PAD_X, PAD_Y = 10, 6
NODE_GAP = 24
RANK_GAP = 46
MARGIN = 8


def _size(node: Node) -> tuple[float, float]:
    width = max(len(line) for line in node.lines) * CHAR_WIDTH + 2 * PAD_X
    return width, len(node.lines) * LINE_HEIGHT + 2 * PAD_Y


def _layers(model: LineageModel) -> dict[str, int]:
    """Longest-path layer of each node; nodes left in a cycle (damaged records) go last."""
    ids = [node.id for node in model.nodes]
    parents = {i: [e.parent for e in model.edges if e.child == i] for i in ids}
    layer: dict[str, int] = {}
    pending = list(ids)
    while pending:
        progressed = False
        for node_id in list(pending):
            if all(p in layer for p in parents[node_id]):
                layer[node_id] = 1 + max((layer[p] for p in parents[node_id]), default=-1)
                pending.remove(node_id)
                progressed = True
        if not progressed:
            last = max(layer.values(), default=-1) + 1
            for node_id in pending:
                layer[node_id] = last
            break
    return layer


def _order(model: LineageModel, layer: dict[str, int]) -> list[list[str]]:
    count = max(layer.values(), default=-1) + 1
    rows: list[list[str]] = [[] for _ in range(count)]
    for node in model.nodes:
        rows[layer[node.id]].append(node.id)
    parents = {n.id: [e.parent for e in model.edges if e.child == n.id] for n in model.nodes}
    children = {n.id: [e.child for e in model.edges if e.parent == n.id] for n in model.nodes}

    def sweep(row: list[str], neighbours: dict[str, list[str]], reference: list[str]) -> list[str]:
        position = {node_id: i for i, node_id in enumerate(reference)}

        def key(item: tuple[int, str]) -> tuple[float, int]:
            index, node_id = item
            near = [position[n] for n in neighbours[node_id] if n in position]
            return (sum(near) / len(near) if near else index, index)

        return [node_id for _, node_id in sorted(enumerate(row), key=key)]

    for _ in range(2):
        for i in range(1, count):
            rows[i] = sweep(rows[i], parents, rows[i - 1])
        for i in range(count - 2, -1, -1):
            rows[i] = sweep(rows[i], children, rows[i + 1])
    return rows


def layout_svg(model: LineageModel) -> str:
    """Draw ``model`` as a standalone ``<svg>`` element.

    Args:
        model: Nodes and edges, as :func:`~anemoi_ckpt_nb.notebook.model.lineage_model` returns them.

    Returns:
        SVG text; every label escaped.
    """
    nodes = {node.id: node for node in model.nodes}
    size = {node_id: _size(node) for node_id, node in nodes.items()}
    layer = _layers(model)
    rows = _order(model, layer)
    parents = {node_id: [e.parent for e in model.edges if e.child == node_id] for node_id in nodes}

    centre: dict[str, float] = {}
    top: dict[str, float] = {}
    y = MARGIN
    for row in rows:
        right = float("-inf")
        for node_id in row:
            width = size[node_id][0]
            placed = [centre[p] for p in parents[node_id] if p in centre]
            # Under the parents when there is room, so that chains are straight.
            wanted = sum(placed) / len(placed) if placed else right + NODE_GAP + width / 2
            if right == float("-inf") and not placed:
                wanted = width / 2
            x = max(wanted, right + NODE_GAP + width / 2)
            centre[node_id], top[node_id] = x, y
            right = x + width / 2
        y += max((size[n][1] for n in row), default=0) + RANK_GAP
    shift = MARGIN - min((centre[n] - size[n][0] / 2 for n in nodes), default=0)
    for node_id in centre:
        centre[node_id] += shift
    width = max((centre[n] + size[n][0] / 2 for n in nodes), default=0) + MARGIN
    height = max((top[n] + size[n][1] for n in nodes), default=0) + MARGIN

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}pt" '
        f'height="{height:.0f}pt" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="{FONT_SIZE}">',
        "<title>lineage</title>",
        '<defs><marker id="ackpt-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{LINE}" stroke="{LINE}"/></marker></defs>',
    ]
    for edge in model.edges:
        x1, y1 = centre[edge.parent], top[edge.parent] + size[edge.parent][1]
        x2, y2 = centre[edge.child], top[edge.child]
        middle = (y1 + y2) / 2
        out.append(
            f'<g class="edge"><path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{middle:.1f} {x2:.1f},{middle:.1f} '
            f'{x2:.1f},{y2:.1f}" fill="none" stroke="{LINE}" marker-end="url(#ackpt-arrow)"/>'
            f'<text x="{(x1 + x2) / 2 + 5:.1f}" y="{middle + 3:.1f}" font-size="9" fill="{LABEL}">'
            f"{html.escape(edge.relation)}</text></g>"
        )
    for node_id, node in nodes.items():
        w, h = size[node_id]
        x, y = centre[node_id] - w / 2, top[node_id]
        fill = COLOURS["focus"] if node.focus else COLOURS.get(node.kind, COLOURS["other"])
        stroke = FOCUS_LINE if node.focus else LINE
        dash = ' stroke-dasharray="4,3"' if node.kind in ("missing", "collapsed") else ""
        out.append(
            f'<g class="node{" focus" if node.focus else ""}"><title>{html.escape(node.id)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="5" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{2.5 if node.focus else 1}"{dash}/>'
        )
        for i, line in enumerate(node.lines):
            weight = ' font-weight="bold"' if i == 0 else ""
            out.append(
                f'<text x="{centre[node_id]:.1f}" y="{y + PAD_Y + (i + 1) * LINE_HEIGHT - 3:.1f}" '
                f'text-anchor="middle" fill="{INK}"{weight}>{html.escape(line)}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
