"""Which runner runs a file, said by inspect, validate and the notebook card, on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.notebook.html import checkpoint_card
from anemoi_ckpt_nb.notebook.text import runs_with_line
from anemoi_ckpt_nb.read.runs_with import CKPT_RUNNER, DEFAULT_RUNNER, LOAD_MODEL, runs_with

RUN = next((Path(__file__).parent / "data" / "real" / "current" / "gnn" / "run").glob("*/"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    return {fmt: convert(RUN / "last.ckpt", out, format=fmt).destination for fmt in ("anemoi", "safetensors")}


def inspected(path: Path, capsys) -> list[str]:
    assert main(["inspect", str(path), "--json"]) == 0
    return [runner for runner, _ in json.loads(capsys.readouterr().out)["runs_with"]]


def test_inspect_says_converted_files_run_with_the_anemoi_ckpt_runner_not_the_default_one(converted, capsys):
    for path in converted.values():
        assert inspected(path, capsys) == [CKPT_RUNNER, LOAD_MODEL]
    assert main(["inspect", str(converted["safetensors"])]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("runs with"))
    assert "anemoi-models==0.19.0" in line and "[inference]" in line


def test_anemoi_trainings_pickled_file_runs_with_every_runner_and_its_training_file_with_ours(capsys):
    assert inspected(RUN / "inference-last.ckpt", capsys) == [DEFAULT_RUNNER, CKPT_RUNNER, LOAD_MODEL]
    assert inspected(RUN / "last.ckpt", capsys) == [CKPT_RUNNER, LOAD_MODEL]


def test_validate_reports_the_runners(converted, capsys):
    main(["validate", str(converted["anemoi"]), "--json"])
    assert [r for r, _ in json.loads(capsys.readouterr().out)["runs_with"]] == [CKPT_RUNNER, LOAD_MODEL]
    main(["validate", str(converted["anemoi"])])
    assert "  runs with: anemoi-inference with runner: anemoi-ckpt, anemoi_ckpt_nb.load_model; needs" in capsys.readouterr().out


def test_weights_without_a_graph_run_with_nothing_and_say_what_to_do():
    assert runs_with("state-dict") == []
    assert runs_with("safetensors", conversion_format="safetensors", has_graph=False) == []
    assert runs_with("inference", conversion_format="pickled")[0][0] == DEFAULT_RUNNER


@pytest.mark.parametrize(("record", "first"), [
    ({"kind": "inference", "format": "anemoi"}, DEFAULT_RUNNER),  # anemoi-training's own
    ({"kind": "inference", "format": "safetensors", "parents": [{"uuid": "u", "relation": "converted-from"}]}, CKPT_RUNNER),
    ({"kind": "inference", "format": "anemoi", "parents": [{"uuid": "u", "relation": "converted-from"}]}, CKPT_RUNNER),
    ({"kind": "inference", "format": "pickled", "parents": [{"uuid": "u", "relation": "converted-from"}]}, DEFAULT_RUNNER),
    ({"kind": "training", "format": "anemoi"}, CKPT_RUNNER),
    ({"kind": "inference", "format": "state-dict"}, "nothing as it is"),
])
def test_the_card_says_which_runner_runs_a_registered_checkpoint(record, first):
    record = {"uuid": "0" * 8, **record}
    assert runs_with_line(record).startswith(first)
    assert "runs with" in checkpoint_card(record)
