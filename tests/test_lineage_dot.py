"""The lineage model and DOT builder: selection by depth and direction, collapsing, escaping."""

from __future__ import annotations

import re

import pytest

from anemoi_ckpt_nb.errors import NotRegisteredError, RenderError
from anemoi_ckpt_nb.notebook.graph import LineageGraph, dot_string, lineage_dot, lineage_model


def chain(prefix: str, length: int, *, parent: str | None = None, relation: str = "resumed-from",
          run_id: str = "run-a", first_relation: str | None = None, kind: str = "training") -> list[dict]:
    records = []
    for i in range(length):
        uuid = f"{prefix}-{i:02d}"
        link = []
        if parent is not None:
            link = [{"uuid": parent, "relation": first_relation if (i == 0 and first_relation) else relation}]
        records.append({"uuid": uuid, "name": f"{prefix} {i}", "kind": kind, "run_id": run_id,
                        "global_step": 100 * (i + 1), "parents": link, "tags": []})
        parent = uuid
    return records


@pytest.fixture
def family() -> list[dict]:
    """base-00..05; resumed: 6 more after base-05; a fork from base-02; an inference of the fork's last."""
    base = chain("base", 6)
    resumed = chain("res", 6, parent="base-05")
    fork = chain("fork", 3, parent="base-02", relation="resumed-from", first_relation="forked-from", run_id="run-b")
    inference = [{"uuid": "inf-0", "name": "inference of fork 2", "kind": "inference",
                  "parents": [{"uuid": "fork-02", "relation": "converted-from"}], "tags": ["production-ready"]}]
    return base + resumed + fork + inference


def node_ids(model) -> set[str]:
    return {node.id for node in model.nodes}


def test_ancestors_follow_parents_up_to_depth(family):
    model = lineage_model(family, "fork-01", direction="ancestors", collapse=None)
    assert node_ids(model) == {"fork-01", "fork-00", "base-02", "base-01", "base-00"}
    shallow = lineage_model(family, "fork-01", direction="ancestors", depth=2, collapse=None)
    assert node_ids(shallow) == {"fork-01", "fork-00", "base-02"}


def test_descendants_and_both(family):
    down = lineage_model(family, "base-02", direction="descendants", depth=1, collapse=None)
    assert node_ids(down) == {"base-02", "base-03", "fork-00"}
    both = lineage_model(family, "fork-02", direction="both", collapse=None)
    # Ancestors and descendants, not the siblings' lines (base-03.., res-..).
    assert node_ids(both) == {"base-00", "base-01", "base-02", "fork-00", "fork-01", "fork-02", "inf-0"}
    assert lineage_model(family, "fork-02", depth=0, collapse=None).nodes[0].id == "fork-02"


def test_family_is_the_default_and_shows_what_the_cli_prints():
    # Three saves of one run from scratch (no recorded links), then a resume from the last.
    run = [{"uuid": f"s{i}", "kind": "training", "run_id": "run-a", "global_step": 100 * i, "parents": [], "tags": []}
           for i in (1, 2, 3)]
    run.append({"uuid": "r4", "kind": "training", "run_id": "run-a", "global_step": 400,
                "parents": [{"uuid": "s3", "relation": "resumed-from"}], "tags": []})
    model = lineage_model(run, "s2", collapse=None)
    assert model.direction == "family" and node_ids(model) == {"s1", "s2", "s3", "r4"}
    assert {(e.parent, e.child, e.relation) for e in model.edges} == {
        ("s1", "s2", "continued-from"), ("s2", "s3", "continued-from"), ("s3", "r4", "resumed-from")}
    assert node_ids(lineage_model(run, "s2", depth=1, collapse=None)) == {"s1", "s2", "s3"}
    # Ancestors and descendants only, on request.
    assert node_ids(lineage_model(run, "s2", direction="both", collapse=None)) == {"s1", "s2", "s3", "r4"}
    assert node_ids(lineage_model(run, "s2", direction="ancestors", collapse=None)) == {"s1", "s2"}


def test_edges_point_from_parent_to_child_with_relation(family):
    model = lineage_model(family, "inf-0", direction="ancestors", collapse=None)
    edges = {(e.parent, e.child, e.relation) for e in model.edges}
    assert ("fork-02", "inf-0", "converted-from") in edges
    assert ("base-02", "fork-00", "forked-from") in edges
    assert ("fork-00", "fork-01", "resumed-from") in edges


