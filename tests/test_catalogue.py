"""The catalogue on every backend: memory, local folder and S3 (a real SeaweedFS server).

Each test runs three times through the ``catalogue`` fixture. Checkpoints are
small real files written by ``anemoi_ckpt_nb.examples``.
"""

from __future__ import annotations

import json
import shutil
import uuid as _uuid
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.catalogue import index as index_module
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.records import inspect_file, make_record
from anemoi_ckpt_nb.catalogue.register import import_records, register_paths, register_run
from anemoi_ckpt_nb.catalogue.search import search
from anemoi_ckpt_nb.errors import (
    AmbiguousReferenceError,
    CatalogueError,
    CatalogueNotFoundError,
    ConflictError,
    InvalidTagError,
    MissingParentError,
    NotRegisteredError,
    SchemaError,
    UuidClashError,
)

S3_OPTIONS = {"part_size": 5 * 1024 * 1024, "max_concurrency": 2}


@pytest.fixture
def project(tmp_path) -> dict[str, list[examples.ExampleCheckpoint]]:
    """A run of three epochs, a resume of its last epoch and a fork from its second: 7 files."""
    return examples.write_example_project(tmp_path / "checkpoints", weights_bytes=20_000)


def keys(catalogue: Catalogue, prefix: str) -> list[str]:
    return [info.key for info in catalogue.store.storage.list(prefix)]


# --- creating and opening ----------------------------------------------------------------


def test_open_missing_catalogue_says_how_to_create_it(catalogue_url):
    with pytest.raises(CatalogueNotFoundError) as caught:
        Catalogue(catalogue_url)
    # In Python terms for a Python caller; the command for the CLI's line.
    assert "Catalogue.create(" in str(caught.value) and "anemoi-ckpt init" in caught.value.cli_text()


@pytest.mark.parametrize("tag", ["bad tag<", "-candidate", ""])
def test_create_refuses_an_invalid_protected_tag_and_writes_nothing(catalogue_url, tag):
    with pytest.raises(InvalidTagError) as caught:
        Catalogue.create(catalogue_url, protected_tags=["production-ready", tag])
    assert caught.value.tag == tag
    with pytest.raises(CatalogueNotFoundError):
        Catalogue(catalogue_url)


def test_create_twice_is_refused_and_exist_ok_opens(catalogue_url):
    Catalogue.create(catalogue_url, protected_tags=["keep", "production-ready"])
    with pytest.raises(CatalogueError, match="already exists"):
        Catalogue.create(catalogue_url)
    again = Catalogue.create(catalogue_url, exist_ok=True)
    assert again.protected_tags == ["keep", "production-ready"]
    assert Catalogue(catalogue_url).protected_tags == ["keep", "production-ready"]


# --- registering -------------------------------------------------------------------------------


def test_register_records_the_file_its_metadata_and_blob(catalogue, training_checkpoint):
    ck = catalogue.register(training_checkpoint.path, name="first", tags=["candidate"])
    record = ck.record
    assert record.uuid == training_checkpoint.uuid == record.metadata_uuid
    assert (record.kind, record.format, record.run_id) == ("training", "anemoi", training_checkpoint.run_id)
    assert (record.epoch, record.global_step) == (training_checkpoint.epoch, training_checkpoint.global_step)
    assert record.parents == []
    assert record.size == training_checkpoint.path.stat().st_size
    assert record.blob == f"blobs/sha256/{record.sha256}"
    assert catalogue.store.storage.get(record.blob)[0] == training_checkpoint.path.read_bytes()
    assert record.dataset == "aifs-ea-an-oper-0001-mars-o96-2020-2020-6h-v1"
    assert record.code.modules["anemoi.training"] == examples.DEFAULT_MODULE_VERSIONS["anemoi.training"]
    assert record.code.git["anemoi.training"].startswith("3f2c1a9e")
    assert record.sizes.parameter_count > 0 and record.sizes.optimizer_bytes > record.sizes.weights_bytes
    assert record.registered_by.user and record.registered_by.host
    metadata = ck.metadata()
    # The metadata blob is the embedded anemoi.json, with the file's second uuid.
    assert metadata["uuid"] == training_checkpoint.embedded_uuid
    assert record.other_uuids == [training_checkpoint.embedded_uuid]
    assert metadata["dataset"] == training_checkpoint.metadata["dataset"]
    assert ck.tags == ["candidate"]
    for ref in (record.uuid, record.uuid[:8], "first", training_checkpoint.path.name):
        assert catalogue.get(ref).uuid == record.uuid


