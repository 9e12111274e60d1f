"""``validate`` gives the right verdict on compatible, drifted and broken files."""

from __future__ import annotations

import json
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path


from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.read.embedded import top_directory, write_embedded
from anemoi_ckpt_nb.compat.migrate import migrate
from anemoi_ckpt_nb.compat.upgrade import upgrade_checkpoint
from anemoi_ckpt_nb.compat.validate import looks_like_path, render_text, validate_checkpoint

HERE_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
UTILS = version("anemoi-utils")


def current_metadata(**module_versions: str) -> dict:
    """Metadata 2.0 recorded in an environment like this one."""
    document = migrate(examples.make_metadata(uuid="v-1", run_id="r-1", grid_points=8)).document
    document["provenance_training"]["python"] = HERE_PYTHON
    document["provenance_training"]["module_versions"] = {k.replace("__", "."): {"version": v} for k, v in module_versions.items()}
    document["provenance_training"]["git_versions"] = {}
    return document


def write_checkpoint(path: Path, metadata: dict | None, *, embedded: str | None = "anemoi.json") -> Path:
    """A small Lightning checkpoint written with torch.save, metadata embedded as anemoi-utils does."""
    import numpy as np
    import torch

    checkpoint = {
        "epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.5.0",
        "state_dict": {"model.w": torch.ones(3, 2)}, "optimizer_states": [], "lr_schedulers": [],
        "loops": {}, "callbacks": {}, "hyper_parameters": {"metadata": metadata},
    }
    torch.save(checkpoint, path)
    if embedded and metadata is not None:
        arrays = {"data": {"latitudes": np.zeros(8)}} if str(metadata.get("version", "")).startswith("2") else {"latitudes": np.zeros(8)}
        with zipfile.ZipFile(path, "a") as zf:
            write_embedded(zf, top_directory(zf.namelist()), metadata, arrays, name=embedded)
    return path


def codes(report) -> set[str]:
    return {f.code for f in report.findings}


# --- compatible ------------------------------------------------------------------------------


def test_current_metadata_trained_with_installed_packages_is_compatible(tmp_path):
    path = write_checkpoint(tmp_path / "ok.ckpt", current_metadata(anemoi__utils=UTILS))
    report = validate_checkpoint(path)
    assert report.verdict == "compatible", render_text(report)
    assert report.exit_code() == 0
    assert (report.format, report.metadata_source, report.metadata_version) == ("training", "anemoi.json", "2.0")
    assert report.migrations == [] and report.missing_keys == []
    assert [(p.package, p.status) for p in report.packages] == [("anemoi.utils", "same")]
    assert report.can_convert and report.can_load_for_inference


def test_upgraded_example_has_no_pending_migrations(training_checkpoint, tmp_path):
    upgraded = upgrade_checkpoint(training_checkpoint.path, tmp_path / "up.ckpt").destination
    before, after = validate_checkpoint(training_checkpoint.path), validate_checkpoint(upgraded)
    assert "migrations-pending" in codes(before)
    assert "migrations-pending" not in codes(after)
    assert after.metadata_version == "2.0" and after.migrations == []


# --- drifted ---------------------------------------------------------------------------------


def test_example_checkpoint_drifted_from_this_environment_warns(training_checkpoint):
    # Trained with anemoi-models 0.5.2 (absent here) and anemoi-utils 0.4.22 (older than installed).
    report = validate_checkpoint(training_checkpoint.path)
    assert report.verdict == "warnings", render_text(report)
    assert report.exit_code() == 1
    assert report.exit_code(strict=True) == 2
    status = {p.package: p.status for p in report.packages}
    assert status["anemoi.models"] == "missing"
    assert status["anemoi.utils"] == "newer-installed"
    assert "anemoi.training" not in status  # exempt, as anemoi-inference does
    assert report.migrations == ["m04_module_versions_as_dicts", "m06_single_to_multi_dataset"]
    assert report.can_convert and not report.can_load_for_inference
    assert "anemoi.models.data_indices.collection.IndexCollection" not in report.unmapped_classes


