"""Write the golden files in tests/data/golden/: small documents and checkpoints in every older
format anemoi-ckpt-nb knows, and the expected result of migrating each.

Run it only to add a format, never to make a failing golden test pass:

    python tests/data/make_golden.py            # write inputs and expected outputs
    python tests/data/make_golden.py --check    # write nothing; exit 1 if an expected output differs

The inputs are frozen history: each imitates what a given anemoi release wrote (see the
notes beside each builder). The expected outputs are what today's migration makes of
them; after a deliberate change of a migration step, regenerate them and review the
diff line by line (``git diff tests/data/golden``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
sys.path.insert(0, str(HERE.parents[1]))

from anemoi_ckpt_nb import examples  # noqa: E402

TIMESTAMP = "2024-05-02T10:00:00+00:00"
VARIABLES = ["10u", "10v", "2t", "msl", "t_850", "z_500", "lsm", "cos_latitude"]
#: The variables of metadata_0_0_dataset_list once its two sources are joined.
JOINED = ["10u", "10v", "2t", "msl", "lsm", "cos_latitude", "t_850", "z_500"]
FORCINGS = ["lsm", "cos_latitude"]


def _indices(variables: list[str], forcing: list[str], diagnostic: list[str] = ()) -> dict[str, Any]:
    """``IndexCollection.todict()`` as anemoi-models computes it (positions, by role)."""
    name_to_index = {v: i for i, v in enumerate(variables)}
    f = [name_to_index[v] for v in forcing]
    d = [name_to_index[v] for v in diagnostic]
    prog = [i for v, i in name_to_index.items() if v not in forcing and v not in diagnostic]
    data_in = sorted(i for v, i in name_to_index.items() if v not in diagnostic)
    data_out = sorted(i for v, i in name_to_index.items() if v not in forcing)
    model_in = {v: j for j, v in enumerate(v for v in variables if v not in diagnostic)}
    model_out = {v: j for j, v in enumerate(v for v in variables if v not in forcing)}
    return {
        "data": {
            "input": {"full": data_in, "forcing": f, "diagnostic": d, "prognostic": prog},
            "output": {"full": data_out, "forcing": f, "diagnostic": d, "prognostic": prog},
        },
        "model": {
            "input": {"full": list(range(len(model_in))), "forcing": [model_in[v] for v in forcing],
                      "diagnostic": [], "prognostic": [model_in[v] for v in variables if v in model_in and v not in forcing]},
            "output": {"full": list(range(len(model_out))), "forcing": [],
                       "diagnostic": [model_out[v] for v in diagnostic],
                       "prognostic": [model_out[v] for v in variables if v in model_out and v not in diagnostic]},
        },
    }


def _config(dataset: Any = "aifs-od-an-oper-0001-mars-o96-2016-2017-6h-v5") -> dict[str, Any]:
    return {
        "data": {"frequency": "6h", "timestep": "6h", "forcing": FORCINGS, "diagnostic": []},
        "dataloader": {"training": {"dataset": dataset, "start": 2016, "end": 2017}},
        "training": {"multistep_input": 2, "precision": "16-mixed"},
    }


# --- documents -------------------------------------------------------------------------


def metadata_0_0_dataset_list() -> dict[str, Any]:
    """aifs-mono era (2023): no ``version``; ``dataset`` is the list of zarr attributes of the
    sources joined by the dataloader spec; bare-string module versions."""
    surface = ["10u", "10v", "2t", "msl", "lsm", "cos_latitude", "sst"]
    upper = ["t_850", "z_500", "q_700"]
    return {
        "config": _config([{"dataset": "surface-o96", "drop": ["sst"]}, {"dataset": "upper-o96", "select": ["t_850", "z_500"]}]),
        "seed": 42,
        "run_id": "0b1c2d3e-aifs-mono",
        "dataset": [
            {"variables": surface, "frequency": "6h", "resolution": "o96", "version": "0.1.8",
             "data_request": {"grid": "O96", "area": [90, 0, -90, 360]}},
            {"variables": upper, "frequency": "6h", "resolution": "o96", "version": "0.1.8"},
        ],
        "data_indices": _indices(JOINED, FORCINGS),
        "provenance_training": {"python": "3.10.12", "module_versions": {"aifs": "0.1.0", "torch": "2.0.1", "ecml_tools": "0.1.8"},
                                "git_versions": {}},
        "timestamp": "2023-11-20T08:00:00",
    }


def metadata_0_0_no_data_indices() -> dict[str, Any]:
    """The earliest files: no ``version`` and no ``data_indices``; the index lists cannot be
    recomputed, so the chain stops (``validate`` reports what is missing)."""
    return {
        "config": _config(),
        "dataset": {"variables": VARIABLES, "frequency": "6h"},
        "provenance_training": {"python": "3.10.12", "module_versions": {"aifs": "0.0.9"}},
    }


def metadata_1_0_ecml_tools() -> dict[str, Any]:
    """anemoi-training 0.1 (2024) on an ecml-tools dataset: version 1.0, a dataset versioned
    0.1.7, ``variables_metadata`` with top-level MARS keys, bare-string module versions."""
    variables_metadata = {}
    for v in VARIABLES:
        if v == "cos_latitude":
            variables_metadata[v] = {"computed_forcing": True, "constant_in_time": True}
        elif "_" in v:
            param, level = v.split("_")
            variables_metadata[v] = {"param": param, "levelist": int(level), "levtype": "pl"}
        else:
            variables_metadata[v] = {"param": v, "levtype": "sfc"}
    return {
        "version": "1.0",
        "config": _config(),
        "seed": 7,
        "run_id": "5f7c0e51-6b0e-4c8a-9d0e-0a1b2c3d4e5f",
        "uuid": "9a6f4a8e-1c1d-4b8e-8f6a-2d3c4b5a6978",
        "dataset": {"variables": VARIABLES, "shape": [2920, len(VARIABLES), 1, 40320], "version": "0.1.7",
                    "arguments": {"args": [], "kwargs": {"dataset": "aifs-od-an-oper-0001-mars-o96-2016-2017-6h-v5"}},
                    "specific": {"action": "zarr", "variables": VARIABLES}, "variables_metadata": variables_metadata},
        "data_indices": _indices(VARIABLES, FORCINGS),
        "provenance_training": {"python": "3.11.6", "module_versions": {"anemoi.models": "0.1.0", "anemoi.training": "0.1.0",
                                "anemoi.utils": "0.3.4", "torch": "2.2.0"}, "git_versions": {}},
        "timestamp": "2024-06-01T12:00:00+00:00",
        "supporting_arrays_paths": {},
    }


def metadata_1_0_anemoi_training() -> dict[str, Any]:
    """anemoi-training 0.3/0.4 (2025): what ``examples.make_metadata`` writes, pinned."""
    return examples.make_metadata(
        uuid="2f0e4d6c-8a1b-4c3d-9e5f-7a6b5c4d3e2f", run_id="c0ffee00-1234-4abc-8def-001122334455",
        timestamp=TIMESTAMP, grid_points=16,
    )


def metadata_2_0_multi_dataset() -> dict[str, Any]:
    """anemoi-core with multiple datasets (version 2.0): the current layout, nothing to migrate."""
    era = ["10u", "10v", "2t", "msl", "lsm", "cos_latitude"]
    lam = ["2t", "msl", "tp", "lsm"]

    def inference(variables: list[str], forcing: list[str], diagnostic: list[str] = ()) -> dict[str, Any]:
        idx = _indices(variables, forcing, diagnostic)
        names = lambda data, model: {variables[d]: m for d, m in zip(idx["data"][data]["full"], idx["model"][model]["full"])}  # noqa: E731
        return {
            "timesteps": {"timestep": "6h", "relative_date_indices_training": [-1, 0, 1]},
            "data_indices": {"input": names("input", "input"), "output": names("output", "output")},
            "variable_types": {"forcing": list(forcing), "target": [], "diagnostic": list(diagnostic),
                               "prognostic": [v for v in variables if v not in forcing and v not in diagnostic]},
        }

    return {
        "version": "2.0",
        "config": {"data": {"timestep": "6h"}, "training": {"multistep_input": 2}},
        "seed": 3,
        "run_id": "7d3e9a10-2b4c-4d5e-8f60-718293a4b5c6",
        "uuid": "0e1d2c3b-4a59-4687-b7a6-95d4c3b2a1f0",
        "dataset": {
            "era5": {"variables": era, "shape": [100, len(era), 1, 40320], "version": "0.30",
                     "arguments": {"args": [], "kwargs": {"dataset": "era5-o96"}}},
            "cerra": {"variables": lam, "shape": [100, len(lam), 1, 9000], "version": "0.30",
                      "arguments": {"args": [], "kwargs": {"dataset": "cerra-lam"}}},
        },
        "data_indices": {"era5": _indices(era, ["lsm", "cos_latitude"]), "cerra": _indices(lam, ["lsm"], ["tp"])},
        "provenance_training": {"python": "3.12.3", "module_versions": {"anemoi.models": {"version": "0.12.0"},
                                "anemoi.utils": {"version": "0.5.14"}}, "git_versions": {}},
        "timestamp": TIMESTAMP,
        "metadata_inference": {"seed": 3, "run_id": "7d3e9a10-2b4c-4d5e-8f60-718293a4b5c6", "task": "forecaster",
                               "dataset_names": ["era5", "cerra"],
                               "era5": inference(era, ["lsm", "cos_latitude"]), "cerra": inference(lam, ["lsm"], ["tp"])},
        "supporting_arrays_paths": {
            "era5": {"latitudes": {"path": "x/anemoi-metadata/era5/latitudes.numpy", "shape": [40320], "dtype": "float64"}},
            "cerra": {"latitudes": {"path": "x/anemoi-metadata/cerra/latitudes.numpy", "shape": [9000], "dtype": "float64"}},
        },
    }


DOCUMENTS = {
    "metadata-0.0-dataset-list": metadata_0_0_dataset_list,
    "metadata-0.0-no-data-indices": metadata_0_0_no_data_indices,
    "metadata-1.0-ecml-tools": metadata_1_0_ecml_tools,
    "metadata-1.0-anemoi-training": metadata_1_0_anemoi_training,
    "metadata-2.0-multi-dataset": metadata_2_0_multi_dataset,
}


# --- checkpoints ---------------------------------------------------------------------------


def _training(path: Path, embedded: str | None) -> None:
    examples.write_training_checkpoint(
        path, weights_bytes=1024, uuid="4b3c2d1e-0f9a-4b8c-8d7e-6f5a4b3c2d1e",
        run_id="1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", grid_points=8, embedded=embedded,
    )


@contextlib.contextmanager
def _aifs_modules():
    """Classes at the module paths aifs-mono gave them, only while pickling."""

    class DotConfig(dict):
        pass

    class IndexCollection:
        def __init__(self, config: dict[str, Any], name_to_index: dict[str, int]) -> None:
            self.forcing = list(config["data"]["forcing"])
            self.diagnostic = []
            self.name_to_index = dict(name_to_index)

    class GraphForecaster:
        pass

    layout = {"aifs.utils.config": {"DotConfig": DotConfig},
              "aifs.data.dataindices": {"IndexCollection": IndexCollection},
              "aifs.train.forecaster": {"GraphForecaster": GraphForecaster}}
    added = []
    try:
        for module_name, members in layout.items():
            parts = module_name.split(".")
            for depth in range(1, len(parts) + 1):
                name = ".".join(parts[:depth])
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
                    added.append(name)
            for cls_name, cls in members.items():
                cls.__module__, cls.__qualname__ = module_name, cls_name
                setattr(sys.modules[module_name], cls_name, cls)
        yield types.SimpleNamespace(DotConfig=DotConfig, IndexCollection=IndexCollection, GraphForecaster=GraphForecaster)
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)


def _aifs(path: Path) -> None:
    """An aifs-mono era training checkpoint: pickled classes under ``aifs.*`` and legacy
    metadata (dataset list, no version) embedded as ``ai-models.json``."""
    import numpy as np
    import torch

    from anemoi_ckpt_nb.read.embedded import top_directory, write_embedded

    metadata = metadata_0_0_dataset_list()
    generator = torch.Generator().manual_seed(0)
    weights = {"model.encoder.weight": torch.randn(4, 8, generator=generator), "model.encoder.bias": torch.zeros(4)}
    with _aifs_modules() as aifs:
        config = aifs.DotConfig(metadata["config"])
        checkpoint = {
            "epoch": 3, "global_step": 300, "pytorch-lightning_version": "2.0.7", "state_dict": weights,
            "optimizer_states": [], "lr_schedulers": [], "callbacks": {}, "loops": {},
            "hyper_parameters": {
                "config": config, "metadata": metadata,
                "data_indices": aifs.IndexCollection(config, {v: i for i, v in enumerate(JOINED)}),
            },
            "task": aifs.GraphForecaster,
        }
        torch.save(checkpoint, path)
    arrays = {"latitudes": np.linspace(-90, 90, 8), "longitudes": np.linspace(0, 315, 8)}
    with zipfile.ZipFile(path, "a") as zf:
        write_embedded(zf, top_directory(zf.namelist()), metadata, arrays, name="ai-models.json",
                       date_time=(2023, 11, 20, 8, 0, 0))


CHECKPOINTS = {
    "ckpt-anemoi-json": lambda p: _training(p, "anemoi.json"),
    "ckpt-ai-models-json": lambda p: _training(p, "ai-models.json"),
    "ckpt-hyper-parameters-only": lambda p: _training(p, None),
    "ckpt-aifs-modules": _aifs,
}


# --- expected outputs ---------------------------------------------------------------------


def expected_document(document: dict[str, Any]) -> dict[str, Any]:
    from anemoi_ckpt_nb.compat.migrate import migrate

    result = migrate(document)
    return {"from_version": result.from_version, "to_version": result.to_version,
            "steps_applied": result.steps_applied, "document": result.document}


def checkpoint_globals(path: Path) -> list[list[str]]:
    """``[module, name]`` of every class the pickle names, read with pickletools (nothing runs)."""
    import pickletools

    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
    return sorted([list(g) for g in found])


def expected_checkpoint(path: Path) -> dict[str, Any]:
    """What reading the checkpoint safely and migrating its metadata must give."""
    from anemoi_ckpt_nb.read.embedded import find_metadata_entry
    from anemoi_ckpt_nb.read.renames import resolve_class
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    with open_checkpoint(path) as ck:
        metadata = ck.metadata
    with zipfile.ZipFile(path) as zf:
        found = find_metadata_entry(zf.namelist())
    renamed = [[f"{m}.{n}", ".".join(resolve_class(m, n))] for m, n in checkpoint_globals(path) if resolve_class(m, n) != (m, n)]
    return {"metadata_source": found[1] if found else "hyper_parameters", "renamed_classes": renamed,
            **expected_document(metadata)}


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if an expected output differs")
    args = parser.parse_args(argv)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    outputs: dict[Path, str] = {}
    for name, build in DOCUMENTS.items():
        document = build()
        outputs[GOLDEN / f"{name}.json"] = _dump(document)
        outputs[GOLDEN / f"{name}.expected.json"] = _dump(expected_document(copy.deepcopy(document)))
    for name, write in CHECKPOINTS.items():
        path = GOLDEN / f"{name}.ckpt"
        if not args.check:
            path.unlink(missing_ok=True)
            write(path)
        outputs[GOLDEN / f"{name}.expected.json"] = _dump(expected_checkpoint(path))
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"differs: {path.relative_to(HERE.parents[1])}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text)
    for path in sorted(GOLDEN.iterdir()):
        print(f"{path.stat().st_size:>8}  {path.relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
