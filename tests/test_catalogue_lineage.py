"""Pure parts of the catalogue: lineage queries, retention plans, index merging, stored schemas."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from anemoi_ckpt_nb.catalogue import lineage
from anemoi_ckpt_nb.catalogue.events import delete_event, tags_event
from anemoi_ckpt_nb.catalogue.index import Index
from anemoi_ckpt_nb.errors import CatalogueError, NotRegisteredError
from anemoi_ckpt_nb.catalogue.policy import plan_clean
from anemoi_ckpt_nb.catalogue.schema import RetentionPolicy, TagState

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)


def entry(uuid: str, *, run: str | None = "run-a", step: int | None = 100, parents=(), tags=(), days_old: float = 0,
          kind: str = "training") -> dict:
    return {
        "uuid": uuid,
        "kind": kind,
        "run_id": run,
        "global_step": step,
        "epoch": None if step is None else step // 100,
        "parents": [{"uuid": p, "relation": r} for p, r in parents],
        "tags": list(tags),
        "registered_at": (NOW - dt.timedelta(days=days_old)).isoformat(),
        "size": 10,
        "filename": f"{uuid}.ckpt",
    }


@pytest.fixture
def family() -> list[dict]:
    """a1 a2 a3 (run a); r4 r5 resumed from a3; f1 f2 forked from a2; i5 converted from r5."""
    return [
        entry("a1", step=100), entry("a2", step=200), entry("a3", step=300),
        entry("r4", step=400, parents=[("a3", "resumed-from")]),
        entry("r5", step=500, parents=[("a3", "resumed-from")]),
        entry("f1", run="run-b", step=100, parents=[("a2", "forked-from")]),
        entry("f2", run="run-b", step=200, parents=[("a2", "forked-from")]),
        entry("i5", step=500, parents=[("r5", "converted-from")], kind="inference"),
    ]


# --- lineage ---------------------------------------------------------------------------------------


def test_ancestors_descendants_roots(family):
    graph = lineage.parents_map(family)
    assert lineage.ancestors(graph, "i5") == ["r5", "a3"]
    assert lineage.descendants(graph, "a3") == ["r4", "r5", "i5"]
    assert lineage.descendants(graph, "i5") == []
    assert lineage.roots(graph, "i5") == ["a3"]
    assert lineage.roots(graph) == ["a1", "a2", "a3"]
    with pytest.raises(NotRegisteredError):
        lineage.ancestors(graph, "nope")


def test_path_follows_links_both_ways(family):
    graph = lineage.parents_map(family)
    assert lineage.path(graph, "f1", "f2") == ["f1", "a2", "f2"]
    assert lineage.path(graph, "i5", "r4") == ["i5", "r5", "a3", "r4"]
    assert lineage.path(graph, "a3", "a3") == ["a3"]
    with pytest.raises(CatalogueError, match="share no lineage"):
        lineage.path(graph, "f1", "r4")


def test_text_tree_marks_the_checkpoint_and_relations(family):
    graph = lineage.parents_map(family)
    assert lineage.text_tree(graph, "i5") == "\n".join([
        "a3",
        "├── r4  (resumed-from)",
        "└── r5  (resumed-from)",
        "    └── i5  (converted-from)  <==",
    ])
    both = lineage.text_tree(graph, "f1", tops=["a1", "a2", "a3"])
    assert both.splitlines()[:4] == ["a1", "a2", "├── f1  (forked-from)  <==", "└── f2  (forked-from)"]


def test_text_tree_shows_a_second_parent_once_and_unregistered_parents():
    graph = {"a": [], "b": [], "c": [("a", "fine-tuned-from"), ("b", "resumed-from")], "d": [("ghost", "forked-from")]}
    tree = lineage.text_tree(graph, "c", tops=["a", "b"])
    assert tree.count("c  (") == 2 and "(see above)" in tree
    assert "ghost  (not registered)" in lineage.text_tree(graph, "d")
    assert lineage.ancestors(graph, "d") == ["ghost"]


def test_lineage_graph_chains_the_saves_of_each_session_by_step(family):
    graph = lineage.lineage_graph(family)
    # The run from scratch, the resume (from a3) and the fork (from a2): each a chain, one session each.
    assert graph["a1"] == [] and graph["a2"] == [("a1", "continued-from")] and graph["a3"] == [("a2", "continued-from")]
    assert graph["r4"] == [("a3", "resumed-from")] and graph["r5"] == [("r4", "continued-from")]
    assert graph["f1"] == [("a2", "forked-from")] and graph["f2"] == [("f1", "continued-from")]
    assert graph["i5"] == [("r5", "converted-from")]  # conversions are not part of the order
    assert lineage.parents_map(family)["a2"] == []  # what is recorded stays as it is
    assert lineage.roots(graph) == ["a1"]
    assert lineage.ancestors(graph, "f2") == ["f1", "a2", "a1"]


def test_saves_of_one_step_side_by_side_and_the_next_continues_from_a_named_one():
    saves = [
        entry("last", step=100) | {"filename": "last.ckpt"},
        entry("time", step=100) | {"filename": "anemoi-by_time-epoch_001-step_000100.ckpt"},
        entry("epoch", step=100) | {"filename": "anemoi-by_epoch-epoch_001-step_000100.ckpt"},
        entry("next", step=200),
        entry("nostep", step=None),
        entry("other-run", run="run-b", step=300),
    ]
    graph = lineage.lineage_graph(saves)
    assert graph["last"] == graph["time"] == graph["epoch"] == [] and graph["nostep"] == []
    # The by_epoch save, not last.ckpt, which the next save overwrites.
    assert graph["next"] == [("epoch", "continued-from")] and graph["other-run"] == []


def test_family_is_the_scope_of_every_view(family):
    graph = lineage.lineage_graph(family)
    tops, members = lineage.family(graph, "f2")
    assert tops == ["a1"] and sorted(members) == sorted(e["uuid"] for e in family)
    # Without the order, the first saves of a run are roots side by side: run_of brings them in.
    recorded = lineage.parents_map(family)
    assert lineage.family(recorded, "a1")[0] == ["a1"]
    run_of = {e["uuid"]: e["run_id"] for e in family}
    tops, members = lineage.family(recorded, "a1", run_of=run_of)
    assert tops == ["a1", "a2", "a3"] and set(members) == {e["uuid"] for e in family}
    with pytest.raises(NotRegisteredError):
        lineage.family(graph, "nope")


def test_parents_map_accepts_records_entries_and_pairs(family):
    from anemoi_ckpt_nb.catalogue.schema import ParentLink

    class Record:
        uuid = "x"
        parents = [ParentLink(uuid="a1", relation="fine-tuned-from")]

    graph = lineage.parents_map([*family, Record(), {"uuid": "y", "parents": [("x", "converted-from")]}])
    assert graph["x"] == [("a1", "fine-tuned-from")] and graph["y"] == [("x", "converted-from")]


# --- retention ---------------------------------------------------------------------------------------


def test_keep_last_spares_protected_and_ancestors(family):
    family[0]["tags"] = ["production-ready"]
    plan = plan_clean(family, policy=RetentionPolicy(keep_last=1), protected_tags=["production-ready"], now=NOW)
    assert sorted(d.uuid for d in plan.delete) == ["f1", "r4"]
    kept = {d.uuid: d.reason for d in plan.keep}
    assert kept == {
        "a1": "protected by tag production-ready",
        "a2": kept["a2"], "a3": kept["a3"],
    }
    assert "descendant" in kept["a2"] and "descendant" in kept["a3"]
    assert plan.freed_bytes == 20


def test_age_rule_drops_only_untagged_old_leaves(family):
    for e in family:
        e["registered_at"] = (NOW - dt.timedelta(days=40)).isoformat()
    family[-1]["tags"] = ["candidate"]  # i5: tagged, so not subject to the age rule
    family[4]["registered_at"] = (NOW - dt.timedelta(days=1)).isoformat()  # r5: recent
    plan = plan_clean(family, policy=RetentionPolicy(older_than_days=30), protected_tags=[], now=NOW)
    assert sorted(d.uuid for d in plan.delete) == ["a1", "f1", "f2", "r4"]
    assert all("30 days" in d.reason for d in plan.delete)


def test_no_rule_is_an_error(family):
    with pytest.raises(CatalogueError, match="keep_last") as caught:
        plan_clean(family, policy=RetentionPolicy(), protected_tags=[], now=NOW)
    assert "--keep-last" in caught.value.cli_text()


# --- index merging ------------------------------------------------------------------------------------


def put(uuid: str, generation: str = "g1") -> dict:
    e = entry(uuid)
    e["registered_at"] = generation
    return {"op": "put", "entry": e}


def tags(uuid: str, revision: int, names: list[str], generation: str = "g1") -> dict:
    return tags_event(TagState(uuid=uuid, generation=generation, revision=revision, tags=names))


def test_events_merge_in_any_order_to_the_same_index():
    events = [put("a"), tags("a", 1, ["x"]), tags("a", 2, ["x", "y"]), put("b"), delete_event("b", "g1"),
              tags("c", 1, ["early"]), put("c")]
    import itertools

    results = set()
    for order in itertools.islice(itertools.permutations(events), 0, None, 97):
        index = Index()
        for event in order:
            index.apply(event)
        for event in order:  # applying twice changes nothing
            index.apply(event)
        results.add(json.dumps({u: (e["tags"], e["tags_revision"]) for u, e in sorted(index.entries.items())}))
    assert results == {json.dumps({"a": (["x", "y"], 2), "c": (["early"], 1)})}


def test_snapshot_round_trip_keeps_pending_tags_and_tombstones():
    index = Index()
    for event in (put("a"), delete_event("a", "g1"), tags("z", 3, ["w"])):
        index.apply(event)
    again = Index.from_snapshot(index.to_snapshot(), etag="e")
    again.apply(put("a"))  # a stale put of the deleted registration
    assert "a" not in again.entries
    again.apply(put("a", generation="g2"))  # a new registration of the same uuid
    assert again.entries["a"]["registered_at"] == "g2"
    again.apply(put("z"))
    assert again.entries["z"]["tags"] == ["w"]


# --- stored documents match the published JSON Schemas -------------------------------------------


def test_stored_documents_validate_against_the_published_schemas(tmp_path, training_checkpoint):
    import jsonschema

    from anemoi_ckpt_nb.api import Catalogue
    from anemoi_ckpt_nb.catalogue.schema_export import SCHEMA_FOLDER
    from anemoi_ckpt_nb.catalogue import index, layout

    catalogue = Catalogue.create(tmp_path / "c")
    ck = catalogue.register(training_checkpoint.path, tags=["candidate"])
    storage = catalogue.store.storage
    documents = {
        "catalogue-descriptor": json.loads(storage.get(layout.DESCRIPTOR)[0]),
        "catalogue-record": json.loads(storage.get(layout.record_key(ck.uuid))[0]),
        "catalogue-tags": json.loads(storage.get(layout.tags_key(ck.uuid))[0]),
        "catalogue-index-delta": json.loads(storage.get(next(storage.list(layout.DELTAS)).key)[0]),
    }
    index.compact(storage)
    import gzip

    documents["catalogue-index-snapshot"] = json.loads(gzip.decompress(storage.get(layout.SNAPSHOT)[0]))
    for stem, document in documents.items():
        schema = json.loads((SCHEMA_FOLDER / f"{stem}.json").read_text())
        jsonschema.validate(document, schema)
    broken = dict(documents["catalogue-record"])
    del broken["sha256"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads((SCHEMA_FOLDER / "catalogue-record.json").read_text()))
