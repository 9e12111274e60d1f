"""Every command on files written by the real anemoi packages (``tests/data/real``).

The fixtures were made by anemoi-training itself (``tests/real_fixtures``); their
``MANIFEST.json`` lists, for each file, the uuids it really holds as the anemoi
packages read them (``torch.load`` and ``anemoi.utils.checkpoints.load_metadata``).
These tests need none of the anemoi packages: they run ``inspect``, ``convert``,
``validate``, ``upgrade`` and ``register --run-folder`` on every file and check
identity and lineage against the manifest.

``ANEMOI_CKPT_REAL_FIXTURES`` points the tests at another copy of the fixtures
(a freshly regenerated set, before it is committed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.read.reader import open_checkpoint

REAL = Path(os.environ.get("ANEMOI_CKPT_REAL_FIXTURES", Path(__file__).parent / "data" / "real"))
MANIFEST = REAL / "MANIFEST.json"

pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"no real fixtures at {REAL}")

#: The order the sessions were run in (tests/real_fixtures/make_real_fixtures.py).
SESSIONS = ("run", "resume", "fork-full", "fork-weights")


def _files() -> list[dict]:
    if not MANIFEST.is_file():
        return []
    return json.loads(MANIFEST.read_text())["files"]


FILES = _files()
IDS = [entry["path"] for entry in FILES]


def _embedded_uuid(entry: dict) -> str | None:
    return (entry.get("embedded") or {}).get("uuid")


def _uuid(entry: dict) -> str:
    """The uuid lineage uses: a training file's pickled one; an inference file's embedded one
    (anemoi-training clears the model's pickled metadata before saving it)."""
    return entry["pickled_uuid"] or _embedded_uuid(entry)


def _training_by_uuid() -> dict[str, dict]:
    """Every uuid a training file holds -> its entry (snapshots repeat files: same bytes, same uuids)."""
    found: dict[str, dict] = {}
    for entry in FILES:
        if entry["kind"] == "training":
            for uuid in (entry["pickled_uuid"], _embedded_uuid(entry)):
                if uuid:
                    found.setdefault(uuid, entry)
    return found


def _folder(entry: dict) -> Path:
    return (REAL / entry["path"]).parent


def _expected_parent(entry: dict) -> tuple[str, str] | None:
    """``(record uuid of the parent, relation)`` from what the files hold, or None."""
    by_uuid = _training_by_uuid()
    if entry["kind"] == "inference":
        name = Path(entry["path"]).name.removeprefix("inference-")
        training = next(e for e in FILES if e["path"] == str(Path(entry["path"]).with_name(name)))
        # anemoi-training saves the inference file with the training file's first uuid.
        assert training["pickled_uuid"] == _uuid(entry)
        return training["pickled_uuid"], "converted-from"
    parent_uuid = entry["pickled_parent_uuid"]
    if parent_uuid:
        parent = by_uuid[parent_uuid]
        return parent["pickled_uuid"], "resumed-from" if parent["run_id"] == entry["run_id"] else "forked-from"
    manifest = _folder(entry).parent / "run-manifest.json"
    if entry["session"] == "fork-weights" and manifest.is_file():
        # A weights-only fork writes no parent_uuid; the run manifest of `anemoi-ckpt fork` names it.
        named = json.loads(manifest.read_text())["parent"]["uuid"]
        return by_uuid[named]["pickled_uuid"], "forked-from"
    return None


def _record_uuid(entry: dict) -> str:
    if entry["kind"] == "training":
        return entry["pickled_uuid"]
    return layout.derived_uuid(_uuid(entry), entry["sha256"])


def _run_folders() -> list[Path]:
    """One folder per session, in the order the sessions ran."""
    folders: dict[Path, tuple] = {}
    for entry in FILES:
        session = entry["session"]
        key = (entry["stack"] != "current", entry["model"], SESSIONS.index(session) if session in SESSIONS else 99)
        folders.setdefault(_folder(entry), key)
    return sorted(folders, key=lambda folder: folders[folder])


# --- inspect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_inspect_shows_the_uuids_the_file_holds(entry, capsys):
    path = REAL / entry["path"]
    with open_checkpoint(path) as ck:
        assert ck.kind == entry["kind"]
        assert ck.uuid == _uuid(entry)
        assert ck.run_id == entry["run_id"]
        if entry["kind"] == "training":
            assert ck.parent_uuid == entry["pickled_parent_uuid"]
        embedded = _embedded_uuid(entry)
        assert ck.embedded_uuid == embedded
        assert ck.uuids == [u for u in dict.fromkeys((_uuid(entry), embedded)) if u]
        summary = ck.summary()
    assert main(["inspect", "--json", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["uuid"] == _uuid(entry) and printed["embedded_uuid"] == embedded
    # anemoi's count (parameters only) and the tensor elements (buffers too) are both shown, labelled.
    counts = summary["anemoi_parameters"]
    if counts is not None:
        assert 0 < counts["trainable"] <= counts["total"] <= summary["tensor_elements"]
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert _uuid(entry) in text
    if embedded and embedded != _uuid(entry):
        assert f"embedded uuid {embedded}" in text
    assert "elements" in text


# --- validate --------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_validate_says_what_the_file_is_and_what_runs_it(entry):
    from anemoi_ckpt_nb.compat.validate import validate_checkpoint

    report = validate_checkpoint(REAL / entry["path"])
    errors = [f.message for f in report.findings if f.severity == "error"]
    assert report.verdict != "incompatible", errors
    assert report.format == entry["kind"]
    if entry["kind"] == "training":
        assert report.what.startswith("a training checkpoint") and "convert" in report.what
    else:
        assert "anemoi-inference runs it" in report.what
    if entry["stack"] == "current":
        assert report.unknown_keys == []  # base_seed, task and every key anemoi-training 0.17 writes
    if entry["stack"] != "current":
        # Metadata 1.0 of the early-2025 stack: `upgrade` brings it to 2.0 (tested below).
        assert "migrations-pending" in {f.code for f in report.findings}
        return
    # Whatever is left is about this environment (anemoi packages not installed here), not the file.
    assert all(f.code.startswith(("package-", "classes-not-installed", "python-version", "uncommitted"))
               for f in report.findings if f.severity == "warning"), [f.code for f in report.findings]


# --- upgrade ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_upgrade_of_a_current_file_writes_nothing(entry, tmp_path, capsys):
    from anemoi_ckpt_nb.compat.upgrade import upgrade_checkpoint

    source = REAL / entry["path"]
    before = source.read_bytes()
    result = upgrade_checkpoint(source, tmp_path / "out.ckpt")
    assert source.read_bytes() == before
    if entry.get("embedded") and str(entry["embedded"].get("version")) == "2.0":
        assert not result.written and not (tmp_path / "out.ckpt").exists()
        assert main(["upgrade", str(source), str(tmp_path / "again.ckpt")]) == 0
        assert "nothing to upgrade" in capsys.readouterr().out
        assert not (tmp_path / "again.ckpt").exists()
    else:
        assert result.written and (tmp_path / "out.ckpt").is_file()
        with open_checkpoint(tmp_path / "out.ckpt") as ck:
            assert ck.metadata["version"] == "2.0"


# --- convert ---------------------------------------------------------------------------------

TRAINING = [e for e in FILES if e["kind"] == "training"]


@pytest.mark.parametrize("entry", TRAINING, ids=[e["path"] for e in TRAINING])
def test_convert_every_training_file(entry, tmp_path):
    source = REAL / entry["path"]
    assert main(["convert", str(source), "-o", str(tmp_path)]) == 0
    outputs = [p for p in tmp_path.iterdir() if p.is_file() and p.suffix in (".ckpt", ".safetensors", ".pt")]
    assert outputs
    with open_checkpoint(source) as training:
        names = list(training.weights)
    for output in outputs:
        with open_checkpoint(output) as ck:
            assert ck.metadata["converted_from"]["uuid"] == entry["pickled_uuid"]
            assert ck.weights and all(any(t.endswith("." + n) for t in names) for n in ck.weights)


# --- register --run-folder and lineage --------------------------------------------------------


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Path:
    """A catalogue with every fixture run folder registered, in the order the runs were made."""
    catalogue = tmp_path_factory.mktemp("real") / "catalogue"
    assert main(["init", str(catalogue)]) == 0
    for folder in _run_folders():
        manifest = folder.parent / "run-manifest.json"
        if manifest.is_file():
            # What `anemoi-ckpt fork` stored in the catalogue the fork was planned from.
            uuid = json.loads(manifest.read_text())["uuid"]
            (catalogue / "manifests").mkdir(exist_ok=True)
            shutil.copy(manifest, catalogue / "manifests" / f"{uuid}.json")
        assert main(["register", "--catalogue", str(catalogue), "--run-folder", str(folder)]) == 0, folder
    return catalogue


@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_register_run_folders_links_every_file_as_the_files_say(entry, registered):
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore
    from anemoi_ckpt_nb.storage import open_storage

    store = CatalogueStore.open(open_storage(str(registered)))
    record = store.read_record(_record_uuid(entry))
    assert record is not None, f"{entry['path']} is not registered under {_record_uuid(entry)}"
    assert record.sha256 == entry["sha256"]
    expected = _expected_parent(entry)
    assert [(p.uuid, p.relation) for p in record.parents] == ([expected] if expected else [])
    if entry["kind"] == "training":
        embedded = _embedded_uuid(entry)
        if embedded and embedded != entry["pickled_uuid"]:
            # Either uuid finds the record.
            assert record.other_uuids == [embedded]
            assert store.find_record(embedded).uuid == record.uuid


def test_every_session_kind_is_covered():
    sessions = {(e["stack"], e["model"], e["session"]) for e in FILES}
    assert ("current", "gnn", "run") in sessions


def _run_ids() -> list[str]:
    return sorted({e["run_id"] for e in FILES if e["kind"] == "training"})


@pytest.mark.parametrize("run_id", _run_ids())
def test_a_run_reads_as_a_chain_in_every_lineage_face(run_id, registered, capsys):
    """The saves of one session continue from each other (no later save is a root), and the CLI
    tree, its --json and the notebook graph show the same checkpoints and the same links."""
    from anemoi_ckpt_nb.api import Catalogue

    catalogue = Catalogue(registered)
    entries = {e["uuid"]: e for e in catalogue.entries()}
    run = [e for e in entries.values() if e["run_id"] == run_id and e["kind"] == "training"]
    newest = max(run, key=lambda e: (e["global_step"], e["filename"] != "last.ckpt", e["uuid"]))
    capsys.readouterr()
    assert main(["lineage", newest["uuid"], "--catalogue", str(registered)]) == 0
    tree = capsys.readouterr().out.splitlines()
    assert main(["lineage", newest["uuid"], "--catalogue", str(registered), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    graph = catalogue.get(newest["uuid"]).lineage(collapse=None).model

    shown = [next(word for word in line.split() if word[0] not in "│├└") for line in tree]
    assert sorted(shown) == sorted(u[:8] for u in document["family"]) == sorted(n.id[:8] for n in graph.nodes)
    assert {(p["uuid"], child, p["relation"]) for child, links in document["links"].items() for p in links} == {
        (e.parent, e.child, e.relation) for e in graph.edges
    }
    # Roots: only the saves of the run's (or its first ancestor run's) first step.
    tops = [line.split()[0] for line in tree if line[0] not in " │├└"]
    first_steps = {entries[u]["global_step"] for u in entries if u[:8] in tops}
    assert len(first_steps) == 1
    for uuid in document["family"]:
        entry = entries[uuid]
        session = [e for e in run if [p["uuid"] for p in e["parents"]] == [p["uuid"] for p in entry["parents"]]]
        if entry["run_id"] == run_id and entry["kind"] == "training" and entry["global_step"] > min(
            e["global_step"] for e in session
        ):
            (link,) = document["links"][uuid]
            before = max(e["global_step"] for e in session if e["global_step"] < entry["global_step"])
            assert link["relation"] == "continued-from" and entries[link["uuid"]]["global_step"] == before
            assert entries[link["uuid"]]["filename"] != "last.ckpt"  # overwritten by the next save
            # What the file says stays in the record.
            assert document["parents"][uuid] == entry["parents"]
