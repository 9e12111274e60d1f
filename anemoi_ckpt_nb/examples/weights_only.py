"""The other files a run leaves: the inference checkpoint (the whole model pickled), a plain state dict, a safetensors file."""

from __future__ import annotations

import types
import uuid as _uuid
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.examples.content import (
    FORCINGS,
    ExampleCheckpoint,
    embed,
    make_metadata,
    make_weights,
    supporting_arrays_for,
)
from anemoi_ckpt_nb.examples.modules import throwaway_modules


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
    weights = make_weights(weights_bytes, dtype, seed)
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
        arrays = supporting_arrays_for(grid_points)
    with throwaway_modules() as classes:
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
    written = embed(path, metadata, arrays, "anemoi.json")
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
    weights = {name.split(".", 1)[1]: t for name, t in make_weights(weights_bytes, dtype, seed).items()}
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
    weights = {name.split(".", 1)[1]: t.contiguous() for name, t in make_weights(weights_bytes, dtype, seed).items()}
    header = {SAFETENSORS_METADATA_KEY: json.dumps(metadata)} if metadata is not None else None
    save_file(weights, str(path), metadata=header)
    return weights
