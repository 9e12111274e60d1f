"""Rendering lineage graphs to SVG: Debian's dot, the pip-installed graphviz-pure, the built-in layout.

Tests that need a program are skipped when it is missing; others hide the programs from
PATH to check the fallbacks that a JupyterHub user without root gets.
"""

from __future__ import annotations

import os
import shutil
import stat
import xml.etree.ElementTree as ET

import pytest

from anemoi_ckpt_nb.errors import RenderError
from anemoi_ckpt_nb.notebook import render
from anemoi_ckpt_nb.notebook.graph import LineageGraph

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot (apt-get install graphviz)")
needs_pure = pytest.mark.skipif(
    render.find_program("graphviz-pure") is None, reason="needs graphviz-pure (pip install graphviz-pure)"
)
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def graph() -> LineageGraph:
    records = [
        {"uuid": "root", "name": "base e1", "kind": "training", "global_step": 100, "parents": [], "tags": [HOSTILE]},
        {"uuid": "mid", "name": "base e2 & more", "kind": "training", "global_step": 200,
         "parents": [{"uuid": "root", "relation": "resumed-from"}], "tags": []},
        {"uuid": "fork", "name": HOSTILE, "kind": "training", "global_step": 50,
         "parents": [{"uuid": "root", "relation": "forked-from"}], "tags": []},
        {"uuid": "inf", "name": "inference", "kind": "inference",
         "parents": [{"uuid": "mid", "relation": "converted-from"}], "tags": ["production-ready"]},
    ]
    return LineageGraph.from_records(records, "root")


def check_svg(svg: str) -> ET.Element:
    """Well-formed SVG, every label present once and escaped."""
    assert svg.lstrip().startswith(("<svg", "<!--"))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter() if t.tag.endswith("text") and t.text]
    assert "<script" not in svg
    for label in ("base e1", "base e2 & more", HOSTILE, "inference", "tags: production-ready"):
        assert label in texts, (label, texts)
    for relation in ("resumed-from", "forked-from", "converted-from"):
        assert relation in texts
    return root


@pytest.fixture
def hide_programs(monkeypatch, tmp_path):
    """Make the named programs unfindable: PATH and the Python's own scripts folder."""

    def hide(*names: str) -> None:
        original = render.find_program

        def find(name: str) -> str | None:
            return None if name in names else original(name)

        monkeypatch.setattr(render, "find_program", find)
        empty = tmp_path / "empty-bin"
        empty.mkdir(exist_ok=True)
        monkeypatch.setenv("PATH", str(empty))

    return hide


@needs_dot
def test_dot_renders_through_graphviz_package(graph):
    svg = graph.svg(renderer="dot")
    check_svg(svg)
    assert "graphviz-pure" not in svg.split("<svg", 1)[0]
    assert not svg.startswith("<?xml")


@needs_pure
def test_graphviz_pure_renders_the_same_graph(graph):
    svg = graph.svg(renderer="graphviz-pure")
    check_svg(svg)
    assert "(graphviz-pure)" in svg.split("<svg", 1)[0]


def test_builtin_layout_draws_every_node_edge_and_the_focus(graph):
    root = check_svg(graph.svg(renderer="builtin"))
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in root.iter(f"{ns}g")]
    nodes = [g for g in groups if g.get("class", "").startswith("node")]
    edges = [g for g in groups if g.get("class") == "edge"]
    assert len(nodes) == 4 and len(edges) == 3
    focus = [g for g in nodes if g.get("class") == "node focus"]
    assert len(focus) == 1 and focus[0].find(f"{ns}title").text == "root"
    # Children are drawn below their parents (parents above, as dot does with rankdir=TB).
    top = {g.find(f"{ns}title").text: float(g.find(f"{ns}rect").get("y")) for g in nodes}
    assert top["root"] < top["mid"] < top["inf"]
    assert top["root"] < top["fork"]
    # Boxes on one layer do not overlap.
    boxes = {g.find(f"{ns}title").text: g.find(f"{ns}rect") for g in nodes}
    a, b = boxes["mid"], boxes["fork"]
    ax, aw, bx, bw = (float(a.get("x")), float(a.get("width")), float(b.get("x")), float(b.get("width")))
    assert ax + aw <= bx or bx + bw <= ax