def test_records_are_create_only(catalogue, training_checkpoint):
    ck = catalogue.register(training_checkpoint.path)
    key = layout.record_key(ck.uuid)
    before = catalogue.store.storage.get(key)[0]
    with pytest.raises(ConflictError):
        catalogue.store.storage.put(key, b"{}", if_absent=True)
    with pytest.raises(ConflictError):
        catalogue.store.create_record(ck.record)
    assert catalogue.store.storage.get(key)[0] == before


def test_same_file_twice_or_from_two_places_is_stored_once(catalogue, training_checkpoint, tmp_path):
    first = catalogue.register(training_checkpoint.path)
    blobs = keys(catalogue, "blobs/")
    copy = tmp_path / "elsewhere" / "copy.ckpt"
    copy.parent.mkdir()
    shutil.copy(training_checkpoint.path, copy)
    (again,) = register_paths(catalogue.store, [copy])
    assert again.created is False
    assert again.record.registered_at == first.record.registered_at
    assert keys(catalogue, "blobs/") == blobs
    assert keys(catalogue, "records/") == [layout.record_key(first.uuid)]
    assert catalogue.register(training_checkpoint.path).record == first.record


def test_same_uuid_with_other_bytes_is_a_clear_error(catalogue, training_checkpoint, tmp_path):
    catalogue.register(training_checkpoint.path)
    impostor = examples.write_training_checkpoint(
        tmp_path / "impostor.ckpt", uuid=training_checkpoint.uuid, seed=99, weights_bytes=20_000
    )
    blobs = keys(catalogue, "blobs/")
    with pytest.raises(UuidClashError) as caught:
        catalogue.register(impostor.path)
    assert training_checkpoint.uuid in str(caught.value)
    assert "another file" in str(caught.value)
    assert keys(catalogue, "blobs/") == blobs  # refused before uploading anything


def test_unregistered_parent_is_refused_with_the_command_that_fixes_it(catalogue, project):
    resumed = project["resumed"][0]
    parent = project["base"][-1]
    hashed = []
    with pytest.raises(MissingParentError) as caught:
        catalogue.register(resumed.path, progress=hashed.append)
    assert hashed == []  # refused from the metadata, before reading the file's bytes
    error = caught.value
    assert error.missing == [parent.uuid]
    assert parent.uuid in str(error)
    assert f"anemoi-ckpt register {parent.path}" in str(error)
    assert keys(catalogue, "records/") == [] and keys(catalogue, "blobs/") == []


def test_parent_whose_file_is_unknown_gets_a_placeholder_command(catalogue, tmp_path):
    orphan = examples.write_training_checkpoint(
        tmp_path / "lonely" / "x.ckpt", parent_uuid=str(_uuid.uuid4()), weights_bytes=20_000
    )
    with pytest.raises(MissingParentError) as caught:
        catalogue.register(orphan.path)
    assert f"anemoi-ckpt register PATH_OF_{orphan.parent_uuid}" in str(caught.value)
    ck = catalogue.register(orphan.path, allow_missing_parents=True)
    assert [(p.uuid, p.relation) for p in ck.parents] == [(orphan.parent_uuid, "resumed-from")]


def test_parents_given_in_the_same_call_are_registered_first(catalogue, project):
    child, parent = project["resumed"][0], project["base"][-1]
    registered = catalogue.register_many([child.path, parent.path])
    assert [c.uuid for c in registered] == [parent.uuid, child.uuid]
    assert [(p.uuid, p.relation) for p in registered[1].parents] == [(parent.uuid, "resumed-from")]


