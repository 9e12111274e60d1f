"""Build the model of a checkpoint with anemoi-models, without unpickling code: :func:`load_model`.

The ADR's "custom inference loader that maps checkpoints to code": a checkpoint is read
by the safe reader (nothing from the file runs), the model is built by the installed
anemoi-models from the checkpoint's own config, graph, statistics and indices
(:mod:`.model_inputs`), and the weights are loaded strictly. The result is the
``AnemoiModelInterface`` anemoi-training would have pickled, ready for ``predict_step``,
with the same output bit for bit.

It reads the files ``anemoi-ckpt convert`` writes (both formats), anemoi-training's
training checkpoints, and its pickled ``inference-*.ckpt`` (whose pickle is read safely,
never run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import ModelLoadError, ModelPackageMissingError, ModelVersionGapError

PACKAGE = "anemoi-models"
#: The module name anemoi-training records in ``provenance_training.module_versions``.
MODULE = "anemoi.models"
INSTALL_HINT = "pip install 'anemoi-ckpt-nb[inference]'"


def load_model(source: str | Path, *, device: str = "cpu", mmap: bool | None = None) -> Any:
    """The model of a checkpoint, built by the installed anemoi-models, in eval mode.

    Args:
        source: a file written by ``anemoi-ckpt convert`` (``anemoi`` or ``safetensors``),
            an anemoi-training training checkpoint, or its ``inference-*.ckpt``.
        device: where the model goes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
        mmap: ``True``: on the CPU the weights stay in a private (copy-on-write) memory map of
            the file: nothing is copied at load, each page is read from the page cache when the
            model first uses it, and a write to a weight never reaches the file. ``False``: they
            are read into the process's own memory and the model does not depend on the file.
            ``None`` (the default): mapped for the files ``anemoi-ckpt convert`` writes (written
            under a temporary name and renamed into place, never rewritten in place), read for
            anemoi-training's own files (it rewrites ``last.ckpt`` and ``inference-last.ckpt``
            in place at every save; a mapped file cut short under a model kills the process
            with ``SIGBUS`` when the model next reads the lost pages). Docs: run.md.

    Returns:
        The ``anemoi.models.interface.AnemoiModelInterface``, weights loaded, ready for
        ``predict_step``. Its ``metadata``, ``config`` and ``supporting_arrays`` are the
        checkpoint's.

    Raises:
        ModelLoadError: anemoi-models (or torch-geometric) is missing
            (``ModelPackageMissingError``), the checkpoint holds no graph (a file converted
            before graphs were written: convert its training checkpoint again), or the
            installed anemoi-models cannot build it; ``ModelVersionGapError`` when another
            anemoi-models version wrote it (an early-2025 file on 0.19), naming both.
        CheckpointReadError: the file cannot be read.
    """
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    path = Path(source)
    with open_checkpoint(path) as checkpoint:
        plan = _plan(checkpoint, path)
        return build(plan, device=device, mapped=maps(checkpoint) if mmap is None else bool(mmap))


def maps(checkpoint: Any) -> bool:
    """Whether :func:`load_model` maps the weights of ``checkpoint`` by default: the files
    ``anemoi-ckpt convert`` writes (read as a state dict or safetensors), not anemoi-training's."""
    return checkpoint.kind in ("state-dict", "safetensors")


class _Plan:
    """What a model is built from, read from one checkpoint."""

    def __init__(self, checkpoint: Any, path: Path, metadata: dict, inputs: Any, weights: dict[str, str], supporting_arrays: dict) -> None:
        self.checkpoint = checkpoint  # open while the model is built
        self.path = path
        self.metadata = metadata
        self.inputs = inputs
        #: ``{name in the model: name in the file}``
        self.weights = weights
        self.supporting_arrays = supporting_arrays

    @property
    def written_with(self) -> str | None:
        """The anemoi-models version the checkpoint was written with, if recorded."""
        return written_with(self.metadata)


def written_with(metadata: dict | None) -> str | None:
    """The anemoi-models version recorded in ``provenance_training.module_versions``."""
    from anemoi_ckpt_nb.read.runs_with import models_version

    return models_version(metadata)


