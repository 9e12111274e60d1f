"""``anemoi-inference run`` with the real anemoi-inference on converted files: the same forecast.

The reference forecasts (``tests/data/real/reference/inference/<model>/``) were written by
anemoi-inference 0.13's default runner from anemoi-training's own ``inference-last.ckpt``.
Here the ``last.ckpt`` beside it is converted by this project's environment, and
``anemoi-inference run`` runs the result in the real environment (``ANEMOI_CKPT_REAL_ENV``,
see ``realenv.py``) with this checkout's code and entry points.

Bit for bit against what the default runner writes from ``inference-last.ckpt`` on this same
machine (run once per model here): torch's CPU kernels round differently on different
instruction sets, so the committed forecast, written on another machine, is matched bit for bit
only where the CPU is alike (seen: the last float32 bit of ``2t``, 3.05e-5 K, on an AVX-512
machine). That same-machine forecast is checked against the committed one within 1e-5 of each
variable's scale (rounding differences are about 1e-7 of it; a wrong weight or graph far more).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from realenv import REAL, ROOT, real_python, run

from anemoi_ckpt_nb.conversion.convert import convert

SCRIPT = ROOT / "tests" / "real_env" / "forecast_compare.py"
RUNNER_MODULE = ROOT / "anemoi_ckpt_nb" / "conversion" / "runner.py"


@pytest.fixture(scope="module")
def python() -> str:
    return real_python()


def reference(model: str) -> tuple[dict, Path]:
    """The reference run's config (paths made absolute) and its forecast."""
    folder = REAL / "reference" / "inference" / model
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["checkpoint"] = str(REAL / config["checkpoint"])
    config["input"] = {"dataset": str(REAL / config["input"]["dataset"])}
    return config, folder / "forecast.nc"


#: A difference from the committed forecast, over the variable's scale, that CPU rounding stays under.
ACROSS_MACHINES = 1e-5
_MACHINE_REFERENCES: dict[str, Path] = {}