def test_auto_prefers_dot_then_graphviz_pure_then_builtin(graph, hide_programs):
    expected = [name for name in ("dot", "graphviz-pure") if render.find_program(name)] + ["builtin"]
    assert render.available_renderers() == expected
    hide_programs("dot")
    assert render.available_renderers() == [n for n in expected if n != "dot"]
    svg = graph.svg()
    if "graphviz-pure" in expected:
        assert "(graphviz-pure)" in svg.split("<svg", 1)[0]
    hide_programs("dot", "graphviz-pure")
    assert render.available_renderers() == ["builtin"]
    assert 'class="ackpt-lineage"' in LineageGraph(graph.model).svg()


def test_graphviz_pure_is_found_beside_python_when_not_on_path(monkeypatch, tmp_path):
    if render.find_program("graphviz-pure") is None:
        pytest.skip("needs graphviz-pure (pip install graphviz-pure)")
    # A JupyterHub kernel started from a venv often has no venv/bin on PATH.
    monkeypatch.setenv("PATH", str(tmp_path))
    assert render.find_program("graphviz-pure") is not None
    assert render.find_program("dot") is None


def test_broken_dot_falls_back_in_auto_and_fails_clearly_when_asked_for(graph, monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Format: \"svg\" not recognized. No formats found.' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + os.environ["PATH"])
    svg = LineageGraph(graph.model).svg()
    assert "<svg" in svg  # drawn by the next renderer
    with pytest.raises(RenderError, match="lineage renderer 'dot'"):
        LineageGraph(graph.model).svg(renderer="dot")


def test_environment_variable_and_unknown_renderer(graph, monkeypatch):
    monkeypatch.setenv(render.ENV_VAR, "builtin")
    assert 'class="ackpt-lineage"' in LineageGraph(graph.model).svg()
    with pytest.raises(RenderError, match="unknown renderer; use one of dot, graphviz-pure, builtin"):
        graph.svg(renderer="neato")


def test_missing_program_asked_for_by_name(graph, hide_programs):
    hide_programs("dot", "graphviz-pure")
    with pytest.raises(RenderError, match="program not found .*pip install graphviz-pure"):
        LineageGraph(graph.model).svg(renderer="graphviz-pure")
    # DOT text alone cannot be laid out by the built-in renderer.
    with pytest.raises(RenderError, match="needs the graph model"):
        render.render_svg(graph.source)


@pytest.mark.parametrize("renderer", render.RENDERERS)
def test_every_renderer_draws_transparent_with_theme_tokens_only(graph, renderer):
    from anemoi_ckpt_nb.notebook import model

    if renderer != "builtin" and render.find_program(renderer) is None:
        pytest.skip(f"needs {renderer} ({render.INSTALL_HINT})")
    svg = graph.svg(renderer=renderer)
    root = check_svg(svg)
    assert "ackpt-lineage" in root.get("class", "")
    # Every colour drawn is a token the stylesheet inside repaints from the theme: no white
    # background rectangle, no colour of the renderer's own.
    tokens = {*model.COLOURS.values(), model.INK, model.LINE, model.FOCUS_LINE, model.LABEL}
    painted = {
        element.get(attribute).lower()
        for element in root.iter()
        for attribute in ("fill", "stroke")
        if element.get(attribute) not in (None, "none", "transparent")
    }
    assert painted <= tokens, painted - tokens
    style = "".join(element.text or "" for element in root.iter() if element.tag.endswith("style"))
    assert all(f'"{token}" i]' in style for token in tokens)