def test_long_plain_chain_is_collapsed_with_count_and_steps(family):
    model = lineage_model(family, "res-05", direction="ancestors", collapse=4)
    collapsed = [node for node in model.nodes if node.kind == "collapsed"]
    assert len(collapsed) == 1
    # base-01 .. res-04: root base-00 and the focus stay; 10 plain links in between.
    assert collapsed[0].hidden == 10
    assert collapsed[0].lines[0] == "… 10 more …"
    assert collapsed[0].lines[1] == "steps 100–600"
    assert node_ids(model) == {"base-00", "res-05", collapsed[0].id}
    edges = {(e.parent, e.child, e.relation) for e in model.edges}
    assert edges == {("base-00", collapsed[0].id, "resumed-from"), (collapsed[0].id, "res-05", "resumed-from")}


def test_tagged_forked_and_short_runs_are_not_collapsed(family):
    for record in family:
        if record["uuid"] == "res-02":
            record["tags"] = ["candidate"]
    model = lineage_model(family, "res-05", direction="ancestors", collapse=4)
    ids = node_ids(model)
    assert "res-02" in ids  # tagged: kept, and it splits the run
    hidden = sorted(node.hidden for node in model.nodes if node.kind == "collapsed")
    # base-01..res-01 (7 links) collapsed; res-03, res-04 (2) kept
    assert hidden == [7]
    assert {"res-03", "res-04"} <= ids
    # base-02 has two children (a fork point): never collapsed when in view.
    both = lineage_model(family, "base-02", collapse=1)
    assert "base-02" in node_ids(both)


def test_missing_parent_is_drawn_dashed():
    records = [{"uuid": "child", "kind": "training", "parents": [{"uuid": "gone", "relation": "resumed-from"}]}]
    model = lineage_model(records, "child")
    assert model.node("gone").kind == "missing"
    assert 'style="rounded,dashed,filled"' in lineage_dot(records, "child")


def test_focus_highlighted_and_nodes_show_kind_tags_step(family):
    source = lineage_dot(family, "fork-02", collapse=None)
    focus_line = next(line for line in source.splitlines() if line.strip().startswith('"fork-02" ['))
    assert "penwidth=2.5" in focus_line and 'fillcolor="#ffe082"' in focus_line
    assert 'label="fork 2\\ntraining · step 300"' in focus_line
    inference_line = next(line for line in source.splitlines() if line.strip().startswith('"inf-0" ['))
    assert "inference\\ntags: production-ready" in inference_line
    assert source.count("penwidth=2.5") == 1
    assert '"fork-02" -> "inf-0" [label="converted-from"];' in source


def test_labels_cannot_break_out_of_dot_strings():
    hostile = 'x" ]; evil [label="pwned'
    records = [
        {"uuid": 'u"1', "name": hostile, "kind": "training", "global_step": 1, "parents": [],
         "tags": ["a\\Nb", "<script>alert(1)</script>"]},
        {"uuid": "u2", "name": "back\\slash new\nline", "kind": "training", "parents": [{"uuid": 'u"1', "relation": 'r"]'}]},
    ]
    source = lineage_dot(records, "u2")
    # Only our own statements: two nodes, one edge.
    statements = [line for line in source.splitlines() if line.startswith('  "')]
    assert len(statements) == 3
    assert 'label="x\\" ]; evil [label=\\"pwned' in source
    assert "a\\\\Nb" in source  # a literal backslash, not Graphviz's \N (node name) escape
    assert "back\\\\slash" in source
    assert "new line" in source  # a newline inside a value does not start a label line
    assert '"u\\"1" -> "u2" [label="r\\"]"];' in source
    assert dot_string("a\x00b\tc") == '"a b c"'


def test_long_names_and_many_tags_are_shortened():
    records = [{"uuid": "u", "name": "n" * 100, "kind": "training", "parents": [], "tags": ["t1", "t2", "t3", "t4", "t5"]}]
    node = lineage_model(records, "u").nodes[0]
    assert len(node.lines[0]) == 40 and node.lines[0].endswith("…")
    assert node.lines[2] == "tags: t1, t2, t3 +2"


