"""load_model with the real anemoi packages, on the real fixtures: the same predict_step output, bit for bit.

The anemoi packages pin torch<2.11 and do not go into the project's environment; they live
in a second one (anemoi-models, anemoi-graphs, torch-geometric, anemoi-inference installed
``--no-deps`` on the project's torch: ``.ci/anemoi-env.sh``), named by the environment
variable ``ANEMOI_CKPT_REAL_ENV`` (its python). The files are converted here, by the
project's environment, and built there by a small script (``real_env/predict_compare.py``)
against anemoi-training's own pickled ``inference-*.ckpt``, loaded as anemoi-inference loads
it. Without that environment these tests skip on a developer's machine and fail in CI.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from realenv import ROOT, child_environment
from realenv import missing as _missing
from realenv import real_python as _real_python

from anemoi_ckpt_nb.conversion.convert import convert

REAL = ROOT / "tests" / "data" / "real" / "current"
SCRIPT = ROOT / "tests" / "real_env" / "predict_compare.py"


@pytest.fixture(scope="module")
def real_python() -> str:
    return _real_python()


def _run_folder(model: str, run: str = "run") -> Path:
    folders = sorted((REAL / model / run).glob("*/")) if (REAL / model / run).is_dir() else []
    if not folders:
        _missing(f"the real fixtures of {model} ({REAL / model / run}) are not there")
    return folders[0]


def compare(python: str, folder: Path, *groups: tuple[Path, list[Path]]) -> dict:
    """Run ``predict_compare.py`` on ``(reference, files)`` groups in the real environment."""
    env = child_environment(folder)
    args: list[str] = []
    for reference, files in groups:
        args += ["--"] if args else []
        args += [str(reference), *map(str, files)]
    done = subprocess.run([python, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["gnn", "graphtransformer"])
def test_converted_files_build_the_model_anemoi_training_pickled(real_python, model, tmp_path):
    folder = _run_folder(model)
    source = folder / "last.ckpt"
    files = [convert(source, tmp_path, format=fmt).destination for fmt in ("anemoi", "safetensors")]
    files.append(source)  # the training checkpoint itself
    report = compare(real_python, tmp_path, (folder / "inference-last.ckpt", files))
    for path in files:
        result = report["results"][str(path)]
        assert "error" not in result, result
        assert result["equal"], f"{path.name}: predict_step differs by up to {result['max_abs']}"
        assert result["eval"]
        assert result["same_ties"], f"{path.name}: parameters shared in anemoi-training's model are not shared"
        assert result["on_meta"] == [], f"{path.name}: left on the meta device: {result['on_meta']}"
        count, in_file = result["mapped"]
        # converted files: the weights are the file's own pages (no copy); anemoi-training's: read into memory
        assert count > 0 and in_file == (count if path != source else 0), (path.name, result["mapped"])
    assert report["versions"]["anemoi-models"] == "0.19.0"


FASTBUILD_SCRIPT = ROOT / "tests" / "real_env" / "fastbuild_compare.py"


@pytest.mark.parametrize("model", ["gnn", "graphtransformer"])
def test_the_direct_path_past_hydra_passes_what_hydra_passes(real_python, model, tmp_path):
    """load_model calls most targets without Hydra (conversion/fastbuild): each such call is also
    given to Hydra (its call captured, not made), and every argument must be the same."""
    folder = _run_folder(model)
    files = [convert(folder / "last.ckpt", tmp_path, format=fmt).destination for fmt in ("anemoi", "safetensors")]
    done = subprocess.run([real_python, str(FASTBUILD_SCRIPT), *map(str, files)], capture_output=True, text=True,
                          env=child_environment(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for path in files:
        result = report[str(path)]
        assert result["differences"] == [], result
        # the model, its encoder, processor, decoder, aggregator, residual and normalizer; Hydra keeps the _partial_ kernels
        assert result["direct"] >= 7 and result["hydra"] > 0, result
        assert result["config_same"] and result["repr_same"] and result["tensors_same"] and result["predict_same"], result


def test_every_epoch_of_a_resumed_run_matches_its_own_inference_file(real_python, tmp_path):
    folder = _run_folder("gnn", "resume")
    pairs = [(path, folder / f"inference-{path.name}") for path in sorted(folder.glob("anemoi-by_epoch-*.ckpt"))]
    assert len(pairs) >= 2
    groups = [(reference, [convert(source, tmp_path, format="safetensors").destination]) for source, reference in pairs]
    report = compare(real_python, tmp_path, *groups)
    for reference, (converted,) in groups:
        result = report["results"][str(converted)]
        assert result.get("equal"), (reference.name, result)


@pytest.mark.parametrize("model", ["gnn", "graphtransformer"])
def test_an_anemoi_training_inference_file_is_built_without_running_its_pickle(real_python, model, tmp_path):
    folder = _run_folder(model)
    report = compare(real_python, tmp_path, (folder / "inference-last.ckpt", [folder / "inference-last.ckpt"]))
    assert report["results"][str(folder / "inference-last.ckpt")].get("equal")


EXAMPLES_BESIDE_REAL_PACKAGES = """
import sys, torch_geometric.data.storage as storage, anemoi.models.interface as interface
real = (storage.NodeStorage, interface.AnemoiModelInterface)
from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb import open_checkpoint
example = examples.write_training_checkpoint(sys.argv[1], weights_bytes=4096)
assert (storage.NodeStorage, interface.AnemoiModelInterface) == real, "the real classes were replaced"
assert sys.modules["torch_geometric.data.storage"] is storage and sys.modules["anemoi.models.interface"] is interface
print(open_checkpoint(sys.argv[1]).uuid == example.uuid)
"""


def test_examples_write_beside_the_real_packages_and_leave_them_alone(real_python, tmp_path):
    """With the [inference] extra installed, the example writer once broke torch-geometric's import."""
    env = child_environment(tmp_path)  # this checkout's code, whatever the environment installed
    completed = subprocess.run([real_python, "-c", EXAMPLES_BESIDE_REAL_PACKAGES, str(tmp_path / "x.ckpt")],
                               capture_output=True, text=True, cwd=tmp_path, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "True"


EARLY = ROOT / "tests" / "data" / "real" / "early-2025"
VERSION_GAP = """
import json, sys
from anemoi_ckpt_nb import load_model
from anemoi_ckpt_nb.errors import ModelVersionGapError
out = {}
for path in sys.argv[1:]:
    try:
        load_model(path)
        out[path] = {"built": True}
    except ModelVersionGapError as error:
        out[path] = {"written_with": error.written_with, "installed": error.installed, "message": str(error), "hint": error.hint}
print(json.dumps(out))
"""


def test_an_early_2025_file_is_refused_with_the_version_gap_named(real_python, tmp_path):
    """anemoi-training 0.3.3 / anemoi-models 0.4.2 files: another model layout, which load_model does not guess at."""
    folders = sorted((EARLY / "gnn" / "run").glob("*/"))
    if not folders:
        _missing(f"the early-2025 real fixtures ({EARLY}) are not there")
    files = [folders[0] / "last.ckpt", folders[0] / "inference-last.ckpt"]
    env = child_environment(tmp_path)
    done = subprocess.run([real_python, "-c", VERSION_GAP, *map(str, files)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for path in files:
        result = report[str(path)]
        assert (result.get("written_with"), result.get("installed")) == ("0.4.2", "0.19.0"), result
        assert "written with anemoi-models 0.4.2" in result["message"] and "anemoi-models 0.19.0 cannot build" in result["message"]
        assert "anemoi-models==0.4.2" in result["hint"] and "default runner" in result["hint"]