def test_register_run_links_resumes_and_forks(catalogue, project):
    folder = project["base"][0].path.parent.parent
    registered = catalogue.register_run(folder)
    assert len(registered) == 7 == len(catalogue)
    base, resumed, forked = project["base"], project["resumed"], project["forked"]
    by_uuid = {c.uuid: c for c in registered}
    for ck in resumed:
        assert [(p.uuid, p.relation) for p in by_uuid[ck.uuid].parents] == [(base[-1].uuid, "resumed-from")]
    for ck in forked:
        assert [(p.uuid, p.relation) for p in by_uuid[ck.uuid].parents] == [(base[1].uuid, "forked-from")]
        assert by_uuid[ck.uuid].record.fork_run_id == base[0].run_id
    # Successive saves of one session continue from each other; the fork's first save came from base[1].
    assert [c.uuid for c in catalogue.get(forked[1].uuid).ancestors()] == [forked[0].uuid, base[1].uuid, base[0].uuid]
    assert {c.uuid for c in catalogue.get(base[1].uuid).descendants()} == {c.uuid for c in [base[2], *resumed, *forked]}
    path = catalogue.path(forked[0].uuid, forked[1].uuid)
    assert [c.uuid for c in path] == [forked[0].uuid, forked[1].uuid]
    path = catalogue.path(forked[0].uuid, resumed[0].uuid)
    assert [c.uuid for c in path] == [forked[0].uuid, base[1].uuid, base[2].uuid, resumed[0].uuid]
    # The records keep what the files say: the derived order is never stored.
    assert [p.relation for p in catalogue.get(forked[1].uuid).parents] == ["forked-from"]
    # A second run over the same folder changes nothing.
    assert all(not r.created for r in register_run(catalogue.store, [folder]))
    assert len(keys(catalogue, "records/")) == 7


def test_inference_file_sharing_the_training_uuid_gets_a_derived_uuid(catalogue, tmp_path):
    training = examples.write_training_checkpoint(tmp_path / "run" / "last.ckpt", weights_bytes=20_000)
    inference = examples.write_inference_checkpoint(tmp_path / "run" / "inference-last.ckpt", source=training)
    assert inference.uuid == training.uuid  # as anemoi-training writes them
    with pytest.raises(MissingParentError) as caught:
        catalogue.register(inference.path)
    assert f"anemoi-ckpt register {training.path}" in str(caught.value)
    registered = catalogue.register_many([inference.path, training.path])
    assert [c.kind for c in registered] == ["training", "inference"]
    derived = registered[1].record
    assert derived.uuid == layout.derived_uuid(training.uuid, derived.sha256) != training.uuid
    assert derived.metadata_uuid == training.uuid
    assert [(p.uuid, p.relation) for p in derived.parents] == [(training.uuid, "converted-from")]
    assert catalogue.register(inference.path).record == derived  # the same uuid again: a no-op


def test_interrupted_registration_leaves_no_record(catalogue, training_checkpoint):
    size = training_checkpoint.path.stat().st_size
    seen = 0

    class Interrupted(BaseException):
        pass

    def fail_during_upload(nbytes: int) -> None:
        nonlocal seen
        seen += nbytes
        if seen > size:  # hashing reads the file once; the upload comes next
            raise Interrupted

    with pytest.raises(Interrupted):
        catalogue.register(training_checkpoint.path, progress=fail_during_upload)
    assert keys(catalogue, "records/") == []
    assert catalogue.search() == []
    with pytest.raises(NotRegisteredError):
        catalogue.get(training_checkpoint.uuid)
    ck = catalogue.register(training_checkpoint.path)
    assert catalogue.get(training_checkpoint.uuid) == ck


def test_upload_false_keeps_only_record_and_metadata(catalogue, training_checkpoint, tmp_path):
    ck = catalogue.register(training_checkpoint.path, upload=False)
    assert ck.record.blob is None
    assert keys(catalogue, "blobs/") == [ck.record.metadata_blob]
    with pytest.raises(CatalogueError, match="registered without its file"):
        ck.download(tmp_path)


# --- tags, search ------------------------------------------------------------------------------------