def test_missing_package_warns_with_the_install_command(tmp_path):
    path = write_checkpoint(tmp_path / "m.ckpt", current_metadata(anemoi__utils=UTILS, anemoi__models="0.3.0"))
    report = validate_checkpoint(path)
    assert report.verdict == "compatible" and report.environment_verdict == "warnings"  # the file is fine
    missing = next(f for f in report.findings if f.code == "package-missing")
    assert missing.scope == "environment"
    assert "anemoi.models 0.3.0" in missing.message and missing.hint == "pip install anemoi-models==0.3.0"
    assert report.exit_code() == 0 and report.exit_code(environment=True) == 1


def test_older_package_installed_than_trained_is_incompatible(tmp_path):
    path = write_checkpoint(tmp_path / "new.ckpt", current_metadata(anemoi__utils="99.0.0"))
    report = validate_checkpoint(path)
    assert report.environment_verdict == "incompatible" and report.verdict == "compatible"
    assert [p.status for p in report.packages] == ["older-installed"]
    assert not report.can_load_for_inference
    assert report.exit_code() == 0 and report.exit_code(environment=True) == 2


def test_all_packages_compares_non_anemoi_ones_too(tmp_path):
    path = write_checkpoint(tmp_path / "p.ckpt", current_metadata(anemoi__utils=UTILS, pydantic="1.0.0"))
    assert [p.package for p in validate_checkpoint(path).packages] == ["anemoi.utils"]
    everything = validate_checkpoint(path, all_packages=True)
    assert {p.package: p.status for p in everything.packages}["pydantic"] == "newer-installed"


def test_ai_models_json_is_compatible_with_a_warning(tmp_path):
    path = write_checkpoint(tmp_path / "old.ckpt", current_metadata(anemoi__utils=UTILS), embedded="ai-models.json")
    report = validate_checkpoint(path)
    assert report.metadata_source == "ai-models.json"
    assert report.verdict == "warnings" and "deprecated-name" in codes(report)


def test_newer_metadata_than_known_warns_and_still_checks_the_environment(tmp_path):
    document = current_metadata(anemoi__utils=UTILS)
    document["version"] = "3.0"
    report = validate_checkpoint(write_checkpoint(tmp_path / "future.ckpt", document))
    assert report.verdict == "warnings" and "metadata-newer" in codes(report)
    assert [p.status for p in report.packages] == ["same"]


# --- broken ----------------------------------------------------------------------------------


def test_truncated_file_is_incompatible(training_checkpoint, tmp_path):
    data = training_checkpoint.path.read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    report = validate_checkpoint(path)
    assert report.verdict == "incompatible" and "unreadable" in codes(report)


