"""The plan of a conversion: the output's name and format, the map of tensor names, the metadata written beside the weights, and how failures are told.

Nothing here reads or writes a checkpoint: :mod:`.write` runs the plan, :mod:`.convert` and :mod:`.batch` are the entry points.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import CheckpointReadError, CkptError, ConvertError

FORMATS = ("anemoi", "safetensors", "pickled")


SUFFIXES = {"anemoi": ".ckpt", "safetensors": ".safetensors", "pickled": ".ckpt"}


#: Prefix anemoi-training gives inference checkpoints (``_get_inference_checkpoint_filepath``).
OUTPUT_PREFIX = "inference-"


LIGHTNING_PREFIX = "model."


TOOL = "anemoi-ckpt-nb"


OVERWRITE_HINT = "pass --overwrite to replace it"
OVERWRITE_PYTHON_HINT = "pass overwrite=True to replace it"


Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)``: bytes of tensors copied so far, and in all."""


@dataclass(frozen=True)
class ConvertResult:
    """What one conversion wrote."""

    source: Path
    destination: Path
    sidecar: Path
    format: str
    #: The fresh uuid of the inference checkpoint.
    uuid: str
    source_uuid: str | None
    source_sha256: str
    #: sha256 and size of the file at ``destination``.
    sha256: str
    size: int
    tensors: int
    weights_bytes: int
    #: Names of the source's state dict that are not model weights and were left out.
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The metadata written into the archive and the sidecar.
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (without the metadata, which is in the sidecar)."""
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "sidecar": str(self.sidecar),
            "format": self.format,
            "uuid": self.uuid,
            "source_uuid": self.source_uuid,
            "source_sha256": self.source_sha256,
            "sha256": self.sha256,
            "size": self.size,
            "tensors": self.tensors,
            "weights_bytes": self.weights_bytes,
            "dropped": list(self.dropped),
            "seconds": round(self.seconds, 3),
        }


def default_name(source: str | Path, format: str = "anemoi") -> str:
    """``inference-<stem>.ckpt`` or ``inference-<stem>.safetensors``, as anemoi-training names them."""
    return f"{OUTPUT_PREFIX}{Path(source).stem}{SUFFIXES[format]}"


def sidecar_path(destination: str | Path) -> Path:
    """The JSON sidecar of an output file: ``<file name>.json``."""
    destination = Path(destination)
    return destination.with_name(destination.name + ".json")


def map_name(name: str, kind: str = "training") -> str | None:
    """The inference name of a state dict entry, or ``None`` when it is not a model weight.

    ``model.<rest>`` -> ``<rest>`` for a training checkpoint (anemoi-training
    pickles the Lightning module's ``model`` attribute); other names are dropped.
    An inference checkpoint's names are kept.
    """
    if kind != "training":
        return name
    if name.startswith(LIGHTNING_PREFIX) and len(name) > len(LIGHTNING_PREFIX):
        return name[len(LIGHTNING_PREFIX) :]
    return None


def refuse_to_replace(source: Path, target: Path, sidecar: Path, *, overwrite: bool) -> None:
    """Refuse to write over the source, or over an existing output without ``overwrite``."""
    if source.resolve() == target.resolve():
        raise ConvertError(source, target, "the destination is the source", hint="choose another destination")
    if not overwrite:
        for path, what in ((target, "the destination"), (sidecar, f"its sidecar {sidecar.name}")):
            if path.exists():
                raise ConvertError(source, target, f"{what} already exists", hint=OVERWRITE_HINT).with_python_hint(
                    OVERWRITE_PYTHON_HINT
                )


def _check_format(format: str, source: object, destination: object) -> None:
    if format not in FORMATS:
        raise ConvertError(
            source, destination, f"unknown format {format!r}", hint=f"use one of: {', '.join(FORMATS)}"
        )


def _destination(source: Path, destination: str | Path, format: str) -> Path:
    _check_format(format, source, destination)
    target = Path(destination)
    # "out/", or "out" with no suffix, is a folder (created, as `convert -o out` does); "out.ckpt" a file.
    from anemoi_ckpt_nb.storage.disk import names_a_folder  # not for load_model, which needs map_name only

    if names_a_folder(destination) or not target.suffix:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _os_error(source, target, error) from error
        return target / default_name(source, format)
    if not target.parent.is_dir():
        raise ConvertError(
            source, target, f"the folder {target.parent} does not exist", hint=f"create it: mkdir -p {target.parent}"
        )
    if format != "safetensors" and target.suffix == ".safetensors":
        raise ConvertError(source, target, f"a .safetensors name for the {format} format", hint="add --format safetensors")
    if format == "safetensors" and target.suffix != ".safetensors":
        raise ConvertError(source, target, "the safetensors format needs a .safetensors name", hint="rename the destination")
    return target


def _plan(checkpoint: Any, source: Path, target: Path) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """``(output name, source name, TensorInfo)`` of the weights to write, in file order, and the names left out.

    Raises:
        ConvertError: the source is not a training or inference checkpoint, or holds no weights.
    """
    kind = checkpoint.kind
    if kind not in ("training", "inference"):
        raise ConvertError(
            source,
            target,
            f"is a {kind} file, not a training checkpoint",
            hint="it has no Lightning state_dict to convert; inspect it with: anemoi-ckpt inspect " + str(source),
        )
    planned: list[tuple[str, str, Any]] = []
    dropped: list[str] = []
    for name, info in checkpoint.weights.items():
        mapped = map_name(name, kind)
        if mapped is None:
            dropped.append(name)
            continue
        if getattr(info, "layout", "strided") != "strided":
            raise ConvertError(
                source,
                target,
                f"the weight {name} is a {info.layout} tensor; inference checkpoints hold dense tensors only",
                hint="make it dense in the model (tensor.to_dense()) before saving, or keep it out of the state_dict",
            )
        _check_not_broadcast(checkpoint, name, info, source, target)
        planned.append((mapped, name, info))
    if not planned:
        raise ConvertError(
            source,
            target,
            "holds no model weights (no state_dict entry under 'model.')",
            hint="inspect it with: anemoi-ckpt inspect " + str(source),
        )
    return planned, dropped


#: The most bytes a weight whose elements overlap in the file (an expanded, stride-0 view)
#: may be written out as: its dense copy is made in memory, and a file that claims a huge
#: shape over a few stored bytes would otherwise exhaust it.
MAX_BROADCAST_BYTES = 64 * 1024 * 1024


def _check_not_broadcast(checkpoint: Any, name: str, info: Any, source: Path, target: Path) -> None:
    """Refuse a weight that would grow far beyond the bytes the file holds for it.

    Raises:
        ConvertError: a view whose dense size exceeds its storage and :data:`MAX_BROADCAST_BYTES`.
    """
    if info.nbytes <= MAX_BROADCAST_BYTES or checkpoint.tensor_span(name) is not None:
        return  # small, or a plain run of the file's bytes
    stored = checkpoint.storage_nbytes(name)
    if info.nbytes > stored:
        from anemoi_ckpt_nb.read.summary import format_bytes

        raise ConvertError(
            source,
            target,
            f"the weight {name} is a view of {format_bytes(stored)} stored that would be written out as "
            f"{format_bytes(info.nbytes)} (its elements overlap: an expanded tensor)",
            hint="save it as a contiguous tensor (tensor.contiguous()) in the model, or leave it out of the state_dict",
        )


class _Failure(Exception):
    """A failure explained in words; becomes a ConvertError naming source and destination."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _base_metadata(checkpoint: Any) -> dict[str, Any]:
    """The source's metadata as plain JSON data (a deep copy), without its array paths."""
    metadata = checkpoint.metadata or {}
    try:
        plain = json.loads(json.dumps(metadata, default=_json_default))
    except (TypeError, ValueError) as error:
        raise _Failure(f"the metadata cannot be written as JSON: {error}") from error
    plain.pop("supporting_arrays_paths", None)
    return plain


def _json_default(value: Any) -> Any:
    # numpy scalars slip into metadata dicts; arrays do not belong there (they are supporting arrays).
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _enrich(
    base: dict[str, Any], checkpoint: Any, source: Path, new_uuid: str, sha256: str, format: str
) -> dict[str, Any]:
    from anemoi_ckpt_nb._version import __version__

    metadata = dict(base)
    metadata["uuid"] = new_uuid
    metadata["converted_from"] = {
        "uuid": checkpoint.uuid or base.get("uuid"),
        "sha256": sha256,
        "path": str(source.resolve()),
    }
    metadata["conversion"] = {
        "tool": TOOL,
        "version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "format": format,
    }
    return metadata


def _os_error(source: object, target: Path, error: OSError) -> ConvertError:
    folder = target.parent if target.suffix else target
    if error.errno == errno.EEXIST:
        return ConvertError(source, target, f"{error.filename or target} appeared meanwhile", hint=OVERWRITE_HINT).with_python_hint(
            OVERWRITE_PYTHON_HINT
        )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ConvertError(
            source, target, f"no space left in {folder}", hint="free some space there, or convert into another folder with -o"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConvertError(
            source, target, f"permission denied: {error.filename or folder}", hint="choose a folder you can write to with -o"
        )
    if error.errno == errno.EFBIG:
        return ConvertError(
            source, target, "file too large for this file system or process limit", hint="check `ulimit -f`, or use another folder"
        )
    return ConvertError(source, target, f"{error.strerror or error}: {error.filename or target}")


def _as_convert_error(source: object, target: object, error: BaseException) -> Exception:
    if isinstance(error, ConvertError):
        return error
    if isinstance(error, CheckpointReadError):
        message = error.message.removeprefix(f"{error.path}: ")  # the source is named already
        return ConvertError(
            source, target, f"cannot read the source: {message}", hint=error.hint or f"check it with: anemoi-ckpt inspect {source}"
        )
    if isinstance(error, CkptError):
        return ConvertError(source, target, error.message, hint=error.hint).with_python_hint(error.python_hint)
    if isinstance(error, OSError):
        return _os_error(source, Path(str(target)), error)
    if isinstance(error, Exception):
        return error
    raise error