def test_tags_change_with_history_and_are_searchable(catalogue, project):
    catalogue.register_run(project["base"][0].path.parent)
    first, second = project["base"][0].uuid, project["base"][1].uuid
    catalogue.get(first).tag("candidate", "production-ready")
    assert catalogue.tag(second, "candidate") == ["candidate"]
    catalogue.get(first).untag("candidate")
    assert [c.uuid for c in catalogue.search(tags=["candidate"])] == [second]
    assert [c.uuid for c in catalogue.search(tags=["production-ready"])] == [first]
    history = catalogue.get(first).tag_history()
    assert [(e.action, e.tag) for e in history] == [
        ("add", "candidate"), ("add", "production-ready"), ("remove", "candidate"),
    ]
    assert all(e.by.user and e.at for e in history)
    assert catalogue.get(first).tags == ["production-ready"]
    # A fresh catalogue object (another process) sees the same.
    other = Catalogue(catalogue.url)
    assert [c.uuid for c in other.search(tags=["candidate"])] == [second]
    with pytest.raises(InvalidTagError):
        catalogue.tag(first, "-oops")
    with pytest.raises(InvalidTagError):
        catalogue.tag(first, "two words")


def test_a_tag_named_twice_is_one_change_and_no_change_writes_nothing(catalogue, training_checkpoint):
    ck = catalogue.register(training_checkpoint.path)
    assert catalogue.tag(ck.uuid, "a", "a", "b") == ["a", "b"]
    ck.untag("b", "b")
    assert [(e.action, e.tag) for e in ck.tag_history()] == [("add", "a"), ("add", "b"), ("remove", "b")]
    etag = catalogue.store.storage.stat(layout.tags_key(ck.uuid)).etag
    ck.tag("a").untag("b")
    assert catalogue.store.storage.stat(layout.tags_key(ck.uuid)).etag == etag


def test_search_filters_and_pandas(catalogue, project):
    catalogue.register_run(project["base"][0].path.parent.parent)
    run = project["forked"][0].run_id
    assert {c.uuid for c in catalogue.search(run_id=run[:8])} == {c.uuid for c in project["forked"]}
    assert len(catalogue.search(kind="training")) == 7
    assert catalogue.search(kind="inference") == []
    assert len(catalogue.search(text="EPOCH_002")) == 2
    with pytest.raises(CatalogueError, match="unknown kind"):
        catalogue.search(kind="weights")
    frame = catalogue.to_pandas()
    assert len(frame) == 7
    assert {"uuid", "kind", "run_id", "tags", "global_step", "registered_at"} <= set(frame.columns)
    assert str(frame["registered_at"].dtype).startswith("datetime64")


def test_ambiguous_reference_lists_candidates(catalogue, project):
    catalogue.register_run(project["base"][0].path.parent.parent)
    name = project["base"][0].path.name  # the same file name in both runs
    with pytest.raises(AmbiguousReferenceError) as caught:
        catalogue.get(name)
    assert len(caught.value.candidates) == 2


# --- download ---------------------------------------------------------------------------------------


def test_download_gives_back_the_same_bytes(catalogue, training_checkpoint, tmp_path):
    ck = catalogue.register(training_checkpoint.path)
    target = tmp_path / "out"
    target.mkdir()
    path = catalogue.download(ck.uuid[:6], target)
    assert path == target / training_checkpoint.path.name
    assert path.read_bytes() == training_checkpoint.path.read_bytes()


def test_interrupted_download_resumes(catalogue, training_checkpoint, tmp_path):
    ck = catalogue.register(training_checkpoint.path)

    class Interrupted(BaseException):
        pass

    def stop(nbytes: int) -> None:
        raise Interrupted

    dest = tmp_path / "copy.ckpt"
    with pytest.raises(Interrupted):
        ck.download(dest, progress=stop)
    assert not dest.exists()
    assert ck.download(dest).read_bytes() == training_checkpoint.path.read_bytes()


# --- clean ------------------------------------------------------------------------------------------


