"""The catalogue against damage and scale: a wrong blob under a content-addressed key,
large registration batches, deep lineage chains, and an index that lost or kept
entries it should not have (rebuilt by ``anemoi-ckpt reindex``).

Storage tests run on memory, a local folder and S3 (a real SeaweedFS server).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.catalogue import lineage
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.events import put_event
from anemoi_ckpt_nb.catalogue.index import compact, publish
from anemoi_ckpt_nb.catalogue.records import inspect_file, make_record
from anemoi_ckpt_nb.catalogue.parents import order as _order
from anemoi_ckpt_nb.catalogue.search import search
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import CatalogueError, NotRegisteredError
from anemoi_ckpt_nb.storage.base import Storage


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- 1. a blob of the right size is not trusted -------------------------------------------


def test_a_foreign_blob_of_the_right_size_is_replaced_by_the_real_bytes(catalogue, tmp_path):
    ck = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    data = ck.path.read_bytes()
    key = layout.blob_key(_sha(data))
    storage = catalogue.store.storage
    # A crashed or foreign writer left other bytes of exactly the same size under the key.
    storage.put(key, bytes(len(data)))
    assert storage.stat(key).size == len(data)

    registered = catalogue.register(ck.path)

    assert registered.record.blob == key
    stored, _ = storage.get(key)
    assert _sha(stored) == _sha(data)
    out = catalogue.get(ck.uuid).download(tmp_path / "out.ckpt")
    assert out.read_bytes() == data


def test_a_blob_known_to_hold_the_bytes_is_not_uploaded_again(catalogue, tmp_path, monkeypatch):
    known = examples.write_training_checkpoint(tmp_path / "known.ckpt", weights_bytes=20_000)
    new = examples.write_training_checkpoint(tmp_path / "new.ckpt", weights_bytes=30_000)
    storage = catalogue.store.storage
    # Stored (and verified) by an earlier upload, e.g. from another site or a registration
    # interrupted after its upload: the backend knows its sha256.
    sha = _sha(known.path.read_bytes())
    storage.upload_file(layout.blob_key(sha), known.path, sha256=sha)
    # The bytes each upload_file call of register sends to the storage (the real backend runs:
    # it reports progress only while it transfers).
    sent: dict[str, int] = {}
    real_upload = storage.upload_file

    def upload_file(key, path, *, sha256, progress=None):
        sent.setdefault(Path(path).name, 0)

        def count(nbytes: int) -> None:
            sent[Path(path).name] += nbytes
            if progress is not None:
                progress(nbytes)

        return real_upload(key, path, sha256=sha256, progress=count)

    monkeypatch.setattr(storage, "upload_file", upload_file)
    reported = 0

    def progress(nbytes: int) -> None:
        nonlocal reported
        reported += nbytes

    catalogue.register(known.path, progress=progress)
    catalogue.register(new.path, progress=progress)

    # The known blob is not sent again; the new file is, whole (so the count above is not blind).
    assert sent == {"known.ckpt": 0, "new.ckpt": new.path.stat().st_size}
    # Each file still accounts for its size twice (hashed, then stored or found stored), so that
    # a progress bar's total is known before anything is read.
    assert reported == 2 * (known.path.stat().st_size + new.path.stat().st_size)
    stored, _ = storage.get(layout.blob_key(sha))
    assert stored == known.path.read_bytes()


# --- 2. registration order: a heap, same order as before -------------------------------------


def _fake(uuid: str, *, parents=(), kind="training", step=None, path=None):
    return SimpleNamespace(
        uuid=uuid,
        links=[SimpleNamespace(uuid=p) for p in parents],
        kind=kind,
        global_step=step,
        path=Path(path or f"/runs/{uuid}.ckpt"),
    )


def _reference_order(batch):
    """The previous implementation (sorted list, pop(0), re-sort on append), for comparison."""
    by_uuid = {f.uuid: f for f in batch}
    children, waiting = {}, {}
    for facts in batch:
        parents = {link.uuid for link in facts.links if link.uuid in by_uuid}
        parents.discard(facts.uuid)
        waiting[facts.uuid] = len(parents)
        for parent in parents:
            children.setdefault(parent, []).append(facts)

    def key(f):
        return (f.kind != "training", f.global_step if f.global_step is not None else -1, str(f.path))

    ready = sorted((f for f in batch if waiting[f.uuid] == 0), key=key)
    ordered = []
    while ready:
        facts = ready.pop(0)
        ordered.append(facts)
        for child in children.get(facts.uuid, []):
            waiting[child.uuid] -= 1
            if waiting[child.uuid] == 0:
                ready.append(child)
                ready.sort(key=key)
    return ordered


def test_order_puts_parents_first_then_training_then_step_then_path():
    batch = [
        _fake("inf", kind="inference", step=1),
        _fake("child", parents=["late"], step=0),  # a smaller key than its parent: still after it
        _fake("late", step=500),
        _fake("b", step=100, path="/runs/b.ckpt"),
        _fake("a", step=100, path="/runs/a.ckpt"),  # a tie on kind and step: the path decides
        _fake("nostep", step=None),
    ]
    assert [f.uuid for f in _order(batch)] == ["nostep", "a", "b", "late", "child", "inf"]


def test_order_with_ties_matches_the_previous_implementation_on_random_batches():
    rng = random.Random(1234)
    for trial in range(40):
        n = rng.randint(1, 120)
        uuids = [f"u{i:04d}" for i in range(n)]
        batch = []
        for i, uuid in enumerate(uuids):
            parents = rng.sample(uuids[:i], k=min(i, rng.randint(0, 2)))  # earlier ones only: a DAG
            if rng.random() < 0.2:
                parents.append(f"outside-{i}")  # a parent registered earlier, not in the batch
            batch.append(_fake(
                uuid,
                parents=parents,
                kind=rng.choice(["training", "training", "inference"]),
                step=rng.choice([None, 0, 100, 100, 200]),  # many ties on step
                path=f"/runs/{rng.choice('xyz')}/{uuid}.ckpt",
            ))
        rng.shuffle(batch)
        assert [f.uuid for f in _order(batch)] == [f.uuid for f in _reference_order(batch)], trial


def test_order_computes_each_key_once_for_a_wide_batch_of_thousands():
    """A run whose thousands of checkpoints all name one parent: every child becomes ready at
    once. Re-sorting the ready list on each arrival computed keys n*n/2 times."""
    reads = 0

    class CountingPath(type(Path())):
        def __str__(self) -> str:
            nonlocal reads
            reads += 1
            return super().__str__()

    n = 3000
    batch = [_fake("root", step=0)] + [_fake(f"c{i:05d}", parents=["root"], step=i) for i in range(n)]
    for facts in batch:
        facts.path = CountingPath(facts.path)
    ordered = _order(batch)
    assert [f.uuid for f in ordered] == ["root"] + [f"c{i:05d}" for i in range(n)]
    assert reads <= 2 * len(batch)


def test_order_reports_a_cycle_with_the_files_in_it():
    batch = [_fake("a", parents=["b"]), _fake("b", parents=["a"]), _fake("c")]
    with pytest.raises(CatalogueError, match="a.ckpt, b.ckpt"):
        _order(batch)


# --- 4. deep lineage ------------------------------------------------------------------------


def test_text_tree_of_a_chain_of_3000_does_not_recurse():
    n = 3000
    graph = {"n00000": []}
    for i in range(1, n):
        graph[f"n{i:05d}"] = [(f"n{i - 1:05d}", "resumed-from")]
    tree = lineage.text_tree(graph, f"n{n - 1:05d}", label=lambda u: u)
    lines = tree.splitlines()
    assert len(lines) == n
    assert lines[0] == "n00000"
    assert lines[1] == "└── n00001  (resumed-from)"
    assert lines[2] == "    └── n00002  (resumed-from)"
    assert lines[-1] == " " * (4 * (n - 2)) + f"└── n{n - 1:05d}  (resumed-from)  <=="


def test_text_tree_keeps_its_shape_for_branches_and_shared_children():
    graph = {
        "a": [], "b": [],
        "c": [("a", "resumed-from")], "d": [("a", "forked-from")],
        "e": [("c", "converted-from"), ("b", "fine-tuned-from")],
    }
    assert lineage.text_tree(graph, "e", tops=["a", "b"]) == "\n".join([
        "a",
        "├── c  (resumed-from)",
        "│   └── e  (converted-from)  <==",
        "└── d  (forked-from)",
        "b",
        "└── e  (fine-tuned-from)  <==  (see above)",
    ])


# --- 3. the index: check, rebuild (`anemoi-ckpt reindex`), deletions respected -------------


class HookedStorage(Storage):
    """A real storage that calls ``after_get(key)`` once a ``get`` has returned, to make
    another writer act at an exact point of an operation (deterministic interleaving)."""

    def __init__(self, inner: Storage, after_get) -> None:
        self.inner = inner
        self.url = inner.url
        self.after_get = after_get

    def get(self, key):
        result = self.inner.get(key)
        self.after_get(key)
        return result

    def put(self, key, data, *, if_absent=False):
        return self.inner.put(key, data, if_absent=if_absent)

    def replace(self, key, data, *, etag):
        return self.inner.replace(key, data, etag=etag)

    def stat(self, key):
        return self.inner.stat(key)

    def delete(self, key):
        return self.inner.delete(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def upload_file(self, key, path, *, sha256, progress=None):
        return self.inner.upload_file(key, path, sha256=sha256, progress=progress)

    def download_file(self, key, dest, *, sha256, progress=None):
        return self.inner.download_file(key, dest, sha256=sha256, progress=progress)


def _two_of_one_run(catalogue: Catalogue, tmp_path: Path):
    """Two unrelated checkpoints of one run: ``clean(keep_last=1)`` removes the older (first)."""
    old = examples.write_training_checkpoint(tmp_path / "old.ckpt", weights_bytes=20_000, run_id="run-1", global_step=100)
    new = examples.write_training_checkpoint(tmp_path / "new.ckpt", weights_bytes=20_000, run_id="run-1", global_step=200, seed=1)
    return catalogue.register(old.path), catalogue.register(new.path)


def _indexed(url: str) -> list[str]:
    return sorted(e["uuid"] for e in search(Catalogue(url).store))


def test_check_and_rebuild_repair_a_lost_delta_and_a_stale_entry(catalogue, tmp_path):
    kept = catalogue.register(examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000).path)
    gone = catalogue.register(examples.write_training_checkpoint(tmp_path / "b.ckpt", weights_bytes=20_000, seed=1).path)
    lost = examples.write_training_checkpoint(tmp_path / "c.ckpt", weights_bytes=20_000, seed=2)
    store = catalogue.store
    # A writer died after its record, before its delta; a clean died after deleting a record.
    store.create_record(make_record(inspect_file(lost.path), parents=[], name=None, blob=None, metadata_blob=None))
    store.storage.delete(layout.record_key(gone.uuid))

    report = Catalogue(catalogue.url).store.check_index()
    assert (report.missing, report.stale, report.records) == ([lost.uuid], [gone.uuid], 2)
    assert not report.ok

    assert catalogue.rebuild_index() == 2
    assert _indexed(catalogue.url) == sorted([kept.uuid, lost.uuid])
    assert Catalogue(catalogue.url).store.check_index().ok


def test_rebuild_does_not_revive_a_record_cleaned_while_it_scans(catalogue, tmp_path):
    older, newer = _two_of_one_run(catalogue, tmp_path)
    inner = catalogue.store.storage
    fired = []

    def clean_during_the_scan(key: str) -> None:
        if key == layout.record_key(older.uuid) and not fired:
            fired.append(key)
            # Another process cleans the record the rebuild has just read, and a third
            # compacts the index (merging the delete delta into the snapshot) meanwhile.
            plan = Catalogue(catalogue.url).clean(keep_last=1, dry_run=False)
            assert [d.uuid for d in plan.delete] == [older.uuid]
            assert compact(inner)

    hooked = CatalogueStore.open(HookedStorage(inner, clean_during_the_scan))
    hooked.rebuild_index()
    assert fired
    assert _indexed(catalogue.url) == [newer.uuid]
    assert Catalogue(catalogue.url).store.check_index().ok


def test_rebuild_keeps_tombstones_so_a_late_put_does_not_revive_a_cleaned_record(catalogue, tmp_path):
    older, newer = _two_of_one_run(catalogue, tmp_path)
    record = older.record
    Catalogue(catalogue.url).clean(keep_last=1, dry_run=False)
    assert compact(catalogue.store.storage, min_deltas=1)
    catalogue.rebuild_index()
    # A writer whose view predates the clean re-publishes the entry it thinks was lost.
    publish(catalogue.store.storage, [put_event(record)])
    assert _indexed(catalogue.url) == [newer.uuid]


def test_an_index_entry_without_its_record_names_the_reindex_command(catalogue, tmp_path):
    ck = catalogue.register(examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000).path, name="best")
    catalogue.store.storage.delete(layout.record_key(ck.uuid))  # a clean that died before its delta
    fresh = Catalogue(catalogue.url)
    with pytest.raises(NotRegisteredError, match="anemoi-ckpt reindex") as caught:
        fresh.get("best")
    assert layout.record_key(ck.uuid) in str(caught.value)
    fresh.search()  # the index is now in memory: an exact uuid lookup can tell too
    with pytest.raises(NotRegisteredError, match="anemoi-ckpt reindex"):
        fresh.get(ck.uuid)
    fresh.rebuild_index()
    with pytest.raises(NotRegisteredError) as caught:
        Catalogue(catalogue.url).get("best")
    assert "reindex" not in str(caught.value)


def test_a_record_missing_from_a_loaded_index_warns_with_the_reindex_command(catalogue, tmp_path, caplog):
    ck = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    fresh = Catalogue(catalogue.url)
    assert fresh.search() == []
    fresh.store.create_record(make_record(inspect_file(ck.path), parents=[], name=None, blob=None, metadata_blob=None))
    with caplog.at_level("WARNING"):
        assert fresh.get(ck.uuid).uuid == ck.uuid  # still found: records/ is the truth
    assert any(ck.uuid in r.getMessage() and "anemoi-ckpt reindex" in r.getMessage() for r in caplog.records)


def test_rebuild_replaces_an_unreadable_snapshot(catalogue, tmp_path):
    ck = catalogue.register(examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000).path)
    storage = catalogue.store.storage
    assert compact(storage, min_deltas=1)
    storage.put(layout.SNAPSHOT, b"not gzip at all")
    catalogue.rebuild_index()
    assert _indexed(catalogue.url) == [ck.uuid]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anemoi_ckpt_nb", *args], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )


def test_reindex_command_checks_then_rebuilds(tmp_path):
    url = str(tmp_path / "catalogue")
    catalogue = Catalogue.create(url)
    lost = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    catalogue.store.create_record(make_record(inspect_file(lost.path), parents=[], name=None, blob=None, metadata_blob=None))

    checked = _cli("reindex", "--check", "--catalogue", url)
    assert checked.returncode == 1, checked.stderr
    assert lost.uuid in checked.stdout and f"anemoi-ckpt reindex --catalogue {Catalogue(url).url}" in checked.stdout

    rebuilt = _cli("--catalogue", url, "reindex")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "1 checkpoints" in rebuilt.stdout
    assert _indexed(url) == [lost.uuid]
    again = _cli("reindex", "--check", "--catalogue", url)
    assert again.returncode == 0 and "matches the 1 records" in again.stdout


def test_reindex_of_a_missing_catalogue_is_one_line_with_the_fix(tmp_path):
    result = _cli("reindex", "--catalogue", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "anemoi-ckpt init" in result.stderr


def test_clean_names_the_reindex_command_for_an_entry_whose_record_is_gone(catalogue, tmp_path, caplog):
    older, newer = _two_of_one_run(catalogue, tmp_path)
    catalogue.store.storage.delete(layout.record_key(older.uuid))
    with caplog.at_level("WARNING"):
        plan = Catalogue(catalogue.url).clean(keep_last=1, dry_run=False)
    assert plan.delete == []
    assert any(older.uuid in r.getMessage() and "anemoi-ckpt reindex" in r.getMessage() for r in caplog.records)
