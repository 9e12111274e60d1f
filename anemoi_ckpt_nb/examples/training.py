"""An Anemoi-shaped Lightning training checkpoint: the Lightning dict, its ``hyper_parameters``, written with ``torch.save``."""

from __future__ import annotations

import types
import uuid as _uuid
from pathlib import Path
from typing import Any, Literal

from anemoi_ckpt_nb.examples.content import (
    DEFAULT_MODULE_VERSIONS,
    FORCINGS,
    VARIABLES,
    ExampleCheckpoint,
    adam_state,
    embed,
    make_metadata,
    make_weights,
    supporting_arrays_for,
)
from anemoi_ckpt_nb.examples.modules import throwaway_modules


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
        "optimizer_states": [adam_state(weights, global_step, seed)],
        "lr_schedulers": [{"t_initial": 1000, "base_values": [6.25e-5], "last_epoch": global_step, "_step_count": global_step + 1}],
        "hyper_parameters": _hyper_parameters(classes, metadata, arrays, config_type),
        "task_state": {"rollout": 1, "task": "anemoi.training.train.forecaster.GraphForecaster"},
        "migrations": {"versions": {"anemoi.training": DEFAULT_MODULE_VERSIONS["anemoi.training"]}, "history": []},
    }



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
    legacy: bool = False,
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
        legacy: torch's format of before 1.6 (``_use_new_zipfile_serialization=False``): not a
            zip archive, so nothing is embedded (``embedded`` must be ``None``).

    Returns:
        What was written.

    Raises:
        ValueError: ``legacy`` with ``embedded`` metadata, which only a zip archive can hold.
    """
    import torch

    if legacy and embedded:
        raise ValueError("a legacy torch file cannot embed metadata: pass embedded=None with legacy=True")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    uuid = uuid or str(_uuid.uuid4())
    run_id = run_id or str(_uuid.uuid4())
    weights = make_weights(weights_bytes, dtype, seed)
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
    arrays = supporting_arrays_for(grid_points)
    with throwaway_modules() as classes:
        checkpoint = _lightning_dict(
            classes, weights, metadata, arrays, epoch=epoch, global_step=global_step, seed=seed, config_type=config_type
        )
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    if embedded and two_uuids:
        # AnemoiCheckpoint._save_checkpoint draws a new uuid after torch.save, then embeds the metadata.
        embedded_uuid = embedded_uuid or str(_uuid.uuid4())
        written = embed(path, {**metadata, "uuid": embedded_uuid}, arrays, embedded)
    else:
        embedded_uuid = None
        written = embed(path, metadata, arrays, embedded) if embedded else metadata
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
