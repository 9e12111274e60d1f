"""Realistic Anemoi checkpoints, written with ``torch.save``, for tests, benchmarks and the demo.

The files have the anatomy described in DESIGN.md: a Lightning dict with
``epoch``, ``global_step``, ``pytorch-lightning_version``, ``state_dict``
(weights prefixed ``model.``), ``loops``, ``callbacks``, ``optimizer_states``
(Adam: ``exp_avg`` and ``exp_avg_sq`` per parameter), ``lr_schedulers``,
``hyper_parameters``, ``task_state`` and ``migrations``.

``hyper_parameters`` holds what anemoi-training's ``save_hyperparameters``
keeps: a real omegaconf ``DictConfig`` (or a pydantic schema object), an
``IndexCollection``, a torch_geometric ``HeteroData`` graph, statistics,
supporting arrays and the ``metadata`` dict. The anemoi and torch_geometric
classes are made in throw-away modules that exist only while ``torch.save``
runs, exactly as a reader on another machine meets them: referred to by the
pickle, absent from the reader's environment.

The metadata is also embedded as ``anemoi-metadata/anemoi.json`` with its
supporting arrays, as anemoi-training does through anemoi-utils.

Conventions followed (from anemoi-training 0.17 with torch >= 2.6): every
saved checkpoint gets a fresh ``uuid`` (U1) in ``hyper_parameters["metadata"]``
and the inference file saved beside it carries U1 too; the training file's
embedded anemoi.json then gets a second fresh uuid (U2, ``embedded_uuid``). A
session started from a checkpoint sets ``parent_uuid`` to that checkpoint's U1
in every checkpoint it writes; a resume keeps the ``run_id``, a fork gets a
new one and records ``fork_run_id``. A pickled inference model keeps what
torch-geometric's message passing keeps: type annotations
(``types.GenericAlias``, ``typing.Union``), ``inspect._empty`` and its
``Inspector`` objects.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import sys
import types
import uuid as _uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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

Relation = Literal["resume", "fork"]


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
    #: What regenerates the same weights: ``_make_weights(weights_bytes, dtype, seed)``.
    weights_bytes: int = 0
    seed: int = 0
    dtype: str = "float32"
    #: The uuid of the embedded anemoi.json when it differs from ``uuid`` (U2 of a training file).
    embedded_uuid: str | None = None

    @property
    def uuids(self) -> list[str]:
        """Every uuid the file holds, ``uuid`` first."""
        return [u for u in (self.uuid, self.embedded_uuid) if u]


# --- throw-away modules ---------------------------------------------------------


def _make_classes() -> dict[str, dict[str, type]]:
    """Classes with the module paths anemoi and torch_geometric give them."""
    import pydantic
    import torch

    class BaseIndex:
        def __init__(self, included: list[int], excluded: list[int]) -> None:
            self.included = included
            self.excluded = excluded

    class InputTensorIndex:
        def __init__(self, name_to_index: dict[str, int], full: list[int]) -> None:
            self.name_to_index = name_to_index
            self.full = torch.tensor(full, dtype=torch.int64)

    class IndexCollection:
        def __init__(self, name_to_index: dict[str, int], forcing: list[str]) -> None:
            self.name_to_index = dict(name_to_index)
            full = list(name_to_index.values())
            forcing_idx = [name_to_index[n] for n in forcing]
            self.forcing = forcing
            self.data = BaseIndex(full, [])
            self.model = BaseIndex([i for i in full if i not in forcing_idx] + forcing_idx, [])
            self.input = InputTensorIndex(name_to_index, full)

    class NodeStorage:
        def __init__(self, mapping: dict[str, Any]) -> None:
            self._mapping = mapping

    class EdgeStorage(NodeStorage):
        pass

    class HeteroData:
        def __init__(self, nodes: dict[str, Any], edges: dict[tuple[str, str, str], Any]) -> None:
            self._node_store_dict = {k: NodeStorage(v) for k, v in nodes.items()}
            self._edge_store_dict = {k: EdgeStorage(v) for k, v in edges.items()}

    class ModelSchema(pydantic.BaseModel):
        num_channels: int
        model: str = "anemoi.models.models.AnemoiModelEncProcDec"

    class TrainingSchema(pydantic.BaseModel):
        lr: float = 6.25e-5
        max_epochs: int = 10
        run_id: str | None = None
        fork_run_id: str | None = None

    class BaseSchema(pydantic.BaseModel):
        model: ModelSchema
        training: TrainingSchema

    class Block(torch.nn.Module):
        """A container standing in for anemoi's encoder, processor and decoder layers."""

    class AnemoiModelEncProcDec(torch.nn.Module):
        pass

    class AnemoiModelInterface(torch.nn.Module):
        pass

    class Parameter:  # torch_geometric.inspector.Parameter: one argument of message()
        def __init__(self, name: str, type: Any, type_repr: str, default: Any) -> None:
            self.name, self.type, self.type_repr, self.default = name, type, type_repr, default

    class Signature:
        def __init__(self, param_dict: dict[str, Any], return_type: Any, return_type_repr: str) -> None:
            self.param_dict, self.return_type, self.return_type_repr = param_dict, return_type, return_type_repr

    class Inspector:
        def __init__(self, signatures: dict[str, Any]) -> None:
            self._signature_dict = signatures

    return {
        "anemoi.models.data_indices.index": {"BaseIndex": BaseIndex},
        "anemoi.models.data_indices.tensor": {"InputTensorIndex": InputTensorIndex},
        "anemoi.models.data_indices.collection": {"IndexCollection": IndexCollection},
        "torch_geometric.data.storage": {"NodeStorage": NodeStorage, "EdgeStorage": EdgeStorage},
        "torch_geometric.data.hetero_data": {"HeteroData": HeteroData},
        "anemoi.training.schemas.base_schema": {
            "BaseSchema": BaseSchema,
            "ModelSchema": ModelSchema,
            "TrainingSchema": TrainingSchema,
        },
        "anemoi.models.layers.block": {"Block": Block},
        "anemoi.models.models.encoder_processor_decoder": {"AnemoiModelEncProcDec": AnemoiModelEncProcDec},
        "anemoi.models.interface": {"AnemoiModelInterface": AnemoiModelInterface},
        "torch_geometric.inspector": {"Inspector": Inspector, "Parameter": Parameter, "Signature": Signature},
    }