def _plan(checkpoint: Any, path: Path) -> _Plan:
    from anemoi_ckpt_nb.conversion.plan import map_name

    metadata = checkpoint.metadata
    if not isinstance(metadata, dict) or not isinstance(metadata.get("config"), dict):
        raise ModelLoadError(path, "it has no metadata with the training config, which the model is built from")
    inputs = checkpoint.model_inputs()
    if inputs is None:
        raise ModelLoadError(
            path,
            "it holds no graph: anemoi-models keeps the graph outside the weights, so the model cannot be built from them alone",
            hint="convert its training checkpoint again with this anemoi-ckpt-nb (anemoi-ckpt convert), which stores the graph",
        )
    kind = "training" if checkpoint.kind == "training" else "inference"
    weights = {}
    for name in checkpoint.weights:
        mapped = map_name(name, kind)
        if mapped is not None:
            weights[mapped] = name
    return _Plan(checkpoint, path, metadata, inputs, weights, checkpoint.supporting_arrays or {})


def build(plan: _Plan, *, device: Any = "cpu", mapped: bool = False) -> Any:
    """Build the model of ``plan`` with the installed anemoi-models and load its weights
    (``mapped``: views of the file's private memory map, :func:`.empty.read_weights`)."""
    import torch

    _require(plan)
    arrays = plan.inputs.arrays

    def array(name: str) -> Any:
        return arrays[name]

    from anemoi_ckpt_nb.conversion import empty

    model = _construct(plan, array, empty.parameters_on_meta())
    # A buffer made from a parameter at build time would stay on the meta device: such a model
    # is built the ordinary way (initial weights drawn) and the checkpoint's copied in.
    assign = not _buffers_on_meta(model)
    if not assign:
        model = _construct(plan, array, contextlib.nullcontext())
    groups = empty.tied(model)
    weights = empty.read_weights(plan.checkpoint, plan.weights, model, mapped=mapped)
    try:
        model.load_state_dict(weights, strict=True, assign=assign)
    except RuntimeError as error:
        raise _cannot_build(plan, f"its weights do not fit the model built: {_short(error)}") from error
    if assign:
        empty.tie(model, groups)
    del weights
    left = empty.meta_tensors(model)
    if left:  # strict loading names every parameter: only a bug of ours could leave one
        raise _cannot_build(plan, f"{len(left)} tensors of the model were not filled, first {left[:3]}")
    model.eval()
    return model.to(torch.device(device))


def _construct(plan: _Plan, array: Any, parameters: Any) -> Any:
    """``AnemoiModelInterface`` of ``plan``, its parameters made under ``parameters`` (a context)."""
    from anemoi_ckpt_nb.conversion import fastbuild
    from anemoi_ckpt_nb.read.model_inputs import decode

    spec = plan.inputs.spec
    graph = _graph(spec["graph"], array)
    statistics = decode(spec["statistics"], array)
    tendencies = decode(spec.get("statistics_tendencies"), array)
    try:
        config, plain = _config(plan.metadata["config"], plan.path)
        data_indices = _data_indices(config, spec["data_indices"])
        # Hydra's direct path only for a config without interpolations (Hydra would resolve them in its copies).
        with _quiet_init(), parameters, fastbuild.instantiating() if plain and fastbuild.ENABLED else contextlib.nullcontext():
            from anemoi.models.interface import AnemoiModelInterface

            return AnemoiModelInterface(
                config=config,
                n_step_input=int(spec["n_step_input"]),
                n_step_output=int(spec["n_step_output"]),
                graph_data=graph,
                statistics=statistics,
                statistics_tendencies=tendencies,
                data_indices=data_indices,
                metadata=_deepcopy(plan.metadata),
                supporting_arrays=plan.supporting_arrays,
            )
    except ModelLoadError:
        raise
    except Exception as error:  # anemoi-models' own errors: config keys, class paths, shapes
        raise _cannot_build(plan, f"{type(error).__name__}: {error}") from error


def _buffers_on_meta(model: Any) -> bool:
    return any(buffer.is_meta for buffer in model.buffers())


# --- pieces -------------------------------------------------------------------------------


