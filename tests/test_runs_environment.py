"""Code versions: capture, comparison with a checkpoint's provenance, drift errors; overrides."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.compat import environment as env
from anemoi_ckpt_nb.runs import drift
from anemoi_ckpt_nb.runs import plans as runs
from anemoi_ckpt_nb.errors import CodeCheckoutError, DriftError, RunPlanError


def snapshot(**packages: str | None) -> env.EnvironmentSnapshot:
    """An environment as the run's node would report it: the checkpoint's versions unless overridden."""
    base = {name: examples.DEFAULT_MODULE_VERSIONS.get(name) for name in env.TRACKED_PACKAGES}
    base.update({name.replace("__", "."): value for name, value in packages.items()})
    return env.EnvironmentSnapshot(python="3.11.9", packages=base)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True, capture_output=True, text=True,
    ).stdout


@pytest.fixture
def code_checkout(tmp_path) -> Path:
    repo = tmp_path / "anemoi-core"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('train')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    return repo


# --- capture ------------------------------------------------------------------------------


def test_capture_reads_distribution_versions_without_importing_them():
    code = (
        "import sys, json; from anemoi_ckpt_nb.compat.environment import capture_environment; "
        "s = capture_environment(); "
        "print(json.dumps([s.packages, 'torch' in sys.modules, 'torch_geometric' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    packages, torch_imported, pyg_imported = json.loads(done.stdout)
    assert packages["torch"] == importlib.metadata.version("torch")
    assert packages["anemoi.utils"] == importlib.metadata.version("anemoi-utils")
    assert set(packages) == set(env.TRACKED_PACKAGES)
    assert not torch_imported and not pyg_imported


def test_an_import_name_is_found_under_its_distribution_however_it_is_spelled() -> None:
    # One lookup serves capture (tracked names), validate (any module a checkpoint names) and the
    # model loader: a dotted name finds its dashed distribution, a submodule its top-level one.
    assert env.installed_version("anemoi.ckpt_nb") == importlib.metadata.version("anemoi-ckpt-nb")
    assert env.installed_version("torch") == importlib.metadata.version("torch")
    assert env.installed_version("botocore.client") == importlib.metadata.version("botocore")
    assert env.installed_version("no_such_package.anywhere") is None


def test_git_state_of_clean_and_dirty_checkouts(code_checkout):
    clean = env.git_state(code_checkout)
    assert clean.commit == git(code_checkout, "rev-parse", "HEAD").strip()
    assert not clean.dirty and clean.path == str(code_checkout.resolve())

    (code_checkout / "train.py").write_text("print('changed')\n")
    (code_checkout / "notes.txt").write_text("new\n")
    dirty = env.capture_environment(code_path=code_checkout).git
    assert dirty.dirty and dirty.commit == clean.commit
    assert dirty.modified_files == ["train.py"] and dirty.untracked_files == ["notes.txt"]


def test_git_state_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    with pytest.raises(CodeCheckoutError, match="failed") as info:
        env.git_state(tmp_path)
    assert info.value.path == str(tmp_path) and "git clone" in info.value.hint


def test_git_state_without_git_says_so(code_checkout, monkeypatch, tmp_path):
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(CodeCheckoutError, match="'git' command is not installed"):
        env.git_state(code_checkout)


# --- comparison -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_with_0_5_2(tmp_path_factory) -> examples.ExampleCheckpoint:
    versions = dict(examples.DEFAULT_MODULE_VERSIONS, **{"anemoi.models": "0.5.2", "anemoi.training": "0.4.1"})
    return examples.write_training_checkpoint(
        tmp_path_factory.mktemp("drift") / "a.ckpt", weights_bytes=20_000, module_versions=versions
    )


def test_minor_anemoi_models_difference_blocks_a_resume_not_a_fork(trained_with_0_5_2):
    provenance = trained_with_0_5_2.metadata["provenance_training"]
    here = snapshot(anemoi__models="0.6.0")

    resume = drift.compare_environment(provenance, here, mode="resume")
    assert [(d.name, d.checkpoint, d.environment) for d in resume.blocking] == [("anemoi.models", "0.5.2", "0.6.0")]
    with pytest.raises(DriftError) as info:
        drift.enforce(resume, allow_drift=False, subject="resume of x")
    assert any("anemoi.models: checkpoint 0.5.2, environment 0.6.0" in line for line in info.value.differences)
    assert "--allow-drift" in info.value.hint
    drift.enforce(resume, allow_drift=True, subject="resume of x")  # allowed: no error

    fork = drift.compare_environment(provenance, here, mode="fork")
    assert not fork.blocking and [d.name for d in fork.warnings] == ["anemoi.models"]


def test_patch_levels_and_other_packages_are_warnings(trained_with_0_5_2):
    provenance = trained_with_0_5_2.metadata["provenance_training"]
    here = snapshot(anemoi__models="0.5.3", torch="2.13.0+cpu", anemoi__training="0.4.1")
    report = drift.compare_environment(provenance, here, mode="resume")
    assert not report.blocking
    reasons = {d.name: d.reason for d in report.warnings}
    assert reasons["anemoi.models"] == "different patch version"
    assert reasons["torch"] == "different major or minor version"


def test_anemoi_training_minor_blocks_and_missing_packages_warn(trained_with_0_5_2):
    provenance = trained_with_0_5_2.metadata["provenance_training"]
    report = drift.compare_environment(provenance, snapshot(anemoi__training="0.5.0", torch_geometric=None), mode="resume")
    assert [d.name for d in report.blocking] == ["anemoi.training"]
    missing = [d for d in report.warnings if d.name == "torch_geometric"]
    assert missing and "not installed" in missing[0].reason


def test_newer_anemoi_utils_provenance_format_is_understood():
    provenance = {
        "python": "3.11.9",
        "module_versions": {"anemoi.models": {"version": "0.9.1", "source": {"url": "https://example.org"}}},
        "git_versions": {"anemoi.training": {"git": {"sha1": "abc", "modified_files": 2, "untracked_files": 0}}},
    }
    code = env.checkpoint_code(provenance)
    assert code.modules == {"anemoi.models": "0.9.1"} and code.git == {"anemoi.training": "abc"}
    assert code.git_dirty == ["anemoi.training"]
    report = drift.compare_environment(provenance, snapshot(anemoi__models="0.10.0"), mode="resume")
    assert [d.name for d in report.blocking] == ["anemoi.models"]


def test_dirty_tree_blocks_only_when_the_policy_requires_clean(trained_with_0_5_2, code_checkout):
    (code_checkout / "train.py").write_text("print('hack')\n")
    here = snapshot()
    here.git = env.git_state(code_checkout)
    provenance = trained_with_0_5_2.metadata["provenance_training"]

    relaxed = drift.compare_environment(provenance, here, mode="fork")
    assert not relaxed.blocking and any(d.what == "git" and "uncommitted" in d.reason for d in relaxed.warnings)
    strict = drift.compare_environment(provenance, here, mode="fork", require_clean=True)
    assert [d.what for d in strict.blocking] == ["git"] and "train.py" in strict.blocking[0].reason


# --- overrides -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.8.0", "system"), ("0.9.1", "system"), ("0.7.0", "hardware"), ("0.4.1", "hardware"), (None, "system")],
)
def test_layout_follows_the_installed_anemoi_training(version, expected):
    layout, reason = runs.choose_layout(snapshot(anemoi__training=version))
    assert layout == expected and (version or "not installed") in reason
    assert runs.choose_layout(snapshot(anemoi__training=version), "hardware")[0] == "hardware"


def test_overrides_use_anemoi_training_names(tmp_path):
    ckpt = tmp_path / "cache" / "u" / "epoch 3.ckpt"
    fork, link = runs.training_overrides(mode="fork", layout="system", run_id="new", parent_run_id="old",
                                         checkpoint=ckpt, load_weights_only=True)
    assert fork == ["training.run_id=new", "training.fork_run_id=old",
                    f"system.input.warm_start='{ckpt}'", "training.load_weights_only=true"]
    assert link is None
    resume, _ = runs.training_overrides(mode="resume", layout="system", run_id="old", parent_run_id="old",
                                        checkpoint=ckpt, load_weights_only=False)
    assert resume[:2] == ["training.run_id=old", "training.fork_run_id=null"]
    legacy, link = runs.training_overrides(mode="fork", layout="hardware", run_id=None, parent_run_id="old",
                                           checkpoint=ckpt, load_weights_only=True, checkpoints_dir=tmp_path / "out")
    assert legacy == ["training.fork_run_id=old", f"hardware.paths.checkpoints={tmp_path / 'out'}",
                      "hardware.files.warm_start='epoch 3.ckpt'", "training.load_weights_only=true"]
    assert link == tmp_path / "out" / "old" / "epoch 3.ckpt"


@pytest.mark.parametrize("run_id", ["..", "../elsewhere", "a/b", ""])
def test_hardware_layout_refuses_a_run_id_that_is_not_one_folder(tmp_path, run_id):
    with pytest.raises(RunPlanError, match="folder name"):
        runs.training_overrides(mode="fork", layout="hardware", run_id=None, parent_run_id=run_id,
                                checkpoint=tmp_path / "c.ckpt", load_weights_only=True, checkpoints_dir=tmp_path / "out")


def test_checkpoint_code_ignores_git_versions_of_an_unexpected_shape():
    code = env.checkpoint_code({"python": "3.11", "git_versions": {"a": "3f2c1a9", "b": {"git": "x"},
                                                                     "c": {"git": {"sha1": "abc", "modified_files": 1}}}})
    assert code.git == {"c": "abc"} and code.git_dirty == ["c"]


def test_hydra_value_quotes_what_hydra_would_misparse():
    assert runs.hydra_value("/a/b-c_d.ckpt") == "/a/b-c_d.ckpt"
    assert runs.hydra_value("it's here") == "'it\\'s here'"
    assert runs.hydra_value(None) == "null" and runs.hydra_value(False) == "false"


@pytest.mark.parametrize(
    ("value", "expected"),
    [  # each expected text read back to the value by hydra-core 1.3.2's override parser and OmegaConf
        ("/x/back\\slash", "'/x/back\\slash'"),  # a backslash not before a quote is literal
        ("/x/end\\", "'/x/end\\\\'"),  # ... but before the closing quote it escapes
        ("/x/it\\'s", "'/x/it\\\\\\'s'"),
        ("/x/${oc.env:HOME}/y", "'/x/\\${oc.env:HOME}/y'"),  # OmegaConf would resolve it
        ("/data/é/epoch.ckpt", "'/data/é/epoch.ckpt'"),  # Hydra's unquoted values are ASCII only
        ("42", "'42'"), ("1e5", "'1e5'"), ("nan", "'nan'"), ("True", "'True'"), ("NULL", "'NULL'"),  # else not strings
        (42, "42"), (2.5, "2.5"), ("abc-12", "abc-12"),
    ],
)
def test_hydra_value_reads_back_as_the_same_string(value, expected):
    assert runs.hydra_value(value) == expected


def test_environment_module_imports_nothing_heavy():
    code = "import sys; import anemoi_ckpt_nb.runs.plans, anemoi_ckpt_nb.runs.jobscript; " \
           "print(sorted(m for m in ('torch', 'boto3', 'pandas', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.stdout.strip() == "[]"