@contextlib.contextmanager
def _throwaway_modules() -> Iterator[types.SimpleNamespace]:
    """Put the anemoi-like modules in ``sys.modules`` for as long as pickling takes.

    Modules that were not there are added and removed afterwards, so the files refer to
    classes the reader cannot import. Where the real package is imported (anemoi-models or
    torch-geometric installed with the ``[inference]`` extra), the module holding the classes is
    shadowed for that time and put back: the real modules are never imported or changed here.
    """
    classes = _make_classes()
    added: list[str] = []
    shadowed: dict[str, types.ModuleType] = {}
    namespace = types.SimpleNamespace()
    try:
        for module_name, members in classes.items():
            parts = module_name.split(".")
            for depth in range(1, len(parts) + 1):
                name = ".".join(parts[:depth])
                if name in sys.modules:
                    if name == module_name and name not in shadowed and name not in added:
                        shadowed[name] = sys.modules[name]
                        sys.modules[name] = types.ModuleType(name)
                    continue
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
            module = sys.modules[module_name]
            for cls_name, cls in members.items():
                cls.__module__ = module_name
                cls.__qualname__ = cls_name
                setattr(module, cls_name, cls)
                setattr(namespace, cls_name, cls)
        yield namespace
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)
        sys.modules.update(shadowed)


# --- content --------------------------------------------------------------------


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


