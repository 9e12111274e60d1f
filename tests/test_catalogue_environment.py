"""What a record says about code: the checkpoint's module versions (either anemoi-utils form)
and the environment that registered it (Python, packages, a training-code checkout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.compat import environment as env
from anemoi_ckpt_nb.errors import CodeCheckoutError
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord


def cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "anemoi_ckpt_nb", *args],
        capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result


def git_checkout(folder: Path, *, dirty: bool) -> Path:
    """A real git repository with one commit, and an uncommitted file when ``dirty``."""
    folder.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            check=True, capture_output=True, text=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    (folder / "train.py").write_text("print('train')\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "first")
    if dirty:
        (folder / "train.py").write_text("print('changed')\n")
    return folder


# --- the checkpoint's module versions --------------------------------------------------------


def test_record_keeps_the_version_of_newer_anemoi_utils_module_versions(tmp_path):
    # Newer anemoi-utils records {"version": ..., "source": ...}; older ones a plain string.
    versions = {
        "anemoi.models": {"version": "0.5.2", "source": {"path": "/site-packages/anemoi/models"}},
        "anemoi.training": "0.4.1",
        "torch": {"version": "2.5.1", "source": None},
        "anemoi.graphs": {"source": "unknown"},  # no version recorded: left out, not "None"
    }
    checkpoint = examples.write_training_checkpoint(tmp_path / "dict-versions.ckpt", module_versions=versions)
    catalogue = Catalogue.create(tmp_path / "catalogue")
    record = catalogue.register(checkpoint.path).record

    assert record.code.modules == {"anemoi.models": "0.5.2", "anemoi.training": "0.4.1", "torch": "2.5.1"}
    shown = cli("show", record.uuid[:8], "--catalogue", str(tmp_path / "catalogue")).stdout
    assert "anemoi.models 0.5.2" in shown and "source" not in shown


# --- the environment that registered it ------------------------------------------------------


def test_registration_records_python_packages_and_the_code_checkout(tmp_path, training_checkpoint):
    checkout = git_checkout(tmp_path / "anemoi-core", dirty=True)
    catalogue = Catalogue.create(tmp_path / "catalogue")
    record = catalogue.register(training_checkpoint.path, code_checkout=checkout).record

    here = env.capture_environment()
    registered = record.registered_with
    assert registered is not None
    assert registered.python == here.python
    assert registered.packages == here.packages and registered.packages["torch"] == env.installed_version("torch")
    assert registered.git is not None and registered.git.dirty and registered.git.modified_files == ["train.py"]
    assert registered.git.commit == env.git_state(checkout).commit

    # It is stored in the record, not only returned.
    stored = json.loads(catalogue.store.storage.get(f"records/{record.uuid}.json")[0])
    assert stored["registered_with"]["git"]["commit"] == registered.git.commit
    assert stored["registered_with"]["packages"]["torch"] == registered.packages["torch"]


def test_registration_without_a_checkout_still_records_the_environment(tmp_path, training_checkpoint):
    record = Catalogue.create(tmp_path / "catalogue").register(training_checkpoint.path).record
    assert record.registered_with is not None and record.registered_with.git is None
    assert record.registered_with.python == env.capture_environment().python


def test_a_checkout_that_is_not_git_refuses_before_anything_is_written(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CodeCheckoutError):
        catalogue.register(training_checkpoint.path, code_checkout=tmp_path / "plain")
    assert list(catalogue.store.storage.list("records/")) == []


def test_records_written_before_the_field_existed_still_read(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    record = catalogue.register(training_checkpoint.path).record
    old = record.model_dump(mode="json")
    del old["registered_with"]
    assert CheckpointRecord.model_validate(old).registered_with is None


def test_register_and_show_commands_carry_the_checkout(tmp_path, training_checkpoint):
    checkout = git_checkout(tmp_path / "anemoi-core", dirty=False)
    commit = env.git_state(checkout).commit
    url = str(tmp_path / "catalogue")
    cli("init", url)
    cli("--catalogue", url, "register", str(training_checkpoint.path), "--code-checkout", str(checkout))

    text = cli("--catalogue", url, "show", training_checkpoint.uuid[:8]).stdout
    line = next(line for line in text.splitlines() if line.startswith("registered with"))
    assert f"python {env.capture_environment().python}" in line
    assert f"torch {env.installed_version('torch')}" in line
    assert f"{commit[:12]} (clean)" in line and str(checkout.resolve()) in line

    document = json.loads(cli("--catalogue", url, "show", training_checkpoint.uuid[:8], "--json").stdout)
    assert document["registered_with"]["git"] == {
        "path": str(checkout.resolve()), "commit": commit, "dirty": False, "modified_files": [], "untracked_files": [],
    }
