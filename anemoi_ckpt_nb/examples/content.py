"""What an example checkpoint holds: weights, Adam state, supporting arrays, the metadata, and the record of what was written.

The weights are regenerated from ``(weights_bytes, dtype, seed)``, so tests can compare a file's
tensors with the ones that were saved.
"""

from __future__ import annotations

import datetime as _dt
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Versions recorded in provenance_training, as a 2025-era anemoi-training run records them.
DEFAULT_MODULE_VERSIONS = {
    "anemoi.models": "0.5.2",
    "anemoi.training": "0.4.1",
    "anemoi.datasets": "0.5.20",
    "anemoi.graphs": "0.5.1",
    "anemoi.utils": "0.4.22",
    "torch": "2.5.1",
    "torch_geometric": "2.6.1",
    "pytorch_lightning": "2.5.0",
    "omegaconf": "2.3.0",
    "numpy": "2.1.3",
}

VARIABLES = ["10u", "10v", "2t", "msl", "q_850", "t_850", "u_850", "v_850", "z_500", "lsm", "cos_latitude"]
FORCINGS = ["lsm", "cos_latitude"]


@dataclass
class ExampleCheckpoint:
    """What was written, for tests to compare against."""

    path: Path
    #: The uuid of the pickled metadata (U1): what children and the inference file name.
    uuid: str
    run_id: str
    parent_uuid: str | None
    kind: str
    epoch: int
    global_step: int
    metadata: dict[str, Any]
    supporting_arrays: dict[str, Any] = field(default_factory=dict)
    state_dict_names: list[str] = field(default_factory=list)
    fork_run_id: str | None = None
    #: What regenerates the same weights: ``make_weights(weights_bytes, dtype, seed)``.
    weights_bytes: int = 0
    seed: int = 0
    dtype: str = "float32"
    #: The uuid of the embedded anemoi.json when it differs from ``uuid`` (U2 of a training file).
    embedded_uuid: str | None = None

    @property
    def uuids(self) -> list[str]:
        """Every uuid the file holds, ``uuid`` first."""
        return [u for u in (self.uuid, self.embedded_uuid) if u]



