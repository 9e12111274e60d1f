"""The reading and converting commands never import torch (issue 16).

Each command runs in its own interpreter where importing torch is impossible: a
meta-path hook refuses ``torch`` and every ``torch.*`` and writes down who asked,
so a ``try: import torch / except ImportError`` fallback is caught too. The files
it works on are real torch files, written beforehand by this process with torch.
What the commands wrote is then checked here with the real torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples

#: Runs ``anemoi-ckpt`` with torch made unimportable; every attempt is logged to $NO_TORCH_LOG.
RUNNER = r"""
import os, sys, traceback

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            with open(os.environ["NO_TORCH_LOG"], "a") as log:
                log.write(f"import {name}\n{''.join(traceback.format_stack(limit=15))}\n")
            raise ImportError(f"torch is made unimportable by the test ({name})")
        return None

sys.meta_path.insert(0, NoTorch())
from anemoi_ckpt_nb.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run(tmp_path: Path, *args: str | Path, status: int = 0) -> subprocess.CompletedProcess:
    log = tmp_path / "torch-imports.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "ANEMOI_CKPT_DEBUG"}
    env["NO_TORCH_LOG"] = str(log)
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )
    attempts = log.read_text() if log.exists() else ""
    assert not attempts, f"anemoi-ckpt {' '.join(map(str, args))} tried to import torch:\n{attempts}\n{done.stderr}"
    assert done.returncode == status, done.stderr
    return done


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("torchfree")
    training = examples.write_training_checkpoint(folder / "train.ckpt", weights_bytes=300_000)
    inference = examples.write_inference_checkpoint(folder / "inference.ckpt", source=training)
    state = examples.write_state_dict(folder / "state.pt")
    examples.write_safetensors(folder / "weights.safetensors", metadata={"version": "1.0"})
    return {"folder": folder, "training": training, "inference": inference, "state": state}


def test_the_blocker_catches_an_import_of_torch(tmp_path):
    """The hook itself works: a command that does import torch is caught (so the others prove something)."""
    log = tmp_path / "log"
    env = dict(os.environ, NO_TORCH_LOG=str(log))
    code = RUNNER.replace("from anemoi_ckpt_nb.cli import main", "import safetensors.torch")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0 and "import torch" in log.read_text()


def test_inspect_every_kind_without_torch(files, tmp_path):
    folder = files["folder"]
    paths = [files["training"].path, files["inference"].path, folder / "state.pt", folder / "weights.safetensors"]
    done = _run(tmp_path, "inspect", *paths, "--json")
    summaries = [json.loads(line) for line in done.stdout.splitlines()]
    assert [s["kind"] for s in summaries] == ["training", "inference", "state-dict", "safetensors"]
    training = summaries[0]
    assert training["uuid"] == files["training"].uuid
    assert training["sizes"]["optimizer"] > training["sizes"]["weights"] > 0
    assert training["parameter_count"] == summaries[1]["parameter_count"] > 0
    assert summaries[2]["parameter_count"] == sum(t.numel() for t in files["state"].values())
    assert "torch_geometric.data.hetero_data.HeteroData" in training["opaque_classes"]
    assert _run(tmp_path, "inspect", files["training"].path).stdout.count("training (zip)") == 1


@pytest.mark.parametrize("fmt", ["anemoi", "safetensors"])
def test_convert_without_torch_writes_what_torch_reads_bit_identically(files, tmp_path, fmt):
    import torch

    training = files["training"]
    out = tmp_path / "out"
    done = _run(tmp_path, "convert", training.path, "-o", out, "--format", fmt, "--json")
    result = json.loads(done.stdout.splitlines()[0])
    destination = Path(result["destination"])
    if fmt == "anemoi":
        loaded = torch.load(destination, weights_only=True, mmap=True)
    else:
        from safetensors.torch import load_file

        # Besides the weights: the supporting arrays and the model's inputs (graph, statistics).
        loaded = {
            k: v for k, v in load_file(destination).items() if not k.startswith(("anemoi-supporting-arrays/", "anemoi-model/"))
        }
    source = _torch_load_training(training.path)["state_dict"]
    expected = {name.removeprefix("model."): t for name, t in source.items() if name.startswith("model.")}
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        assert torch.equal(loaded[name].contiguous().view(torch.uint8), tensor.contiguous().view(torch.uint8)), name
    _run(tmp_path, "inspect", destination)