def test_misuse_is_refused_clearly(family):
    with pytest.raises(NotRegisteredError, match="'nope'"):
        lineage_model(family, "nope")
    with pytest.raises(ValueError, match="direction must be one of family, ancestors, descendants, both"):
        lineage_model(family, "base-00", direction="up")
    with pytest.raises(ValueError, match="depth must be 0 or more"):
        lineage_model(family, "base-00", depth=-1)


def test_graph_object_source_text_and_repr(family):
    graph = LineageGraph.from_records(family, "fork-01", direction="ancestors", renderer="builtin")
    assert graph.source.startswith("digraph lineage {")
    text = graph.text()
    assert text.splitlines()[0] == "Lineage of fork-01 (ancestors, depth all)"
    assert "└── fork 0 | training · step 100  (forked-from)" in text
    assert text.splitlines()[-1].endswith("<==")  # the focus is marked
    assert repr(graph) == "<LineageGraph of fork-01: 5 nodes, 4 edges>"
    bundle = graph._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/svg+xml", "text/plain"}
    assert bundle["image/svg+xml"].startswith("<svg")
    # The HTML holds the same drawing inline (so the page's theme reaches it) and the text form.
    assert bundle["image/svg+xml"] in bundle["text/html"] and "ackpt-lineage-view" in bundle["text/html"]
    assert "└── fork 0 | training · step 100" in bundle["text/html"]
    assert set(graph._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    assert set(graph._repr_mimebundle_(exclude=["image/svg+xml", "text/html"])) == {"text/plain"}



def test_text_only_display_draws_nothing(family):
    # A renderer that cannot run must not break a front end that asked for text only.
    graph = LineageGraph.from_records(family, "fork-01", renderer="no-such-renderer")
    with pytest.raises(RenderError):
        graph.svg()
    assert graph._repr_mimebundle_(include=["text/plain"]) == {"text/plain": graph.text()}
    assert graph._repr_mimebundle_(exclude=["image/svg+xml", "text/html"]) == {"text/plain": graph.text()}

def test_dag_with_two_parents_is_drawn_once_and_text_marks_repeats():
    records = [
        {"uuid": "a", "kind": "training", "parents": []},
        {"uuid": "b", "kind": "training", "parents": [{"uuid": "a", "relation": "resumed-from"}]},
        {"uuid": "c", "kind": "training", "parents": [{"uuid": "a", "relation": "forked-from"}]},
        {"uuid": "d", "kind": "training", "parents": [{"uuid": "b", "relation": "fine-tuned-from"},
                                                       {"uuid": "c", "relation": "fine-tuned-from"}]},
    ]
    graph = LineageGraph.from_records(records, "d")
    assert len(graph.model.nodes) == 4 and len(graph.model.edges) == 4
    assert graph.text().count("(see above)") == 1
    assert len(re.findall(r'-> "d"', graph.source)) == 2


def test_fan_of_plain_siblings_keeps_the_newest_and_collapses_the_rest():
    # Anemoi: every checkpoint of a resumed session names the one it started from.
    start = {"uuid": "start", "name": "start", "kind": "training", "global_step": 300, "parents": [], "tags": []}
    saved = [
        {"uuid": f"r{i:02d}", "name": f"resumed {i}", "kind": "training", "global_step": 300 + 100 * i,
         "parents": [{"uuid": "start", "relation": "resumed-from"}], "tags": ["candidate"] if i == 3 else []}
        for i in range(1, 11)
    ]
    fork = {"uuid": "f1", "name": "fork", "kind": "training", "global_step": 10,
            "parents": [{"uuid": "start", "relation": "forked-from"}], "tags": []}
    model = lineage_model([start, *saved, fork], "start", collapse=4)
    ids = node_ids(model)
    # r03 is tagged and r10 is the newest: both stay; the other 8 become one node.
    assert {"start", "r03", "r10", "f1"} <= ids
    collapsed = [n for n in model.nodes if n.kind == "collapsed"]
    assert [(n.hidden, n.lines) for n in collapsed] == [(8, ("… 8 more …", "steps 400–1200"))]
    assert ("start", collapsed[0].id, "resumed-from") in {(e.parent, e.child, e.relation) for e in model.edges}
    assert len(lineage_model([start, *saved, fork], "start", collapse=None).nodes) == 12