def machine_reference(python: str, model: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The reference run's config, and the forecast its default runner writes on this machine (once a model)."""
    config, committed = reference(model)
    if model not in _MACHINE_REFERENCES:
        folder = tmp_path_factory.mktemp(f"reference-{model}")
        produced = forecast(python, config, Path(config["checkpoint"]), folder)
        result = compare(python, committed, [produced], folder)["results"][str(produced)]
        assert result["equal"] or result["max_relative"] <= ACROSS_MACHINES, (
            f"anemoi-inference's own runner on anemoi-training's {Path(config['checkpoint']).name} ({model}) is "
            f"further from the committed forecast than CPU rounding explains: {result}")
        _MACHINE_REFERENCES[model] = produced
    return config, _MACHINE_REFERENCES[model]


def forecast(python: str, config: dict, checkpoint: Path, folder: Path, *, runner: str | None = None) -> Path:
    """Run ``anemoi-inference run`` on ``checkpoint`` with ``config``; the forecast it wrote."""
    output = folder / f"{checkpoint.name}.{runner or 'default'}.nc"
    config = {**config, "checkpoint": str(checkpoint), "output": {"netcdf": str(output)}}
    if runner:
        config["runner"] = runner
    path = folder / f"{output.stem}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run(python, ["-m", "anemoi.inference", "run", str(path)], folder)
    assert done.returncode == 0, done.stderr[-4000:]
    assert output.exists(), done.stderr[-4000:]
    return output


def compare(python: str, expected: Path, forecasts: list[Path], folder: Path) -> dict:
    done = run(python, [str(SCRIPT), str(expected), *map(str, forecasts)], folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["gnn", "graphtransformer"])
def test_the_anemoi_ckpt_runner_runs_converted_files_to_the_same_forecast(python, model, tmp_path, tmp_path_factory):
    config, expected = machine_reference(python, model, tmp_path_factory)
    training = Path(config["checkpoint"]).with_name("last.ckpt")  # inference-last.ckpt's own training file
    converted = [convert(training, tmp_path, format=fmt).destination for fmt in ("anemoi", "safetensors")]
    forecasts = [forecast(python, config, path, tmp_path, runner="anemoi-ckpt") for path in converted]
    report = compare(python, expected, forecasts, tmp_path)
    assert Path(report["runner"]["module"]) == RUNNER_MODULE, "anemoi-inference used another checkout's runner"
    for path in forecasts:
        result = report["results"][str(path)]
        assert result["equal"], f"{path.name}: differs from the reference forecast by up to {result.get('max_abs')}: {result}"
        assert {"2t", "10u", "msl"} <= set(result["variables"])


@pytest.mark.parametrize("model", ["gnn", "graphtransformer"])
def test_the_anemoi_ckpt_runner_runs_a_training_checkpoint_as_it_is(python, model, tmp_path, tmp_path_factory):
    """No conversion: the training file's weights (``model.``-prefixed, beside the optimizer state) and its graph."""
    config, expected = machine_reference(python, model, tmp_path_factory)
    training = Path(config["checkpoint"]).with_name("last.ckpt")
    produced = forecast(python, config, training, tmp_path, runner="anemoi-ckpt")
    report = compare(python, expected, [produced], tmp_path)
    result = report["results"][str(produced)]
    assert result["equal"], f"differs from the reference forecast by up to {result.get('max_abs')}: {result}"


@pytest.mark.parametrize("model", ["gnn", "graphtransformer"])
def test_a_pickled_conversion_runs_in_unmodified_anemoi_inference_to_the_same_forecast(python, model, tmp_path,
                                                                                      tmp_path_factory):
    from anemoi_ckpt_nb import open_checkpoint

    config, expected = machine_reference(python, model, tmp_path_factory)
    training = Path(config["checkpoint"]).with_name("last.ckpt")
    # The pickled format needs anemoi-models where it converts: convert in the real environment.
    done = run(python, ["-m", "anemoi_ckpt_nb", "convert", str(training), "-o", str(tmp_path / "out"),
                        "--format", "pickled", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    pickled = Path(result["destination"])
    assert result["format"] == "pickled" and pickled.name == "inference-last.ckpt"
    # anemoi-inference's own runner (no runner: in the config) loads it with torch.load, as it is.
    produced = forecast(python, config, pickled, tmp_path)
    report = compare(python, expected, [produced], tmp_path)
    assert report["results"][str(produced)]["equal"], report
    # The safe reader reads it back, pickle unrun: anemoi-training's layout, the sidecar's metadata.
    with open_checkpoint(pickled) as checkpoint:
        assert checkpoint.kind == "inference"
        assert checkpoint.uuid == result["uuid"]
        assert checkpoint.metadata["conversion"]["format"] == "pickled"
        assert checkpoint.metadata == json.loads(Path(result["sidecar"]).read_text())
        assert checkpoint.model_inputs() is not None  # the graph travels in the pickle, as anemoi-training's


CATALOGUE_PICKLED = """
import json, sys
from anemoi_ckpt_nb import Catalogue
catalogue = Catalogue.create(sys.argv[1])
training = catalogue.register(sys.argv[2])
converted = catalogue.get(training.uuid[:8]).convert(sys.argv[3], format="pickled", tags=["candidate"])
record = converted.record
print(json.dumps({"training": training.uuid, "uuid": converted.uuid, "kind": record.kind, "format": record.format,
                  "parents": [[p.uuid, p.relation] for p in record.parents], "tags": converted.tags,
                  "path": str(converted.local_path())}))
"""


def test_a_registered_training_checkpoint_converts_to_the_pickled_format_through_the_catalogue(python, tmp_path,
                                                                                             tmp_path_factory):
    """Checkpoint.convert(format="pickled"): registered converted-from its training checkpoint, and run as it is."""
    config, expected = machine_reference(python, "gnn", tmp_path_factory)
    training = Path(config["checkpoint"]).with_name("last.ckpt")
    done = run(python, ["-c", CATALOGUE_PICKLED, str(tmp_path / "catalogue"), str(training), str(tmp_path / "out")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["kind"], result["format"]) == ("inference", "pickled")
    assert result["parents"] == [[result["training"], "converted-from"]] and result["tags"] == ["candidate"]
    pickled = Path(result["path"])
    assert pickled.parent == tmp_path / "out" and pickled.name == "inference-last.ckpt"
    produced = forecast(python, config, pickled, tmp_path)  # anemoi-inference's default runner: torch.load
    assert compare(python, expected, [produced], tmp_path)["results"][str(produced)]["equal"]