def test_clean_never_deletes_protected_or_ancestors(catalogue, project):
    catalogue.register_run(project["base"][0].path.parent.parent)
    base, resumed, forked = project["base"], project["resumed"], project["forked"]
    catalogue.tag(base[0].uuid, "production-ready")
    plan = catalogue.clean(keep_last=1)
    assert plan.applied is False and len(catalogue) == 7  # dry run by default
    reasons = {d.uuid: d.reason for d in plan.keep}
    assert "production-ready" in reasons[base[0].uuid]
    assert "descendant" in reasons[base[1].uuid]  # the fork's parent
    assert "descendant" in reasons[base[2].uuid]  # the resume's parent
    doomed = {d.uuid for d in plan.delete}
    assert doomed == {resumed[0].uuid, forked[0].uuid}
    applied = catalogue.clean(keep_last=1, dry_run=False)
    assert {d.uuid for d in applied.delete} == doomed
    remaining = {c.uuid for c in catalogue.search()}
    assert remaining == {base[0].uuid, base[1].uuid, base[2].uuid, resumed[1].uuid, forked[1].uuid}
    assert {layout.uuid_of_key(k) for k in keys(catalogue, "records/")} == remaining
    blobs = set(keys(catalogue, "blobs/"))
    for uuid in doomed:
        assert not any(uuid in k for k in keys(catalogue, "tags/"))
    assert len([b for b in blobs]) == 2 * len(remaining)  # file + metadata of each survivor
    # Everything unprotected and childless goes with an age rule; ancestors and protected stay.
    catalogue.clean(older_than_days=1e-9, dry_run=False)
    remaining = {c.uuid for c in catalogue.search()}
    assert remaining == {base[0].uuid, base[1].uuid, base[2].uuid}


def test_clean_without_a_rule_says_what_to_give(catalogue):
    with pytest.raises(CatalogueError, match="keep_last") as caught:
        catalogue.clean()
    assert "--keep-last" in caught.value.cli_text()


def test_clean_keeps_a_blob_another_record_still_uses(catalogue, tmp_path):
    training = examples.write_training_checkpoint(tmp_path / "run" / "a.ckpt", weights_bytes=20_000)
    original = catalogue.register(training.path).record
    # A second record naming the same bytes (as an import from another site would).
    twin = original.model_copy(update={"uuid": str(_uuid.uuid4()), "name": "twin"})
    assert import_records(catalogue.store, [twin]) == 1
    catalogue.tag(twin.uuid, "production-ready")
    plan = catalogue.clean(older_than_days=1e-9, dry_run=False)
    assert [d.uuid for d in plan.delete] == [original.uuid]
    assert [c.uuid for c in catalogue.search()] == [twin.uuid]
    assert catalogue.store.storage.exists(original.blob)
    assert catalogue.get("twin").download(tmp_path / "back.ckpt").read_bytes() == training.path.read_bytes()


def test_clean_deletes_the_aliases_of_the_record_and_lists_them(catalogue, tmp_path):
    training = examples.write_training_checkpoint(tmp_path / "run" / "a.ckpt", weights_bytes=20_000)
    record = catalogue.register(training.path).record
    alias = layout.alias_key(training.embedded_uuid)
    assert record.other_uuids == [training.embedded_uuid] and catalogue.store.storage.exists(alias)
    # An alias of another record that this record names too is not its to delete.
    other = examples.write_training_checkpoint(tmp_path / "run" / "b.ckpt", weights_bytes=20_000)
    kept = catalogue.register(other.path, tags=["production-ready"]).record
    catalogue.store.storage.put(
        layout.record_key(record.uuid),
        layout.dump(record.model_copy(update={"other_uuids": [training.embedded_uuid, other.embedded_uuid]})),
    )
    plan = catalogue.clean(older_than_days=1e-9)
    [doomed] = plan.delete
    assert f"{catalogue.url}/{alias}" in doomed.files
    assert not any(other.embedded_uuid in f for f in doomed.files)
    catalogue.clean(older_than_days=1e-9, dry_run=False)
    assert not catalogue.store.storage.exists(alias)
    assert catalogue.store.storage.exists(layout.alias_key(other.embedded_uuid))
    assert catalogue.get(other.embedded_uuid).uuid == kept.uuid
    # The file registered again files its other uuid afresh.
    again = catalogue.register(training.path).record
    assert catalogue.get(training.embedded_uuid).uuid == again.uuid


# --- the index ------------------------------------------------------------------------------------------


def test_index_compacts_and_matches_the_records(catalogue, project, monkeypatch):
    monkeypatch.setattr(index_module, "COMPACT_EVERY", 3)
    catalogue.register_run(project["base"][0].path.parent.parent)
    for ck in catalogue.search():
        ck.tag("seen")
    storage = catalogue.store.storage
    assert storage.exists(layout.SNAPSHOT)
    assert len(keys(catalogue, layout.DELTAS)) < 3
    fresh = Catalogue(catalogue.url)
    assert {c.uuid for c in fresh.search(tags=["seen"])} == {layout.uuid_of_key(k) for k in keys(catalogue, "records/")}


