"""``convert --format pickled``: the file anemoi-training's checkpoint callback writes, which anemoi-inference's default runner loads as it is.

anemoi-training writes ``inference-<name>.ckpt`` as ``torch.save(model)`` of its
``AnemoiModelInterface`` (with ``config``, ``metadata`` and ``supporting_arrays`` set to
``None`` and the imputers' runtime state cleared), then appends the metadata and supporting
arrays with anemoi-utils' ``save_metadata`` (``AnemoiCheckpoint._save_checkpoint`` in
``anemoi/training/diagnostics/callbacks/checkpoint.py``). ``anemoi-training checkpoint
inference``, which should write it from a training checkpoint, is broken in 0.17.1.

Here the weights are first converted (the ``anemoi`` format, verified), the model is built
from them by the installed anemoi-models (:func:`.loader.load_model`, the same model bit for
bit), and then pickled and given its metadata the way anemoi-training does. So this format
needs anemoi-models and torch-geometric in the converting process. The result is verified
by reading it back with the safe reader (never unpickling it): same weights, same metadata.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid as _uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import ConvertError, ModelPackageMissingError

#: What the pickled model's classes need, besides torch.
NEEDS = (("anemoi-models", "anemoi.models.interface"), ("torch-geometric", "torch_geometric.data"))


def require_model_packages(source: Path, target: Path, metadata: dict | None = None) -> None:
    """anemoi-models and torch-geometric must be importable here, before any work is done.

    Raises:
        ConvertError: one is missing; it names the package, the version the checkpoint was
            written with, and how to install it (the cause is a ``ModelPackageMissingError``).
    """
    from anemoi_ckpt_nb.conversion.loader import INSTALL_HINT, PACKAGE, written_with

    for package, module in NEEDS:
        try:
            __import__(module)
        except ImportError as error:
            version = written_with(metadata) if package == PACKAGE else None
            wanted = f"{package}=={version}" if version else package
            cause = ModelPackageMissingError(source, f"{wanted} is not installed ({error})", package=package, version=version)
            raise ConvertError(
                source,
                target,
                f"the pickled format pickles the model itself, so it needs {wanted} where it converts, "
                f"and it is not installed ({error})",
                hint=f"convert where anemoi-models runs ({INSTALL_HINT}), or use --format anemoi "
                "or safetensors, which the anemoi-ckpt runner of anemoi-inference runs",
            ) from cause


def convert_pickled(
    checkpoint: Any,
    source: Path,
    target: Path,
    *,
    overwrite: bool,
    convert_weights: Callable[[Path], Any],
) -> Any:
    """Write ``target`` as anemoi-training's pickled inference file; see the module's docstring.

    Args:
        checkpoint: the source, open.
        convert_weights: writes the source's weights in the ``anemoi`` format to the path it is
            given, verified, and returns its :class:`~.plan.ConvertResult`.

    Returns:
        The :class:`~.plan.ConvertResult`.

    Raises:
        ConvertError: anemoi-models is missing, the model cannot be built, or what
            :func:`~.convert.convert` raises for the other formats.
    """
    from anemoi_ckpt_nb.conversion.files import publish, write_sidecar
    from anemoi_ckpt_nb.conversion.plan import refuse_to_replace, sidecar_path
    from anemoi_ckpt_nb.storage.hashing import sha256_file

    started = time.monotonic()
    sidecar = sidecar_path(target)
    refuse_to_replace(source, target, sidecar, overwrite=overwrite)
    require_model_packages(source, target, checkpoint.metadata if isinstance(checkpoint.metadata, dict) else None)
    # torch.save names the archive's top folder after the file: write under the final name,
    # in a hidden folder beside the target, and move it into place once verified.
    work = target.with_name(f".{target.name}.{_uuid.uuid4()}.tmp")
    try:
        work.mkdir()
    except OSError as error:
        raise ConvertError(source, target, f"cannot write beside it: {error}") from error
    try:
        weights = work / "weights.ckpt"
        converted = convert_weights(weights)
        metadata = {**converted.metadata, "conversion": {**converted.metadata["conversion"], "format": "pickled"}}
        pickled = work / target.name
        metadata = _write(weights, pickled, metadata, source, target)
        _verify(weights, pickled, metadata, source, target)
        tmp_sidecar = work / sidecar.name
        write_sidecar(tmp_sidecar, metadata)
        publish(pickled, tmp_sidecar, target, sidecar, overwrite=overwrite)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dataclasses.replace(
        converted,
        destination=target,
        sidecar=sidecar,
        format="pickled",
        sha256=sha256_file(target),
        size=target.stat().st_size,
        seconds=time.monotonic() - started,
        metadata=metadata,
    )


def _write(weights: Path, pickled: Path, metadata: dict[str, Any], source: Path, target: Path) -> dict[str, Any]:
    """Build the model from ``weights``, pickle it to ``pickled`` and append the metadata as anemoi-utils does."""
    import zipfile

    import torch

    from anemoi_ckpt_nb.conversion.loader import load_model
    from anemoi_ckpt_nb.errors import ModelLoadError
    from anemoi_ckpt_nb.read.embedded import write_embedded

    try:
        model = load_model(weights)
    except ModelLoadError as error:
        raise ConvertError(source, target, f"its model cannot be built for pickling: {error}", hint=error.hint) from error
    arrays = model.supporting_arrays
    # As anemoi-training's callback: these travel in anemoi.json, not in the pickle.
    model.config = model.metadata = model.supporting_arrays = None
    _clear_imputer_state(model)
    torch.save(model, pickled)
    with zipfile.ZipFile(pickled, "a") as archive:
        return write_embedded(archive, pickled.stem, metadata, arrays)


def _clear_imputer_state(model: Any) -> None:
    """anemoi-training's ``clear_imputer_runtime_state``: imputers keep per-batch masks that are not pickled."""
    try:
        from anemoi.models.preprocessing.imputer import BaseImputer
    except ImportError:  # an anemoi-models without imputers
        return
    for module in model.modules():
        if isinstance(module, BaseImputer):
            module.nan_locations = None
            module.loss_mask_training = None


def _verify(weights: Path, pickled: Path, metadata: dict[str, Any], source: Path, target: Path) -> None:
    """Read the pickled file back with the safe reader: every weight equal, the metadata as written."""
    import torch

    from anemoi_ckpt_nb.read.reader import open_checkpoint

    def fail(reason: str) -> ConvertError:
        return ConvertError(source, target, f"verification failed: {reason}", hint="report this: the pickled file is not what was built")

    with open_checkpoint(weights) as expected, open_checkpoint(pickled) as got:
        if got.metadata != metadata:
            raise fail("the metadata read back differs from the metadata written")
        names = set(got.weights)
        missing = sorted(set(expected.weights) - names)
        if missing:
            raise fail(f"{len(missing)} weights missing from the pickled model, first {missing[:3]}")
        for name in expected.weights:
            if not torch.equal(expected.tensor(name), got.tensor(name)):
                raise fail(f"weight {name} differs")
