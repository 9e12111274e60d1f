"""`anemoi-ckpt convert`: one line per input, exit status, JSON, globs, formats, overwrite."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.cli import main


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "run"
    good = [examples.write_training_checkpoint(folder / f"epoch{i}.ckpt", seed=i) for i in (1, 2)]
    bad = folder / "truncated.ckpt"
    bad.write_bytes(good[0].path.read_bytes()[:5000])
    return good, bad


def test_batch_with_one_bad_input(inputs, tmp_path, capsys):
    good, bad = inputs
    out = tmp_path / "out"

    status = main(["convert", str(good[0].path), str(bad), str(good[1].path), "-o", str(out), "--jobs", "2"])

    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert len(lines) == 3
    assert sum(line.startswith("converted ") for line in lines) == 2
    (failed,) = [line for line in lines if line.startswith("FAILED")]
    assert str(bad) in failed and "anemoi-ckpt inspect" in failed
    for ckpt in good:
        weights = torch.load(out / f"inference-{ckpt.path.stem}.ckpt", weights_only=True)
        assert set(weights) == {name.split(".", 1)[1] for name in ckpt.state_dict_names}
    assert not (out / "inference-truncated.ckpt").exists()


def test_all_converted_exits_zero_and_json_gives_one_object_per_input(inputs, tmp_path, capsys):
    good, _ = inputs
    pattern = str(good[0].path.parent / "epoch*.ckpt")  # quoted, so the command expands it

    status = main(["convert", pattern, "-o", str(tmp_path / "out"), "--format", "safetensors", "--json"])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    results = [json.loads(line) for line in lines]
    assert [r["source"] for r in results] == [str(c.path) for c in good]
    assert all(r["ok"] and r["format"] == "safetensors" for r in results)
    assert results[0]["destination"].endswith("inference-epoch1.safetensors")
    assert results[0]["source_uuid"] == good[0].uuid


def test_existing_output_needs_overwrite(inputs, tmp_path, capsys):
    good, _ = inputs
    args = ["convert", str(good[0].path), "-o", str(tmp_path / "out")]
    assert main(args) == 0
    capsys.readouterr()

    assert main(args) == 1
    assert "already exists" in capsys.readouterr().out
    assert main([*args, "--overwrite"]) == 0


def test_bad_option_is_one_line_on_stderr(inputs, tmp_path, capsys):
    good, _ = inputs
    status = main(["convert", str(good[0].path), "-o", str(tmp_path / "out"), "--jobs", "0"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.count("\n") == 1 and "jobs must be at least 1" in captured.err


def test_the_installed_command(inputs, tmp_path):
    good, bad = inputs
    done = subprocess.run(
        [sys.executable, "-m", "anemoi_ckpt_nb", "convert", str(bad), str(good[1].path), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stdout.splitlines()) == 2
    assert (tmp_path / "out" / "inference-epoch2.ckpt.json").is_file()