def _require(plan: _Plan) -> None:
    """anemoi-models and torch-geometric must be importable; say which version the file needs."""
    needed = plan.written_with
    for distribution, module in ((PACKAGE, "anemoi.models.interface"), ("torch-geometric", "torch_geometric.data")):
        try:
            __import__(module)
        except ImportError as error:
            version = needed if distribution == PACKAGE else None
            wanted = f"{distribution}=={version}" if version else distribution
            raise ModelPackageMissingError(
                plan.path,
                f"building its model needs {wanted}, which is not installed ({error})",
                package=distribution,
                version=version,
                hint=f"{INSTALL_HINT}, or pip install {wanted}",
            ) from error


def _cannot_build(plan: _Plan, reason: str) -> ModelLoadError:
    from anemoi_ckpt_nb.compat.environment import installed_version  # pydantic and more: only on this path

    installed, needed = installed_version(MODULE), plan.written_with
    if needed and installed and needed != installed:
        return ModelVersionGapError(
            plan.path,
            f"it was written with {PACKAGE} {needed}, and {PACKAGE} {installed} cannot build its model: {reason}. "
            f"load_model translates the class paths that moved between versions, not the config keys and weight "
            f"names of another model layout (docs: run.md, Files of another anemoi-models)",
            written_with=needed,
            installed=installed,
            hint=f"run its pickled inference-*.ckpt with anemoi-inference's default runner where {PACKAGE}=={needed} "
            f"is installed (pip install {PACKAGE}=={needed})",
        )
    return ModelLoadError(plan.path, f"{PACKAGE} {installed} cannot build its model: {reason}")


def _short(error: BaseException, limit: int = 600) -> str:
    text = str(error).replace("\n\t", " ").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _graph(spec: dict[str, Any], array: Any) -> Any:
    from torch_geometric.data import HeteroData

    from anemoi_ckpt_nb.read.model_inputs import decode

    graph = HeteroData()
    for name, attributes in spec.get("nodes", {}).items():
        for key, value in attributes.items():
            graph[name][key] = decode(value, array)
    for edge in spec.get("edges", []):
        store = graph[tuple(edge["type"])]
        for key, value in edge["attributes"].items():
            store[key] = decode(value, array)
    for key, value in spec.get("global", {}).items():
        setattr(graph, key, decode(value, array))
    return graph


def _config(config: dict[str, Any], path: Path) -> tuple[Any, bool]:
    """``(DictConfig, plain)``: the file's config for anemoi-models, once every class it would build is
    one it may (:mod:`.targets`), and whether it holds no interpolation (nothing to resolve)."""
    from omegaconf import OmegaConf

    from anemoi_ckpt_nb.conversion import fastbuild
    from anemoi_ckpt_nb.conversion.targets import check_targets

    translated = translate_config(config)
    plain = not fastbuild.has_interpolation(translated)
    created = fastbuild.config_tree(translated) if fastbuild.ENABLED else OmegaConf.create(translated)
    if plain:
        resolved = translated
    else:
        try:
            resolved = OmegaConf.to_container(created, resolve=True)
        except Exception as error:  # a missing or cyclic interpolation, an unknown resolver
            raise ModelLoadError(path, f"its config cannot be resolved: {_short(error)}") from error
    check_targets(resolved, path)
    return created, plain


def translate_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config with class paths of older anemoi-models releases moved to today's.

    Only moves known to keep the same class (and so the same weights) are applied.
    """
    from anemoi_ckpt_nb.read.classmap import current_name

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "_target_" and isinstance(value, str) and "." in value:
                    module, _, name = value.rpartition(".")
                    module, name = current_name(module, name)
                    value = f"{module}.{name}"
                out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(config)


def _data_indices(config: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from anemoi.models.data_indices.collection import IndexCollection

    try:
        from anemoi.models.utils.config import get_multiple_datasets_config

        data_config = get_multiple_datasets_config(config.data)
    except ImportError:  # anemoi-models before multi-dataset support
        data_config = {name: config.data for name in spec}
    return {name: IndexCollection(data_config[name], entry["name_to_index"]) for name, entry in spec.items()}


def _deepcopy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


@contextmanager
def _quiet_init() -> Iterator[None]:
    """Building draws random initial weights (overwritten by the checkpoint's): keep the caller's RNG as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        yield