def test_rebuild_finds_a_record_whose_index_delta_was_lost(catalogue, tmp_path):
    ck = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    facts = inspect_file(ck.path)
    catalogue.store.create_record(make_record(facts, parents=[], name=None, blob=None, metadata_blob=None))
    assert search(catalogue.store) == []  # the writer "crashed" before its delta
    assert catalogue.get(ck.uuid).uuid == ck.uuid  # exact lookups read records/ directly
    assert catalogue.rebuild_index() == 1
    assert [e["uuid"] for e in search(Catalogue(catalogue.url).store)] == [ck.uuid]


def test_registering_again_repairs_a_missing_index_entry(catalogue, tmp_path):
    ck = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    facts = inspect_file(ck.path)
    catalogue.store.create_record(make_record(facts, parents=[], name=None, blob=None, metadata_blob=None))
    catalogue.register(ck.path)
    assert [c.uuid for c in Catalogue(catalogue.url).search()] == [ck.uuid]


def test_registering_again_restores_blobs_removed_outside(catalogue, training_checkpoint, tmp_path):
    ck = catalogue.register(training_checkpoint.path)
    metadata = ck.metadata()
    catalogue.store.storage.delete(ck.record.blob)
    catalogue.store.storage.delete(ck.record.metadata_blob)
    with pytest.raises(CatalogueError, match="missing"):
        catalogue.get(ck.uuid).metadata()
    again = catalogue.register(training_checkpoint.path)  # what the error's hint says to do
    assert again.record == ck.record
    assert catalogue.get(ck.uuid).metadata() == metadata
    out = catalogue.get(ck.uuid).download(tmp_path / "out.ckpt")
    assert out.read_bytes() == training_checkpoint.path.read_bytes()


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'{"version": "1.0", "uuid": "someone-else"}', "no longer match their sha256"),
    ],
)
def test_a_damaged_metadata_blob_is_a_schema_error_and_registering_again_repairs_it(tmp_path, training_checkpoint, damage, what):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    ck = catalogue.register(training_checkpoint.path)
    metadata = ck.metadata()
    key = ck.record.metadata_blob
    (tmp_path / "catalogue" / key).write_bytes(damage)  # damaged on disk, outside anemoi-ckpt
    with pytest.raises(SchemaError) as caught:
        catalogue.get(ck.uuid).metadata()
    message = str(caught.value)
    assert ck.uuid in message and key in message and what in message
    assert caught.value.hint == "register the file again to restore it"
    catalogue.register(training_checkpoint.path)  # what the hint says to do
    assert catalogue.get(ck.uuid).metadata() == metadata


def test_a_damaged_record_that_is_not_a_json_object_is_a_schema_error(catalogue):
    uuid = str(_uuid.uuid4())
    catalogue.store.storage.put(layout.record_key(uuid), b"[1, 2]")
    with pytest.raises(SchemaError, match="not a record document"):
        catalogue.store.read_record(uuid)


def test_index_read_survives_a_concurrent_compaction(catalogue, tmp_path):
    first = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    catalogue.register(first.path)
    cached = catalogue.store.index()
    template = catalogue.get(first.uuid).record
    for i in range(5):
        import_records(catalogue.store, [template.model_copy(update={"uuid": str(_uuid.uuid4())})])
    assert index_module.compact(catalogue.store.storage)  # deltas the cache applied are gone now
    merged = index_module.load(catalogue.store.storage, cached)
    assert len(merged) == 6 == len(Catalogue(catalogue.url))


def test_record_json_is_readable_and_versioned(catalogue, training_checkpoint):
    ck = catalogue.register(training_checkpoint.path, tags=["x"])
    document = json.loads(catalogue.store.storage.get(layout.record_key(ck.uuid))[0])
    assert document["schema_version"] == 1 and document["uuid"] == ck.uuid
    tags = json.loads(catalogue.store.storage.get(layout.tags_key(ck.uuid))[0])
    assert tags["schema_version"] == 1 and tags["tags"] == ["x"] and tags["history"][0]["action"] == "add"
    descriptor = json.loads(catalogue.store.storage.get(layout.DESCRIPTOR)[0])
    assert descriptor["protected_tags"] == ["production-ready"] and descriptor["sites"] == []