def _weight_shapes(weights_bytes: int, itemsize: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of an encoder-processor-decoder adding up to about ``weights_bytes``.

    The largest tensor is capped at 16 Mi elements, so memory-bound claims that
    depend on the largest tensor stay meaningful for gigabyte checkpoints.
    """
    total = max(64, weights_bytes // itemsize)
    hidden = max(4, min(4096, int(math.sqrt(total / 8))))
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("model.model.node_attributes.trainable_tensors.data", (hidden,)),
        ("model.model.encoder.emb_nodes_src.weight", (hidden, len(VARIABLES))),
        ("model.model.encoder.emb_nodes_src.bias", (hidden,)),
    ]
    used = sum(math.prod(s) for _, s in shapes)
    block = 0
    while used + hidden * hidden + hidden <= total - len(VARIABLES) * hidden:
        layer = f"model.model.processor.proc.{block // 2}.blocks.{block % 2}.mlp.0"
        shapes += [(f"{layer}.weight", (hidden, hidden)), (f"{layer}.bias", (hidden,))]
        used += hidden * hidden + hidden
        block += 1
    shapes += [
        ("model.model.decoder.node_data_extractor.weight", (len(VARIABLES), hidden)),
        ("model.model.decoder.node_data_extractor.bias", (len(VARIABLES),)),
    ]
    return shapes


def make_weights(weights_bytes: int, dtype: str, seed: int) -> dict[str, Any]:
    import torch

    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(seed)
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    weights = {}
    for name, shape in _weight_shapes(weights_bytes, itemsize):
        weights[name] = torch.randn(shape, generator=generator, dtype=torch.float32).to(torch_dtype)
    return weights


def adam_state(weights: dict[str, Any], step: int, seed: int) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    state = {}
    for index, tensor in enumerate(weights.values()):
        state[index] = {
            "step": torch.tensor(float(step)),
            "exp_avg": torch.randn(tensor.shape, generator=generator).to(tensor.dtype) * 1e-3,
            "exp_avg_sq": torch.rand(tensor.shape, generator=generator).to(tensor.dtype) * 1e-6,
        }
    param_group = {
        "lr": 6.25e-5,
        "betas": (0.9, 0.95),
        "eps": 1e-8,
        "weight_decay": 0.1,
        "amsgrad": False,
        "foreach": None,
        "maximize": False,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "initial_lr": 6.25e-5,
        "params": list(range(len(weights))),
    }
    return {"state": state, "param_groups": [param_group]}


def supporting_arrays_for(grid_points: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(grid_points)
    return {
        "latitudes": rng.uniform(-90, 90, grid_points),
        "longitudes": rng.uniform(0, 360, grid_points),
        "grid_indices": np.arange(grid_points, dtype=np.int64),
    }


def _config(run_id: str, fork_run_id: str | None, seed: int) -> dict[str, Any]:
    return {
        "data": {"frequency": "6h", "timestep": "6h", "forcing": FORCINGS, "diagnostic": []},
        "dataloader": {"batch_size": {"training": 1}, "num_workers": {"training": 8}},
        "model": {"num_channels": 512, "model": {"_target_": "anemoi.models.models.AnemoiModelEncProcDec"}},
        "training": {
            "run_id": run_id,
            "fork_run_id": fork_run_id,
            "lr": {"rate": 6.25e-5},
            "max_epochs": 10,
            "multistep_input": 2,
            "rollout": {"start": 1, "epoch_increment": 0, "max": 1},
            "seed": seed,
        },
        "system": {"input": {"warm_start": None}, "output": {"checkpoints": "checkpoints"}},
    }


def make_metadata(
    *,
    uuid: str,
    run_id: str,
    parent_uuid: str | None = None,
    fork_run_id: str | None = None,
    epoch: int = 1,
    global_step: int = 100,
    seed: int = 0,
    parameter_count: int = 0,
    grid_points: int = 64,
    module_versions: dict[str, str] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The ``hyper_parameters["metadata"]`` dict of an anemoi-training checkpoint (version 1.0)."""
    name_to_index = {name: i for i, name in enumerate(VARIABLES)}
    prognostic = [i for n, i in name_to_index.items() if n not in FORCINGS]
    forcing = [name_to_index[n] for n in FORCINGS]
    versions = dict(DEFAULT_MODULE_VERSIONS if module_versions is None else module_versions)
    metadata: dict[str, Any] = {
        "version": "1.0",
        "config": _config(run_id, fork_run_id, seed),
        "seed": seed,
        "run_id": run_id,
        "uuid": uuid,
        "dataset": {
            "variables": list(VARIABLES),
            "shape": [1460, len(VARIABLES), 1, grid_points],
            "frequency": "6h",
            "start_date": "2020-01-01T00:00:00",
            "end_date": "2020-12-31T18:00:00",
            "resolution": "o96",
            "arguments": {"args": [], "kwargs": {"dataset": "aifs-ea-an-oper-0001-mars-o96-2020-2020-6h-v1"}},
            "specific": {"action": "zarr", "path": "aifs-ea-an-oper-0001-mars-o96-2020-2020-6h-v1.zarr"},
            "data_request": {"grid": "O96", "area": [90.0, 0.0, -90.0, 360.0], "param_level": {"pl": [["q", 850]]}},
            "variables_metadata": {v: {"mars": {"param": v.split("_")[0]}} for v in VARIABLES},
        },
        "data_indices": {
            "data": {
                "input": {"full": list(name_to_index.values()), "forcing": forcing, "diagnostic": [], "prognostic": prognostic},
                "output": {"full": prognostic, "forcing": [], "diagnostic": [], "prognostic": prognostic},
            },
            "model": {
                "input": {"full": list(range(len(VARIABLES))), "forcing": forcing, "diagnostic": [], "prognostic": prognostic},
                "output": {"full": list(range(len(prognostic))), "forcing": [], "diagnostic": [], "prognostic": list(range(len(prognostic)))},
            },
            "name_to_index": name_to_index,
        },
        "provenance_training": {
            "time": timestamp or _now(),
            "python": "3.11.9",
            "module_versions": versions,
            "distribution_names": {"anemoi.models": "anemoi-models", "anemoi.training": "anemoi-training"},
            "git_versions": {
                "anemoi.training": {
                    "git": {"sha1": "3f2c1a9e0b7d4c6a8e5f1b2d3c4a5e6f7a8b9c0d", "modified_files": [], "untracked_files": []}
                }
            },
        },
        "timestamp": timestamp or _now(),
        "metadata_inference": {
            "dataset_names": ["data"],
            "task": "forecaster",
            "data": {"timesteps": {"relative_date_indices_training": [-1, 0, 1], "input_relative_date_indices": [-1, 0]}},
        },
        "model": {
            "model": "anemoi.models.models.AnemoiModelEncProcDec",
            "trainable_parameters": parameter_count,
            "total_parameters": parameter_count,
        },
        "training": {"epoch": epoch, "global_step": global_step, "elapsed_time": 3600.0 * epoch},
        "tracker": {"mlflow": {"experiment_name": "anemoi-ckpt-nb-examples", "run_id": run_id}},
    }
    if parent_uuid is not None:
        metadata["parent_uuid"] = parent_uuid
    if fork_run_id is not None:
        metadata["fork_run_id"] = fork_run_id
    return metadata


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()



def embed(path: Path, metadata: dict[str, Any], arrays: dict[str, Any], name: str) -> dict[str, Any]:
    from anemoi_ckpt_nb.read.embedded import top_directory, write_embedded

    with zipfile.ZipFile(path, "a") as zf:
        return write_embedded(zf, top_directory(zf.namelist()), metadata, arrays, name=name)
