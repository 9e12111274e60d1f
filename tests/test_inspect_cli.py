"""``anemoi-ckpt inspect`` through the installed console script, as a user runs it."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples

SCRIPT = Path(sys.executable).parent / "anemoi-ckpt"
HEAVY = ("torch", "boto3", "pandas", "ipywidgets", "numpy", "safetensors", "graphviz")


def _inspect(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ANEMOI_CKPT_DEBUG"}
    return subprocess.run(
        [str(SCRIPT), "inspect", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("inspect")
    training = examples.write_training_checkpoint(folder / "train.ckpt", parent_uuid="0b7d-parent")
    inference = examples.write_inference_checkpoint(folder / "inference.ckpt", source=training)
    (folder / "notes.txt").write_text("not a checkpoint\n")
    (folder / "evil.pkl").write_bytes(pickle.dumps(_Evil(folder / "PWNED")))
    truncated = folder / "truncated.ckpt"
    truncated.write_bytes(training.path.read_bytes()[:5000])
    return {"folder": folder, "training": training, "inference": inference, "truncated": truncated}


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_json_lines_one_object_per_file(files):
    training, inference = files["training"], files["inference"]
    done = _inspect(training.path, inference.path, "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["kind"] == "training" and second["kind"] == "inference"
    assert first["uuid"] == training.uuid
    assert first["run_id"] == training.run_id
    assert first["parent_uuid"] == "0b7d-parent"
    assert (first["epoch"], first["global_step"]) == (training.epoch, training.global_step)
    assert first["metadata_version"] == "1.0"
    assert first["dataset"]["name"] == "aifs-ea-an-oper-0001-mars-o96-2020-2020-6h-v1"
    sizes = first["sizes"]
    assert sizes["total"] == training.path.stat().st_size
    assert sizes["weights"] + sizes["optimizer"] + sizes["other"] == sizes["total"]
    assert sizes["optimizer"] > sizes["weights"] > 0
    assert second["sizes"]["optimizer"] == 0
    assert first["parameter_count"] == second["parameter_count"] > 0
    assert "torch_geometric.data.hetero_data.HeteroData" in first["opaque_classes"]


def test_text_summary(files):
    training = files["training"]
    done = _inspect(training.path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for expected in (str(training.path), "training (zip)", training.uuid, training.run_id, "0b7d-parent",
                     "weights", "optimizer", "version 1.0", "aifs-ea-an-oper-0001", "omegaconf.dictconfig.DictConfig"):
        assert expected in text


def test_bad_files_give_one_line_each_and_the_others_are_reported(files):
    folder = files["folder"]
    training = files["training"]
    done = _inspect(
        folder / "notes.txt", training.path, folder / "missing.ckpt", files["truncated"], folder / "evil.pkl", "--json"
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 4
    assert all(line.startswith("anemoi-ckpt: error: ") for line in errors)
    assert "notes.txt: not a torch checkpoint" in errors[0]
    assert "missing.ckpt: no such file" in errors[1]
    assert "truncated.ckpt" in errors[2] and "truncated or damaged" in errors[2]
    assert "evil.pkl: refused to load" in errors[3] and "posix.system" in errors[3]
    assert not (folder / "PWNED").exists()
    assert [json.loads(line)["uuid"] for line in done.stdout.splitlines()] == [training.uuid]


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [m for m in done.stdout.strip().split(",") if m]


def test_importing_the_package_and_help_import_no_heavy_module():
    assert _imported_after("import anemoi_ckpt_nb") == []
    # Every command's --help, and its nested subcommands' (site add, ...): argparse builds
    # them all, and a command module that imports a heavy module at the top shows here.
    assert _imported_after(
        "from anemoi_ckpt_nb.cli import COMMANDS, build_parser, main\n"
        "import argparse, contextlib, io\n"
        "def helps(parser, words):\n"
        "    yield words + ['--help']\n"
        "    for action in parser._actions:\n"
        "        if isinstance(action, argparse._SubParsersAction):\n"
        "            for name, sub in action.choices.items():\n"
        "                yield from helps(sub, words + [name])\n"
        "calls = list(helps(build_parser(), []))\n"
        "assert len(calls) > len(COMMANDS), calls\n"
        "for argv in calls:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)"
    ) == []


def test_help_from_the_console_script():
    done = subprocess.run([str(SCRIPT), "inspect", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--json" in done.stdout