def test_not_a_checkpoint_is_incompatible(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    assert validate_checkpoint(path).exit_code() == 2


def test_metadata_missing_required_keys_is_incompatible(tmp_path):
    document = examples.make_metadata(uuid="b-1", run_id="r-1")
    del document["data_indices"]
    report = validate_checkpoint(write_checkpoint(tmp_path / "broken.ckpt", document))
    assert report.verdict == "incompatible"
    assert report.missing_keys == ["data_indices"]
    assert report.migrations == ["m04_module_versions_as_dicts"]
    assert not report.can_convert


def test_legacy_metadata_that_cannot_be_migrated_names_what_is_missing(tmp_path):
    document = json.loads((Path(__file__).parent / "data/golden/metadata-0.0-no-data-indices.json").read_text())
    report = validate_checkpoint(write_checkpoint(tmp_path / "legacy.ckpt", document))
    assert report.verdict == "incompatible" and "not-migratable" in codes(report)
    assert "data_indices" in report.missing_keys


def test_weights_without_metadata_are_incompatible(tmp_path):
    path = tmp_path / "weights.pt"
    examples.write_state_dict(path, weights_bytes=1024)
    report = validate_checkpoint(path)
    assert report.format == "state-dict" and report.verdict == "incompatible" and "no-metadata" in codes(report)


# --- the command -----------------------------------------------------------------------------


def test_cli_json_report_and_exit_status(training_checkpoint, capsys):
    assert main(["validate", str(training_checkpoint.path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "warnings" and data["exit_code"] == 1
    assert data["metadata_version"] == "1.0" and data["current_version"] == "2.0"
    assert main(["validate", str(training_checkpoint.path), "--json", "--strict"]) == 2
    assert json.loads(capsys.readouterr().out)["verdict"] == "incompatible"


def test_cli_text_report(training_checkpoint, capsys):
    assert main(["validate", str(training_checkpoint.path)]) == 1
    out = capsys.readouterr().out
    assert "migrations that would run: m04_module_versions_as_dicts, m06_single_to_multi_dataset" in out
    assert "anemoi.models: 0.5.2 -> not installed (missing)" in out
    assert out.rstrip().endswith("verdict: warnings (exit 1)")


def test_cli_broken_file_exits_2(tmp_path, capsys):
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"PK\x03\x04 broken")
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr().out
    assert "verdict: incompatible (exit 2)" in out
    # Nothing is known of an unreadable file's runner (it is not "the weights alone, without a graph").
    assert "  runs with: -\n" in out and "convert its training checkpoint again" not in out


def test_cli_missing_file_is_reported_not_looked_up(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "gone.ckpt")]) == 2
    assert "verdict: incompatible" in capsys.readouterr().out
    assert looks_like_path("run/last.ckpt") and looks_like_path("model.safetensors")
    assert not looks_like_path("4b3c2d1e") and not looks_like_path("candidate-2025")


def test_cli_validates_a_registered_checkpoint_by_id(training_checkpoint, tmp_path, capsys):
    from anemoi_ckpt_nb.api import Catalogue

    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path, upload=False)
    assert main(["validate", checkpoint.uuid[:8], "--catalogue", str(tmp_path / "catalogue"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["metadata_source"] == "catalogue" and data["path"].startswith(checkpoint.uuid)
    assert data["migrations"] == ["m04_module_versions_as_dicts", "m06_single_to_multi_dataset"]
    assert main(["validate", "no-such-name", "--catalogue", str(tmp_path / "catalogue")]) == 2
    assert "no checkpoint 'no-such-name'" in capsys.readouterr().err


def test_uncommitted_training_code_warns(tmp_path):
    document = current_metadata(anemoi__utils=UTILS)
    document["provenance_training"]["git_versions"] = {
        "anemoi.training": {"git": {"sha1": "abc", "modified_files": 2, "untracked_files": 0}}}
    report = validate_checkpoint(write_checkpoint(tmp_path / "dirty.ckpt", document))
    assert report.verdict == "warnings" and "uncommitted-training-code" in codes(report)


def test_inference_checkpoint_needs_the_pickled_model_classes(tmp_path):
    path = examples.write_inference_checkpoint(tmp_path / "inference.ckpt", weights_bytes=2048).path
    report = validate_checkpoint(path)
    assert report.format == "inference"
    assert any(name.startswith("anemoi.models.") for name in report.unmapped_classes)
    missing = next(f for f in report.findings if f.code == "classes-not-installed")
    assert "anemoi.models" in missing.message


def test_a_real_inference_file_is_judged_apart_from_the_environment_checking_it(capsys):
    """Issue 12: anemoi-training's own inference file, here without anemoi-models, once exited 1 for the environment."""
    real = Path(__file__).parent / "data" / "real" / "current" / "gnn" / "run"
    path = next(real.glob("*/inference-last.ckpt"))
    report = validate_checkpoint(path)
    assert report.verdict == "compatible", render_text(report)
    here = {f.code for f in report.findings if f.scope == "environment"}
    file = {f.code for f in report.findings if f.scope == "file" and f.severity != "info"}
    assert file == set(), render_text(report)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("verdict: compatible (exit 0)")
    if here:  # this environment differs from anemoi-training's (it does, without anemoi-models): shown apart
        assert "this environment (" in out and "--environment counts them" in out
        assert main(["validate", str(path), "--environment", "--json"]) == report.exit_code(environment=True) > 0
        data = json.loads(capsys.readouterr().out)
        assert data["file_verdict"] == "compatible" and data["environment_counted"]
        assert {f["scope"] for f in data["findings"] if f["code"] in here} == {"environment"}