def _make_weights(weights_bytes: int, dtype: str, seed: int) -> dict[str, Any]:
    import torch

    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(seed)
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    weights = {}
    for name, shape in _weight_shapes(weights_bytes, itemsize):
        weights[name] = torch.randn(shape, generator=generator, dtype=torch.float32).to(torch_dtype)
    return weights


def _adam_state(weights: dict[str, Any], step: int, seed: int) -> dict[str, Any]:
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


def _supporting_arrays(grid_points: int) -> dict[str, Any]:
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


def _hyper_parameters(
    classes: types.SimpleNamespace,
    metadata: dict[str, Any],
    arrays: dict[str, Any],
    config_type: str,
) -> dict[str, Any]:
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    config_dict = metadata["config"]
    if config_type == "omegaconf":
        config: Any = OmegaConf.create(config_dict)
    else:
        config = classes.BaseSchema(
            model=classes.ModelSchema(num_channels=config_dict["model"]["num_channels"]),
            training=classes.TrainingSchema(
                run_id=config_dict["training"]["run_id"], fork_run_id=config_dict["training"]["fork_run_id"]
            ),
        )
    grid = len(arrays["latitudes"])
    coords = torch.from_numpy(np.stack([arrays["latitudes"], arrays["longitudes"]], axis=1).astype(np.float32))
    graph = classes.HeteroData(
        nodes={"data": {"x": coords}, "hidden": {"x": coords[: max(1, grid // 4)].clone()}},
        edges={
            ("data", "to", "hidden"): {"edge_index": torch.stack([torch.arange(grid), torch.arange(grid) % max(1, grid // 4)])},
        },
    )
    statistics = {
        "mean": np.zeros(len(VARIABLES)),
        "stdev": np.ones(len(VARIABLES)),
        "minimum": np.full(len(VARIABLES), -1.0),
        "maximum": np.full(len(VARIABLES), 1.0),
    }
    return {
        "config": config,
        "graph_data": graph,
        "statistics": statistics,
        "statistics_tendencies": None,
        "data_indices": classes.IndexCollection(metadata["data_indices"]["name_to_index"], FORCINGS),
        "metadata": metadata,
        "supporting_arrays": arrays,
        "truncation_data": {},
    }


def _lightning_dict(
    classes: types.SimpleNamespace,
    weights: dict[str, Any],
    metadata: dict[str, Any],
    arrays: dict[str, Any],
    *,
    epoch: int,
    global_step: int,
    seed: int,
    config_type: str,
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": weights,
        "loops": {
            "fit_loop": {
                "state_dict": {},
                "epoch_loop.state_dict": {"_batches_that_stepped": global_step},
                "epoch_progress": {"total": {"ready": epoch, "completed": epoch}, "current": {"ready": epoch, "completed": epoch}},
            },
            "validate_loop": {"state_dict": {}},
        },
        "callbacks": {
            "AnemoiCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': None, 'every_n_epochs': 1, 'train_time_interval': None}": {
                "monitor": None,
                "best_model_score": None,
                "best_model_path": "",
                "current_score": None,
                "dirpath": "checkpoints",
                "last_model_path": "",
            }
        },
        "optimizer_states": [_adam_state(weights, global_step, seed)],
        "lr_schedulers": [{"t_initial": 1000, "base_values": [6.25e-5], "last_epoch": global_step, "_step_count": global_step + 1}],
        "hyper_parameters": _hyper_parameters(classes, metadata, arrays, config_type),
        "task_state": {"rollout": 1, "task": "anemoi.training.train.forecaster.GraphForecaster"},
        "migrations": {"versions": {"anemoi.training": DEFAULT_MODULE_VERSIONS["anemoi.training"]}, "history": []},
    }


# --- writers --------------------------------------------------------------------


def _embed(path: Path, metadata: dict[str, Any], arrays: dict[str, Any], name: str) -> dict[str, Any]:
    from anemoi_ckpt_nb.read.embedded import top_directory, write_embedded

    with zipfile.ZipFile(path, "a") as zf:
        return write_embedded(zf, top_directory(zf.namelist()), metadata, arrays, name=name)


def write_training_checkpoint(
    path: str | Path,
    *,
    weights_bytes: int = 200_000,
    uuid: str | None = None,
    run_id: str | None = None,
    parent_uuid: str | None = None,
    fork_run_id: str | None = None,
    epoch: int = 1,
    global_step: int = 100,
    seed: int = 0,
    embedded: str | None = "anemoi.json",
    embedded_uuid: str | None = None,
    two_uuids: bool = True,
    grid_points: int = 64,
    dtype: str = "float32",
    config_type: Literal["omegaconf", "pydantic"] = "omegaconf",
    module_versions: dict[str, str] | None = None,
) -> ExampleCheckpoint:
    """Write an Anemoi-shaped Lightning training checkpoint with ``torch.save``.

    Args:
        path: the file to write (its folder is created).
        weights_bytes: about how many bytes of model weights; Adam state adds twice that.
        uuid, run_id: fresh random ones when not given.
        parent_uuid: the checkpoint this session started from (resume or fork).
        fork_run_id: the run this one was forked from.
        embedded: ``"anemoi.json"``, the older ``"ai-models.json"``, or ``None``
            for a file whose metadata is only in ``hyper_parameters``.
        embedded_uuid: the uuid of the embedded metadata (default: a fresh one, U2).
        two_uuids: embed a second uuid, as anemoi-training >= 0.6 does with torch >= 2.6;
            False for one uuid in both places (older releases, or torch < 2.6).
        grid_points: length of the supporting arrays (latitudes, longitudes, ...).
        dtype: dtype of the weights (``float32``, ``bfloat16``, ...).
        config_type: ``hyper_parameters["config"]`` as an omegaconf DictConfig or a pydantic schema.
        module_versions: ``provenance_training.module_versions`` to record.

    Returns:
        What was written.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    uuid = uuid or str(_uuid.uuid4())
    run_id = run_id or str(_uuid.uuid4())
    weights = _make_weights(weights_bytes, dtype, seed)
    parameter_count = sum(t.numel() for t in weights.values())
    metadata = make_metadata(
        uuid=uuid,
        run_id=run_id,
        parent_uuid=parent_uuid,
        fork_run_id=fork_run_id,
        epoch=epoch,
        global_step=global_step,
        seed=seed,
        parameter_count=parameter_count,
        grid_points=grid_points,
        module_versions=module_versions,
    )
    arrays = _supporting_arrays(grid_points)
    with _throwaway_modules() as classes:
        checkpoint = _lightning_dict(
            classes, weights, metadata, arrays, epoch=epoch, global_step=global_step, seed=seed, config_type=config_type
        )
        torch.save(checkpoint, path)
    if embedded and two_uuids:
        # AnemoiCheckpoint._save_checkpoint draws a new uuid after torch.save, then embeds the metadata.
        embedded_uuid = embedded_uuid or str(_uuid.uuid4())
        written = _embed(path, {**metadata, "uuid": embedded_uuid}, arrays, embedded)
    else:
        embedded_uuid = None
        written = _embed(path, metadata, arrays, embedded) if embedded else metadata
    return ExampleCheckpoint(
        path=path,
        uuid=uuid,
        embedded_uuid=embedded_uuid,
        run_id=run_id,
        parent_uuid=parent_uuid,
        kind="training",
        epoch=epoch,
        global_step=global_step,
        metadata=written,
        supporting_arrays=arrays,
        state_dict_names=list(weights),
        fork_run_id=fork_run_id,
        weights_bytes=weights_bytes,
        seed=seed,
        dtype=dtype,
    )


def _module_tree(classes: types.SimpleNamespace, weights: dict[str, Any]) -> Any:
    """An ``AnemoiModelInterface`` whose parameters have the given dotted names (minus ``model.``)."""
    import torch

    interface = classes.AnemoiModelInterface()
    for full_name, tensor in weights.items():
        parts = full_name.split(".")[1:]  # the Lightning module's "model." prefix
        module = interface
        for depth, part in enumerate(parts[:-1]):
            if part not in module._modules:
                cls = classes.AnemoiModelEncProcDec if (depth == 0 and module is interface) else classes.Block
                module.add_module(part, cls())
            module = module._modules[part]
        module.register_parameter(parts[-1], torch.nn.Parameter(tensor.clone(), requires_grad=False))
    return interface


def write_inference_checkpoint(
    path: str | Path,
    *,
    source: ExampleCheckpoint | None = None,
    weights_bytes: int = 200_000,
    seed: int = 0,
    grid_points: int = 64,
) -> ExampleCheckpoint:
    """Write an inference checkpoint as anemoi-training writes it today.

    The whole ``AnemoiModelInterface`` is pickled with ``torch.save`` (so the
    file can only be loaded with the classes that wrote it), then the
    metadata is embedded. Given ``source``, the weights, uuid and metadata are
    those of that training checkpoint, as anemoi-training writes both files
    from the same state.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        # Same seed, size and dtype regenerate the very tensors of the training file.
        weights_bytes, seed, dtype = source.weights_bytes, source.seed, source.dtype
    else:
        dtype = "float32"
    weights = _make_weights(weights_bytes, dtype, seed)
    parameter_count = sum(t.numel() for t in weights.values())
    if source is not None:
        # The inference file is saved before the training file's second uuid is drawn: it carries U1.
        metadata = {k: v for k, v in source.metadata.items() if k != "supporting_arrays_paths"}
        metadata["uuid"] = source.uuid
        arrays = source.supporting_arrays
        uuid, run_id, parent_uuid = source.uuid, source.run_id, source.parent_uuid
        epoch, global_step = source.epoch, source.global_step
    else:
        uuid, run_id, parent_uuid, epoch, global_step = str(_uuid.uuid4()), str(_uuid.uuid4()), None, 1, 100
        metadata = make_metadata(uuid=uuid, run_id=run_id, seed=seed, parameter_count=parameter_count, grid_points=grid_points)
        arrays = _supporting_arrays(grid_points)
    with _throwaway_modules() as classes:
        model = _module_tree(classes, weights)
        # Like anemoi-models, the model keeps a function as an attribute and a layer without parameters.
        model.model.activation = torch.nn.functional.gelu
        model.model.add_module("activation_layer", torch.nn.GELU())
        # torch-geometric >= 2.5 keeps message() annotations: tuple[Tensor, Tensor] pickles as types.GenericAlias.
        import inspect
        import typing

        model.model.inspector = classes.Inspector({
            "message": classes.Signature(
                {
                    "x_j": classes.Parameter("x_j", torch.Tensor, "Tensor", inspect.Parameter.empty),
                    "edge_attr": classes.Parameter("edge_attr", typing.Optional[torch.Tensor], "Optional[Tensor]", None),
                },
                tuple[torch.Tensor, torch.Tensor],
                "tuple[Tensor, Tensor]",
            ),
        })
        model.metadata = metadata
        model.supporting_arrays = arrays
        model.data_indices = classes.IndexCollection(metadata["data_indices"]["name_to_index"], FORCINGS)
        torch.save(model, path)
    written = _embed(path, metadata, arrays, "anemoi.json")
    return ExampleCheckpoint(
        path=path,
        uuid=uuid,
        run_id=run_id,
        parent_uuid=parent_uuid,
        kind="inference",
        epoch=epoch,
        global_step=global_step,
        metadata=written,
        supporting_arrays=arrays,
        state_dict_names=[name.split(".", 1)[1] for name in weights],
        weights_bytes=weights_bytes,
        seed=seed,
        dtype=dtype,
    )


def write_state_dict(
    path: str | Path, *, weights_bytes: int = 200_000, seed: int = 0, dtype: str = "float32"
) -> dict[str, Any]:
    """Write a plain ``torch.save`` of a state dict (no Lightning keys, no metadata).

    Returns:
        The tensors written, keyed by name (without the ``model.`` prefix).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {name.split(".", 1)[1]: t for name, t in _make_weights(weights_bytes, dtype, seed).items()}
    torch.save(weights, path)
    return weights


def write_safetensors(
    path: str | Path,
    *,
    weights_bytes: int = 200_000,
    seed: int = 0,
    dtype: str = "float32",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a ``.safetensors`` file of model weights, with the metadata JSON in its header.

    Returns:
        The tensors written, keyed by name.
    """
    import json

    from safetensors.torch import save_file

    from anemoi_ckpt_nb.read.embedded import SAFETENSORS_METADATA_KEY

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {name.split(".", 1)[1]: t.contiguous() for name, t in _make_weights(weights_bytes, dtype, seed).items()}
    header = {SAFETENSORS_METADATA_KEY: json.dumps(metadata)} if metadata is not None else None
    save_file(weights, str(path), metadata=header)
    return weights


def write_run(
    folder: str | Path,
    *,
    checkpoints: int = 3,
    run_id: str | None = None,
    start_from: ExampleCheckpoint | None = None,
    relation: Relation = "resume",
    weights_bytes: int = 200_000,
    steps_per_epoch: int = 100,
    seed: int = 0,
    **options: Any,
) -> list[ExampleCheckpoint]:
    """Write the checkpoints of one training session, one per epoch.

    Files go to ``folder/<run_id>/anemoi-by_epoch-epoch_EEE-step_SSSSSS.ckpt``
    as anemoi-training names them.

    Args:
        checkpoints: how many epochs to save.
        run_id: for a fresh run; ignored when resuming (the run id is kept).
        start_from: the checkpoint this session starts from, if any.
        relation: ``"resume"`` continues ``start_from``'s run and epochs;
            ``"fork"`` starts a new run (new run id, ``fork_run_id`` set, epochs from 1).
        weights_bytes: about how many bytes of weights each checkpoint holds.
        options: passed on to :func:`write_training_checkpoint`.

    Returns:
        The checkpoints, oldest first.
    """
    if relation not in ("resume", "fork"):
        raise ValueError(f"relation must be 'resume' or 'fork', not {relation!r}")
    parent_uuid = start_from.uuid if start_from else None
    fork_run_id = None
    first_epoch = 1
    if start_from is not None and relation == "resume":
        run_id = start_from.run_id
        first_epoch = start_from.epoch + 1
    elif start_from is not None:
        fork_run_id = start_from.run_id
        run_id = run_id or str(_uuid.uuid4())
    run_id = run_id or str(_uuid.uuid4())
    written = []
    for epoch in range(first_epoch, first_epoch + checkpoints):
        step = epoch * steps_per_epoch
        written.append(
            write_training_checkpoint(
                Path(folder) / run_id / f"anemoi-by_epoch-epoch_{epoch:03d}-step_{step:06d}.ckpt",
                weights_bytes=weights_bytes,
                run_id=run_id,
                parent_uuid=parent_uuid,
                fork_run_id=fork_run_id,
                epoch=epoch,
                global_step=step,
                seed=seed + epoch,
                **options,
            )
        )
    return written


def write_example_project(folder: str | Path, *, weights_bytes: int = 200_000) -> dict[str, list[ExampleCheckpoint]]:
    """A small project: a run of three epochs, a resume of it, and a fork from its second epoch.

    Returns:
        ``{"base": [...], "resumed": [...], "forked": [...]}``, each oldest first.
    """
    base = write_run(folder, checkpoints=3, weights_bytes=weights_bytes)
    resumed = write_run(folder, checkpoints=2, start_from=base[-1], relation="resume", weights_bytes=weights_bytes)
    forked = write_run(folder, checkpoints=2, start_from=base[1], relation="fork", weights_bytes=weights_bytes, seed=100)
    return {"base": base, "resumed": resumed, "forked": forked}
