"""The spool and ``anemoi-ckpt sync``: captures on a compute node, registered later, parents first, once.

On the example project and on the runs anemoi-training 0.17.1 really wrote (``tests/data/real``):
every capture is registered with the lineage the files hold, whatever order they were captured in,
on every catalogue backend (S3 included); repeated, interrupted and concurrent syncs register
nothing twice and lose nothing; a capture that changed after it was taken is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.errors import SpoolError
from anemoi_ckpt_nb.runs import capture, spool as spool_mod
from anemoi_ckpt_nb.runs.capture import prepare, rewritten_in_place
from anemoi_ckpt_nb.runs.spool import Spool
from anemoi_ckpt_nb.runs.sync import sync_spool


def _capture(spool: Spool, path: Path, *, methods=capture.METHODS, **fields):
    return prepare(spool, path, methods=methods).finish(**fields)


def _lineage(catalogue: Catalogue) -> dict[tuple[str, int | None, str], list[tuple[str, str]]]:
    """(run id, step, kind) -> parents as (run id of the parent, relation)."""
    records = {e["uuid"]: catalogue.store.read_record(e["uuid"]) for e in catalogue.entries()}
    return {
        (r.run_id, r.global_step, r.kind): sorted((records[p.uuid].run_id, p.relation) for p in r.parents)
        for r in records.values()
    }


# --- the example project -------------------------------------------------------------------


def test_a_spool_captured_in_any_order_registers_parents_first(example_project, catalogue, tmp_path):
    files = [c.path for group in ("forked", "resumed", "base") for c in example_project[group]]  # children first
    spool = Spool(tmp_path / "spool", catalogue=catalogue.url)
    entries = [_capture(spool, path, methods=("copy",) if i % 2 else capture.METHODS) for i, path in enumerate(files)]
    assert {e.method for e in entries} >= {"copy"} and all(e.method in capture.METHODS for e in entries)
    assert all((e.sha256 is not None) == (e.method == "copy") for e in entries)

    report = sync_spool(catalogue.store, Spool.open(spool.path))
    assert report.ok and not report.already and len(report.registered) == len(files)

    # The same lineage as registering the run folders themselves.
    direct = Catalogue.create(f"memory://direct-{uuid.uuid4().hex}")
    direct.register_many(files)
    assert _lineage(catalogue) == _lineage(direct)
    assert sorted(r.sha256 for r in map(catalogue.store.read_record, report.registered.values())) == sorted(
        r.sha256 for r in map(direct.store.read_record, (e["uuid"] for e in direct.entries()))
    )
    # Records say where the file was saved, not where the spool kept it.
    record = catalogue.store.read_record(report.registered[entries[0].key])
    assert record.source.path == str(files[0].absolute()) and "spool" not in record.source.path
    # The captured bytes are let go; a second sync has nothing to do.
    assert not any((spool.path / "files").iterdir())
    again = sync_spool(catalogue.store, Spool.open(spool.path))
    assert (again.registered, again.already, again.waiting, again.failed) == ({}, {}, {}, {})
    assert [state for _, state, _ in spool.status()] == ["done"] * len(files)


def test_a_copy_is_safe_from_deletion_and_rewriting_a_link_is_refused(example_project, tmp_path):
    source = tmp_path / "saved.ckpt"
    shutil.copy(example_project["base"][0].path, source)
    original = source.read_bytes()
    spool = Spool(tmp_path / "spool")
    copied = prepare(spool, source, methods=("copy",))
    source.unlink()  # anemoi-training deleting a checkpoint beyond num_models_saved
    copied = copied.finish()
    assert (spool.path / copied.file).read_bytes() == original

    shutil.copy(example_project["base"][1].path, source)
    linked = _capture(spool, source, methods=("link",))
    assert linked.method == "link" and os.stat(source).st_ino == os.stat(spool.path / linked.file).st_ino
    with open(source, "r+b") as fh:  # a rewrite in place, as torch.save does to inference-last.ckpt
        fh.seek(100)
        fh.write(b"\0" * 8)
    catalogue = Catalogue.create(str(tmp_path / "catalogue"))
    report = sync_spool(catalogue.store, Spool.open(spool.path))
    assert list(report.registered) == [copied.key]
    assert "changed after it was taken" in report.failed[linked.key]
    assert "changed after it was taken" in spool.read_doc(spool_mod.FAILED, linked.key)["error"]


@pytest.mark.parametrize("where", ["same file system", "/dev/shm"])
def test_a_copy_of_many_chunks_is_the_file_and_its_hash_on_one_file_system_or_two(where, tmp_path):
    # On one file system the kernel copies (copy_file_range); from ext4 to tmpfs it refuses
    # (EXDEV) and the bytes read for the hash are written instead.
    import hashlib

    if where == "same file system":
        folder = tmp_path
    elif Path(where).is_dir() and os.stat(where).st_dev != os.stat(tmp_path).st_dev:
        folder = Path(tempfile.mkdtemp(dir=where))
    else:
        pytest.skip(f"{where}: no other file system here")
    try:
        source = tmp_path / "saved.ckpt"
        data = os.urandom(1 << 20) * 20 + b"a tail shorter than a chunk"  # 2.5 chunks of 8 MiB
        source.write_bytes(data)
        spool = Spool(folder / "spool")
        entry = _capture(spool, source, methods=("copy",))
        assert (spool.path / entry.file).read_bytes() == data
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size == len(data)
        assert not list((spool.path / "files").rglob(".*.part"))
    finally:
        if folder != tmp_path:
            shutil.rmtree(folder)


def test_names_rewritten_in_place_are_never_hard_linked(tmp_path):
    assert rewritten_in_place("inference-last.ckpt") and rewritten_in_place("inference-last-v1.ckpt")
    assert not rewritten_in_place("last.ckpt")  # Lightning writes it aside and renames it over
    assert not rewritten_in_place("inference-anemoi-by_epoch-epoch_001-step_000010.ckpt")
    source = tmp_path / "inference-last.ckpt"
    source.write_bytes(b"bytes of a model")
    spool = Spool(tmp_path / "spool")
    with pytest.raises(SpoolError, match="cannot capture it with link"):
        prepare(spool, source, methods=("link",))
    entry = _capture(spool, source, methods=("link", "copy"))
    assert entry.method == "copy" and os.stat(source).st_ino != os.stat(spool.path / entry.file).st_ino


def test_open_if_exists_tells_a_spool_from_no_spool_and_creates_nothing(tmp_path, capsys):
    missing, empty, a_file = tmp_path / "missing", tmp_path / "empty", tmp_path / "a-file"
    empty.mkdir()
    a_file.write_text("not a folder")
    for path in (missing, empty, a_file):
        assert Spool.open_if_exists(path) is None
    with pytest.raises(SpoolError, match="not a spool"):
        Spool.open(missing)
    assert not missing.exists() and list(empty.iterdir()) == []
    made = Spool(tmp_path / "spool", catalogue="s3://bucket/catalogue")
    made.ensure()
    opened = Spool.open_if_exists(made.path)
    assert opened.path == made.path and opened.catalogue == "s3://bucket/catalogue"
    # A spool.json there but not ours is an error, not "no spool": info says what is wrong.
    (made.path / spool_mod.DESCRIPTOR).write_text('{"format": "something-else"}')
    with pytest.raises(SpoolError, match="is not a version 1 anemoi-ckpt spool"):
        Spool.open_if_exists(made.path)
    assert main(["info", "--json", "--spool", str(made.path)]) == 0
    info = json.loads(capsys.readouterr().out)["spool"]
    assert info["exists"] is False and "is not a version 1 anemoi-ckpt spool" in info["problem"]
    assert main(["info", "--json", "--spool", str(empty)]) == 0
    info = json.loads(capsys.readouterr().out)["spool"]
    assert info["value"] == str(empty) and info["exists"] is False and "problem" not in info


def test_a_parent_never_captured_waits_and_says_so(example_project, tmp_path, capsys):
    child = example_project["resumed"][0].path
    catalogue = Catalogue.create(str(tmp_path / "catalogue"))
    spool = Spool(tmp_path / "spool", catalogue=catalogue.url)
    entry = _capture(spool, child)
    assert main(["sync", str(spool.path)]) == 1
    out = capsys.readouterr().out
    assert f"waiting: {child.absolute()}" in out and "1 waiting for a parent" in out
    assert "is not in the catalogue" in spool.read_doc(spool_mod.FAILED, entry.key)["error"]
    # Capture the parent later: the next sync registers both, parent first.
    _capture(spool, example_project["base"][-1].path)
    assert main(["sync", str(spool.path)]) == 0
    assert "2 registered" in capsys.readouterr().out
    assert main(["sync", str(spool.path), "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and all(line.startswith("done") for line in listed)
    assert spool.read_doc(spool_mod.FAILED, entry.key) is None


def test_an_explicit_parent_entry_links_a_weights_only_fork(example_project, tmp_path):
    # A fork that loaded only the weights names no parent in its files: the callback names the file it started from.
    from anemoi_ckpt_nb import examples

    parent = example_project["base"][1]
    stripped = examples.write_training_checkpoint(tmp_path / "fork.ckpt", parent_uuid=None).path
    spool = Spool(tmp_path / "spool")
    start = _capture(spool, parent.path, role="start")
    child = _capture(spool, stripped, parents=[{"entry": start.key, "relation": "forked-from"}])
    catalogue = Catalogue.create(str(tmp_path / "catalogue"))
    report = sync_spool(catalogue.store, Spool.open(spool.path))
    assert report.ok, report
    record = catalogue.store.read_record(report.registered[child.key])
    assert [(p.uuid, p.relation) for p in record.parents] == [(parent.uuid, "forked-from")]


# --- interrupted and concurrent syncs ----------------------------------------------------------


def test_an_interrupted_sync_loses_nothing_and_a_dead_syncs_claim_is_taken_over(example_project, tmp_path):
    files = [c.path for group in ("base", "resumed", "forked") for c in example_project[group]]
    spool = Spool(tmp_path / "spool")
    entries = [_capture(spool, path) for path in files]
    catalogue = Catalogue.create(str(tmp_path / "catalogue"))

    def stop_after_two(entry, outcome, detail):
        if len(list((spool.path / "done").iterdir())) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync_spool(catalogue.store, Spool.open(spool.path), on_entry=stop_after_two)
    assert len(spool.pending()) == len(files) - 2
    # A sync killed on this host left a claim: its process is gone, so the claim is stale.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held = {"token": "x", "host": os.uname().nodename, "pid": int(dead.stdout), "until": time.time() + 3600}
    spool.storage.put(f"claims/{entries[3].key}.json", json.dumps(held).encode())
    # A live sync elsewhere holds another one: left alone.
    alive = {"token": "y", "host": "elsewhere", "pid": 1, "until": time.time() + 3600}
    spool.storage.put(f"claims/{entries[4].key}.json", json.dumps(alive).encode())
    report = sync_spool(catalogue.store, Spool.open(spool.path))
    assert report.busy == [entries[4].key]
    assert entries[3].key in report.registered and len(report.registered) == len(files) - 3
    spool.storage.delete(f"claims/{entries[4].key}.json")
    last = sync_spool(catalogue.store, Spool.open(spool.path))
    assert list(last.registered) == [entries[4].key] and spool.pending() == []
    assert len(catalogue.entries()) == len(files)


@pytest.mark.s3
def test_two_syncs_at_once_register_each_file_once(example_project, s3_url, tmp_path):
    files = [c.path for group in ("base", "resumed", "forked") for c in example_project[group]]
    Catalogue.create(s3_url)
    spool = Spool(tmp_path / "spool", catalogue=s3_url)
    for path in files:
        _capture(spool, path, methods=("copy",))
    command = [sys.executable, "-m", "anemoi_ckpt_nb", "sync", str(spool.path)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    registered = [line for out, _ in outputs for line in out.splitlines() if line.startswith("registered:")]
    assert len(registered) == len(files), outputs  # each file created by exactly one of the two
    assert spool.pending() == [] and not any((spool.path / "files").iterdir())
    catalogue = Catalogue(s3_url)
    assert len(catalogue.entries()) == len(files)


# --- files anemoi-training 0.17.1 wrote --------------------------------------------------------

REAL = Path(__file__).parent / "data" / "real"
pytestmark_real = pytest.mark.skipif(not (REAL / "MANIFEST.json").is_file(), reason="no real fixtures")


def _real_sessions() -> list[tuple[str, list[Path]]]:
    """The current gnn sessions in the order they ran, each with the files it left."""
    sessions = []
    for session in ("run", "resume", "fork-full", "fork-weights"):
        (folder,) = [p for p in (REAL / "current" / "gnn" / session).iterdir() if p.is_dir()]
        sessions.append((session, sorted(folder.glob("*.ckpt"))))
    return sessions


@pytestmark_real
@pytest.mark.s3
def test_real_runs_spooled_as_the_callback_would_sync_with_their_true_lineage(s3_url, tmp_path):
    import test_real_files as truth

    catalogue = Catalogue.create(s3_url)
    spool = Spool(tmp_path / "spool", catalogue=s3_url)
    captured: dict[str, Path] = {}
    parent_entry = None
    for session, files in _real_sessions():
        parents = []
        if session == "fork-weights":
            # The file the weights-only fork started from (fork-command.txt): captured at its start.
            started = REAL / "current/gnn/run/1f297665-e357-4483-ad02-fe02862f32e9/anemoi-by_epoch-epoch_001-step_000010.ckpt"
            parent_entry = _capture(spool, started, role="start")
            parents = [{"entry": parent_entry.key, "relation": "forked-from"}]
        # As the callback captures: training files, then the inference files saved with them.
        for path in sorted(files, key=lambda p: (p.name.startswith("inference-"), p.name)):
            entry = _capture(spool, path, parents=[] if path.name.startswith("inference-") else parents)
            captured[entry.key] = path
    report = sync_spool(catalogue.store, Spool.open(spool.path))
    assert report.ok, report
    assert spool.pending() == []

    by_path = {str((REAL / e["path"]).resolve()): e for e in truth.FILES}
    for key, path in captured.items():
        uuid = report.registered.get(key) or report.already[key]
        entry = by_path[str(path.resolve())]
        assert uuid == truth._record_uuid(entry), path
        record = catalogue.store.read_record(uuid)
        assert record.sha256 == entry["sha256"]
        expected = truth._expected_parent(entry)
        assert [(p.uuid, p.relation) for p in record.parents] == ([expected] if expected else []), path
    # The files both snapshots of the run share are registered once: the resume's copies were found registered.
    shared = [k for k, p in captured.items() if "/resume/" in str(p) and (REAL / "current/gnn/run" / p.relative_to(
        REAL / "current/gnn/resume")).is_file() and (REAL / "current/gnn/run" / p.relative_to(
        REAL / "current/gnn/resume")).read_bytes() == p.read_bytes()]
    assert shared and all(k in report.already for k in shared)
