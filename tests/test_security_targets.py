"""A file's config names the classes anemoi-models builds: it must not name code to run (issue 18).

``load_model`` (and so ``Checkpoint.load_model``, ``convert --format pickled`` and the
``anemoi-ckpt`` runner of anemoi-inference) builds the model with the installed anemoi-models,
which calls Hydra's ``instantiate`` on the config the file carries. A ``_target_`` nested in the
``model`` section is called before the class around it, with its own arguments: a file whose
author puts ``builtins.open(path, "w")`` there would truncate a file of whoever loads it (Hydra
1.3.8 blocks ``exec``, ``os.system`` and ``subprocess`` by name, not ``open``, ``torch.save`` or
``shutil.copyfile``; older Hydra releases block nothing). These tests write such a
file from a real anemoi-training checkpoint and load it with the real anemoi-models.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from realenv import ROOT, child_environment
from realenv import missing as _missing
from realenv import real_python as _real_python

from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.conversion.targets import check_targets
from anemoi_ckpt_nb.errors import ModelLoadError

REAL = ROOT / "tests" / "data" / "real" / "current" / "gnn" / "run"


def with_metadata(path: Path, change) -> Path:
    """A copy of a safetensors file whose anemoi metadata ``change(metadata)`` edited."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    metadata = json.loads(header["__metadata__"]["anemoi"])
    change(metadata)
    header["__metadata__"]["anemoi"] = json.dumps(metadata)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    hostile = path.with_name("hostile.safetensors")
    hostile.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
    return hostile


def load_in_real_env(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    python = _real_python()
    code = "import sys; from anemoi_ckpt_nb import load_model; load_model(sys.argv[1])"
    return subprocess.run([python, "-c", code, str(path)], capture_output=True, text=True, env=child_environment(cwd),
                          cwd=cwd, timeout=600)


@pytest.fixture
def converted(tmp_path) -> Path:
    folders = sorted(REAL.glob("*/")) if REAL.is_dir() else []
    if not folders:
        _missing(f"the real fixtures ({REAL}) are not there")
    return convert(folders[0] / "last.ckpt", tmp_path / "out", format="safetensors").destination


@pytest.mark.parametrize("how", ["model", "data", "interpolated"])
def test_load_model_never_calls_a_target_the_file_names(converted, tmp_path, how):
    victim = tmp_path / "thesis.txt"
    victim.write_text("four years of work")
    # Not on Hydra 1.3.8's blocklist (exec, os.system and subprocess are): it truncates the file.
    payload = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    where = {"model": "config.model.processor.layer_kernels.Activation.evil",
             "data": "config.data.datasets.data.processors.normalizer.evil",
             "interpolated": "config.model.processor.layer_kernels.Activation.evil"}[how]

    def change(metadata):
        # Hydra calls a nested target (with its own arguments) before the one around it.
        config = metadata["config"]
        if how == "data":
            config["data"]["datasets"]["data"]["processors"]["normalizer"]["evil"] = payload
        elif how == "model":
            config["model"]["processor"]["layer_kernels"]["Activation"]["evil"] = payload
        else:  # brought into the model section from another one
            config["training"]["evil"] = payload
            config["model"]["processor"]["layer_kernels"]["Activation"]["evil"] = "${training.evil}"

    hostile = with_metadata(converted, change)
    done = load_in_real_env(hostile, tmp_path)
    assert victim.read_text() == "four years of work", "the file's config ran code"
    assert done.returncode != 0
    assert "ModelLoadError" in done.stderr and "builtins.open" in done.stderr and where in done.stderr, done.stderr[-2000:]


def test_the_unchanged_file_still_builds(converted, tmp_path):
    done = load_in_real_env(converted, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("target", [
    "os.system",
    "builtins.exec",
    "torch.nn.functional.gelu",  # a function, not a class
    "torch.nn.functional.importlib.import_module",  # reached through an allowed module: still importlib's
    "torch.nn.modules.module.warnings.catch_warnings",  # a class, but of the warnings module
    "subprocess.Popen",
    42,
])
def test_only_classes_of_the_model_packages_are_allowed(target):
    config = {"model": {"model": {"_target_": "torch.nn.Linear"}, "processor": {"act": {"_target_": target}}}}
    with pytest.raises(ModelLoadError) as caught:
        check_targets(config, "x.ckpt")
    assert "config.model.processor.act._target_" in str(caught.value) and "x.ckpt" in str(caught.value)


def test_the_classes_real_files_name_are_allowed():
    check_targets({"model": {"a": {"_target_": "torch.nn.GELU"}, "b": [{"_target_": "torch.nn.LayerNorm"}]},
                   "data": {"p": {"_target_": "anemoi.models.preprocessing.normalizer.InputNormalizer"}},
                   "training": {"_target_": "anemoi.training.train.methods.SingleTraining"}}, "x.ckpt")
