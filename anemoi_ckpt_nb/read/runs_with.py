"""Which runner runs a checkpoint, and what it needs: the "runs with" line of ``validate``, ``inspect`` and the card.

Three ways to run an Anemoi model:

- anemoi-inference's **default runner**: ``torch.load(path, weights_only=False)``, so only a
  pickled model (anemoi-training's ``inference-*.ckpt``, ``convert --format pickled``); the
  unpickling needs the anemoi-models (and torch-geometric) classes it was pickled with;
- the **anemoi-ckpt runner** (``runner: anemoi-ckpt`` in anemoi-inference's config) and
- **load_model** (Python), which build the model with the installed anemoi-models from a file
  that carries its graph: converted files (``anemoi``, ``safetensors``), pickled inference files
  and training checkpoints.

Pure functions of what the file is; nothing is imported or run.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_RUNNER = "anemoi-inference (default runner)"
CKPT_RUNNER = "anemoi-inference with runner: anemoi-ckpt"
LOAD_MODEL = "anemoi_ckpt_nb.load_model"

#: What the anemoi-ckpt runner and load_model need where they run.
BUILD_NEEDS = "anemoi-models{version} and torch-geometric"
INSTALL = "pip install 'anemoi-ckpt-nb[inference]'"


def runs_with(
    kind: str | None,
    *,
    conversion_format: str | None = None,
    has_graph: bool | None = None,
    models_version: str | None = None,
) -> list[tuple[str, str]]:
    """``[(runner, what it needs), ...]`` for a file; empty when nothing runs it as it is.

    Args:
        kind: the reader's kind (``training``, ``inference`` for a pickled model,
            ``state-dict``, ``safetensors``) or a record's (``training``, ``inference``).
        conversion_format: ``metadata["conversion"]["format"]`` of a file anemoi-ckpt converted.
        has_graph: whether the file carries its graph (``None``: unknown, assumed for a converted file).
        models_version: the anemoi-models version the checkpoint was written with.
    """
    version = f"=={models_version}" if models_version else ""
    build = BUILD_NEEDS.format(version=version)
    if kind == "training":
        if has_graph is False:
            return []
        return [(CKPT_RUNNER, build), (LOAD_MODEL, build)]
    pickled = kind == "inference" and conversion_format in (None, "pickled")
    if pickled:
        return [
            (DEFAULT_RUNNER, build),  # the classes it was pickled with
            (CKPT_RUNNER, build),  # builds the model; the pickle is read safely, never run
            (LOAD_MODEL, build),
        ]
    if conversion_format in ("anemoi", "safetensors") and has_graph is not False:
        return [(CKPT_RUNNER, build), (LOAD_MODEL, build)]
    return []


def runs_with_text(runners: list[tuple[str, str]], kind: str | None = None) -> str:
    """The runners as one line; what to do when none runs the file."""
    if runners:
        needs = {n for _, n in runners}
        if len(needs) == 1:
            return f"{', '.join(r for r, _ in runners)}; needs {needs.pop()} ({INSTALL})"
        return "; ".join(f"{runner} (needs {n})" for runner, n in runners)
    if kind == "training":
        return "nothing as it is: it holds no graph to build the model from"
    return ("nothing as it is: the weights alone, without the graph anemoi-models builds the model from; "
            "convert its training checkpoint again (anemoi-ckpt convert)")


def runs_with_file(ck: Any) -> list[tuple[str, str]]:
    """:func:`runs_with` of an open :class:`~anemoi_ckpt_nb.read.checkpoint.CheckpointFile`."""
    metadata = ck.metadata if isinstance(ck.metadata, dict) else {}
    conversion = metadata.get("conversion")
    conversion_format = conversion.get("format") if isinstance(conversion, dict) else None
    if not metadata:
        return []
    # Whether the graph is there is not read: that would import numpy, which inspect must not.
    return runs_with(ck.kind, conversion_format=conversion_format, models_version=models_version(metadata))


def models_version(metadata: Any) -> str | None:
    """The anemoi-models version in ``provenance_training.module_versions`` (either anemoi-utils form)."""
    provenance = metadata.get("provenance_training") if isinstance(metadata, dict) else None
    versions = provenance.get("module_versions") if isinstance(provenance, dict) else None
    version = versions.get("anemoi.models") or versions.get("anemoi-models") if isinstance(versions, dict) else None
    if isinstance(version, dict):
        version = version.get("version")
    return version if isinstance(version, str) else None