def _torch_load_training(path: Path) -> dict:
    """torch's own load of a training checkpoint (the anemoi and torch_geometric classes stubbed)."""
    import pickle
    import types

    import torch

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                return type(name, (), {"__setstate__": lambda self, state: None, "__module__": module})

    lenient = types.ModuleType("lenient_pickle")
    lenient.Unpickler, lenient.load = Unpickler, pickle.load
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=lenient)


def test_validate_and_upgrade_without_torch(files, tmp_path):
    training = files["training"]
    # Exit status 1: warnings (the example's recorded package versions are not installed here).
    report = json.loads(_run(tmp_path, "validate", training.path, "--json", status=1).stdout)
    assert report["verdict"] == "warnings"
    _run(tmp_path, "upgrade", training.path, tmp_path / "upgraded.ckpt")
    _run(tmp_path, "inspect", tmp_path / "upgraded.ckpt")


def test_register_ls_show_without_torch(files, tmp_path):
    training = files["training"]
    catalogue = tmp_path / "catalogue"
    _run(tmp_path, "init", catalogue)
    _run(tmp_path, "register", training.path, "--name", "torchfree", "--catalogue", catalogue)
    listed = _run(tmp_path, "ls", "--json", "--catalogue", catalogue).stdout
    assert training.uuid in listed
    shown = json.loads(_run(tmp_path, "show", "torchfree", "--json", "--catalogue", catalogue).stdout)
    assert shown["uuid"] == training.uuid


REAL = Path(os.environ.get("ANEMOI_CKPT_REAL_FIXTURES", Path(__file__).parent / "data" / "real"))


@pytest.mark.skipif(not REAL.is_dir(), reason="the real anemoi fixtures are not here")
def test_real_anemoi_files_without_torch(tmp_path):
    """Files written by anemoi-training itself (current and early-2025): inspected and converted without torch."""
    import torch

    training = sorted(REAL.glob("*/gnn/run/*/last.ckpt")) + sorted(REAL.glob("current/graphtransformer/run/*/last.ckpt"))
    inference = [path.with_name("inference-last.ckpt") for path in training]
    assert training and all(path.exists() for path in inference)
    done = _run(tmp_path, "inspect", *training, *inference, "--json")
    kinds = [json.loads(line)["kind"] for line in done.stdout.splitlines()]
    assert kinds == ["training"] * len(training) + ["inference"] * len(inference)
    for number, source in enumerate(training):
        out = tmp_path / f"out-{number}"
        result = json.loads(_run(tmp_path, "convert", source, "-o", out, "--json").stdout.splitlines()[0])
        loaded = torch.load(result["destination"], weights_only=True, mmap=True)
        assert loaded and all(isinstance(tensor, torch.Tensor) for tensor in loaded.values())


class _Reduce:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return self.args[0], self.args[1:]


def test_legacy_format_files_without_torch(tmp_path):
    """torch's format of before 1.6 (``_use_new_zipfile_serialization=False``): read, converted,
    refused by upgrade with a clear error and, with a payload in its pickle, refused, all without torch."""
    import torch

    legacy = examples.write_training_checkpoint(tmp_path / "legacy.ckpt", weights_bytes=100_000, embedded=None, legacy=True)
    summary = json.loads(_run(tmp_path, "inspect", legacy.path, "--json").stdout)
    assert (summary["kind"], summary["format"], summary["uuid"]) == ("training", "legacy", legacy.uuid)
    result = json.loads(_run(tmp_path, "convert", legacy.path, "-o", tmp_path / "out", "--json").stdout.splitlines()[0])
    converted = torch.load(result["destination"], weights_only=True, mmap=True)
    source = _torch_load_training(legacy.path)["state_dict"]
    expected = {name.removeprefix("model."): t for name, t in source.items() if name.startswith("model.")}
    assert set(converted) == set(expected)
    for name, tensor in expected.items():
        assert converted[name].dtype == tensor.dtype and torch.equal(converted[name], tensor), name
    # upgrade rewrites zip archives only: the legacy file is refused by name, nothing is written.
    done = _run(tmp_path, "upgrade", legacy.path, tmp_path / "upgraded.ckpt", status=2)
    assert "legacy format" in done.stderr and "anemoi-ckpt convert" in done.stderr, done.stderr
    assert not (tmp_path / "upgraded.ckpt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".upgraded.ckpt")]

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    payload = {"epoch": 1, "state_dict": {"model.w": torch.ones(3)}, "hyper_parameters": {"x": _Reduce(os.system, f"touch {marker}")}}
    torch.save(payload, evil, _use_new_zipfile_serialization=False)
    done = _run(tmp_path, "inspect", evil, status=2)
    assert "posix.system" in done.stderr and not marker.exists()