def test_repr_is_plain_text(catalogue, training_checkpoint):
    ck = catalogue.register(training_checkpoint.path, tags=["candidate"])
    assert repr(catalogue) == f"<Catalogue {catalogue.url}: 1 checkpoint (1 training); tags: candidate (1)>"
    assert repr(ck).startswith(f"<Checkpoint {ck.uuid} training run=") and "tags=candidate" in repr(ck)


def test_default_catalogue_is_created_in_the_configured_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ANEMOI_CKPT_CATALOGUE", str(tmp_path / "mine"))
    catalogue = Catalogue()
    assert (tmp_path / "mine" / "catalogue.json").exists()
    assert len(catalogue) == 0
    monkeypatch.delenv("ANEMOI_CKPT_CATALOGUE")
    assert Path(Catalogue().url.removeprefix("file://")).is_relative_to(tmp_path / "xdg-data")


def test_the_index_does_not_read_twice_what_it_has(tmp_path):
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore
    from anemoi_ckpt_nb.storage.memory import MemoryStorage

    class CountingStorage(MemoryStorage):
        """A real in-memory store that notes which objects are read."""

        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.reads: list[str] = []

        def get(self, key: str) -> tuple[bytes, str]:
            self.reads.append(key)
            return super().get(key)

    storage = CountingStorage(f"counting-{_uuid.uuid4().hex}")
    store = CatalogueStore.create(storage)
    store.index()
    ck = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    register_paths(store, [ck.path], tags=["seen"])
    storage.reads.clear()
    assert [e["tags"] for e in store.index().entries.values()] == [["seen"]]
    assert [k for k in storage.reads if k.startswith(layout.DELTAS)] == []  # this store wrote them
    index_module.compact(storage)
    fresh = CatalogueStore.open(storage)
    storage.reads.clear()
    assert len(fresh.index()) == 1
    assert storage.reads == [layout.SNAPSHOT]  # one read of the snapshot, no HEAD-then-GET


# --- run manifests -----------------------------------------------------------------------------------


def test_fork_manifests_are_read_once_per_catalogue_object_not_once_per_register(tmp_path):
    from anemoi_ckpt_nb.storage.local import LocalStorage

    class CountingStorage(LocalStorage):
        """The real local backend, counting the manifests it reads."""

        manifest_reads = 0

        def get(self, key):
            if key.startswith(layout.MANIFESTS):
                type(self).manifest_reads += 1
            return super().get(key)

    url = tmp_path / "catalogue"
    Catalogue.create(url)
    catalogue = Catalogue(storage=CountingStorage(url))
    parent = examples.write_training_checkpoint(tmp_path / "parent" / "p.ckpt", weights_bytes=20_000)
    catalogue.register(parent.path)
    storage = catalogue.store.storage
    for i in range(40):  # other runs' manifests, none of them a fork of what we register
        document = {"mode": "resume", "run_id": _uuid.uuid4().hex, "created_at": f"2026-01-01T00:00:{i:02d}Z"}
        storage.put(f"{layout.MANIFESTS}{_uuid.uuid4()}.json", json.dumps(document).encode())
    CountingStorage.manifest_reads = 0
    for i in range(3):  # a callback registers each checkpoint of a run by itself
        ck = examples.write_training_checkpoint(tmp_path / "run" / f"{i}.ckpt", weights_bytes=20_000, epoch=i)
        assert catalogue.register(ck.path).record.parents == []
    assert CountingStorage.manifest_reads == 40
    # A weights-only fork planned since: its manifest alone is read, and links the new run.
    forked = examples.write_training_checkpoint(tmp_path / "fork" / "f.ckpt", weights_bytes=20_000)
    manifest = {"mode": "fork", "run_id": forked.run_id, "parent": {"uuid": parent.uuid}, "created_at": "2026-02-01T00:00:00Z"}
    storage.put(f"{layout.MANIFESTS}{_uuid.uuid4()}.json", json.dumps(manifest).encode())
    links = catalogue.register(forked.path).record.parents
    assert [(link.uuid, link.relation) for link in links] == [(parent.uuid, "forked-from")]
    assert CountingStorage.manifest_reads == 41
