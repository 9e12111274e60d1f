"""What a file is, in words: a converted inference checkpoint says so, whatever ``kind`` it is read as."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.read.reader import open_checkpoint
from anemoi_ckpt_nb.read.summary import summary_text

SCRIPT = Path(sys.executable).parent / "anemoi-ckpt"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("label")
    training = examples.write_training_checkpoint(folder / "train.ckpt", weights_bytes=20_000)
    convert(training.path, folder / "inference.ckpt")  # format "anemoi": weights + anemoi.json, and a sidecar
    convert(training.path, folder / "inference.safetensors", format="safetensors")
    examples.write_state_dict(folder / "weights.pt")
    return {"training": training.path, "source_uuid": training.uuid, "anemoi": folder / "inference.ckpt",
            "safetensors": folder / "inference.safetensors", "state_dict": folder / "weights.pt"}


def test_a_converted_checkpoint_is_labelled_an_inference_checkpoint(files):
    with open_checkpoint(files["anemoi"]) as checkpoint:
        # kind stays what the catalogue and the converter's own check key on
        assert checkpoint.kind == "state-dict"
        assert checkpoint.label == f"inference checkpoint (weights only, converted by anemoi-ckpt-nb from {files['source_uuid']})"
        summary = checkpoint.summary()
    assert summary["kind"] == "state-dict" and summary["label"] == checkpoint.label
    kind_line = summary_text(summary).splitlines()[1]
    assert kind_line.split() == ["kind", "inference", "checkpoint", "(weights", "only,", "converted", "by",
                                 "anemoi-ckpt-nb", "from", f"{files['source_uuid']});", "stored", "as", "state-dict", "(zip)"]


def test_a_converted_safetensors_file_is_labelled_too(files):
    with open_checkpoint(files["safetensors"]) as checkpoint:
        assert checkpoint.kind == "safetensors"
        assert checkpoint.label.startswith("inference checkpoint (weights only, converted")
        assert summary_text(checkpoint.summary()).splitlines()[1].endswith("stored as safetensors (safetensors)")


def test_other_files_keep_their_kind_line(files):
    with open_checkpoint(files["training"]) as checkpoint:
        assert checkpoint.label == "training checkpoint"
        assert summary_text(checkpoint.summary()).splitlines()[1].split() == ["kind", "training", "(zip)"]
    with open_checkpoint(files["state_dict"]) as checkpoint:
        assert checkpoint.kind == "state-dict"
        assert checkpoint.label == "state dict (weights only)"  # not written by the converter: no claim about it
        assert "inference" not in summary_text(checkpoint.summary())


def test_inspect_prints_the_label(files):
    env = {k: v for k, v in os.environ.items() if k != "ANEMOI_CKPT_DEBUG"}
    done = subprocess.run([str(SCRIPT), "inspect", str(files["anemoi"])], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "kind          inference checkpoint (weights only, converted by anemoi-ckpt-nb" in done.stdout
    done = subprocess.run([str(SCRIPT), "inspect", "--json", str(files["anemoi"])], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["kind"] == "state-dict" and summary["label"].startswith("inference checkpoint")
