"""Reading a written file back, without torch, and comparing it with what was written: names, dtypes, shapes, bytes, metadata.

:func:`verify_torch_zip` checks what :class:`~.writers.TorchZipWriter` wrote, :func:`verify_safetensors`
what :class:`~.writers.SafetensorsWriter` wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from anemoi_ckpt_nb.conversion.streams import TensorEntry, crc32, crc32_of, read_chunks

#: The CRC-32 of runs of a file's bytes as they read back, by ``(offset, size)`` (:meth:`.OutputFile.finish`).
ReadBack = dict[tuple[int, int], int]
#: Those CRC-32s, or a function that waits for them, called once everything else is checked.
ReadBackSource = ReadBack | Callable[[], ReadBack]

class VerificationError(ValueError):
    """A written file does not read back as what was written."""


def verify_torch_zip(
    path: str | os.PathLike,
    entries: list[TensorEntry],
    crcs: dict[str, int],
    metadata: dict[str, Any],
    *,
    inputs: Any = None,
    read_back: ReadBackSource | None = None,
) -> None:
    """Reopen an archive written by :class:`TorchZipWriter` and check it against the source.

    The archive is opened afresh by the reader, without torch: its pickle must
    rebuild, with the checks torch makes, a state dict of the expected names,
    dtypes and shapes; each tensor is found by its name through the pickle, its
    storage and the zip headers (:meth:`CheckpointFile.tensor_span`), and the
    CRC-32 of the bytes read there must equal the one computed from the source's
    bytes as they were written, as must the CRC recorded in the zip's central
    directory; the embedded metadata must equal ``metadata`` (zipfile checks the
    supporting arrays' CRCs as it reads them). That ``torch.load(weights_only=True,
    mmap=True)`` reads the layout bit for bit is proven by the tests, not here.

    Args:
        read_back: the CRC-32 of each tensor's bytes as the file held them when they were
            read back after being written (:class:`~.output.OutputFile`), by ``(offset,
            size)``: then each tensor must lie exactly at one of these runs, and its bytes
            are not read again. Without it, they are read here. A function giving them is
            called once the rest (the archive's structure, metadata, model inputs) is checked,
            so that these checks run while the file is still being read back and hashed.

    Raises:
        VerificationError: anything differs, or the file does not open.
        OSError: the file cannot be read.
    """
    import zipfile

    from anemoi_ckpt_nb.read.reader import open_checkpoint

    try:
        with zipfile.ZipFile(path) as zf:
            top = zf.namelist()[0].split("/", 1)[0]
            for key, entry in enumerate(entries):
                info = zf.getinfo(f"{top}/data/{key}")
                if info.CRC != crcs[entry.name] or info.file_size != entry.nbytes:
                    raise VerificationError(f"tensor {entry.name} is recorded with another size or CRC than read")
        with open_checkpoint(path) as checkpoint:
            if checkpoint.kind != "state-dict":
                raise VerificationError(f"the archive reads back as a {checkpoint.kind} file, not a state dict")
            if checkpoint.metadata != _as_json(metadata):
                raise VerificationError("the embedded metadata differs from what was written")
            _check_inputs(checkpoint, inputs)
            _check_bytes(path, checkpoint, entries, crcs, read_back)
            described = {name: (info.dtype, tuple(info.shape)) for name, info in checkpoint.weights.items()}
    except (VerificationError, OSError):
        raise
    except Exception as error:  # the file does not open as it must
        raise VerificationError(f"{type(error).__name__}: {error}") from error
    _compare(described, entries)


def verify_safetensors(
    path: str | os.PathLike,
    entries: list[TensorEntry],
    crcs: dict[str, int],
    metadata: dict[str, str],
    *,
    inputs: Any = None,
    read_back: ReadBackSource | None = None,
) -> None:
    """Reopen a file written by :class:`SafetensorsWriter` and check it against the source.

    The reader reopens the file, without torch, and checks its header as
    ``safetensors`` does; each tensor's bytes are read back where the header puts
    them and their CRC-32 compared with the one computed from the source's bytes
    (supporting arrays under :data:`~anemoi_ckpt_nb.read.embedded.SAFETENSORS_ARRAY_PREFIX`
    through the arrays the reader rebuilt); the header must give the expected
    names, dtypes, shapes and metadata. ``read_back``: as for :func:`verify_torch_zip`.

    Raises:
        VerificationError: anything differs, or the file does not open.
        OSError: the file cannot be read.
    """
    from anemoi_ckpt_nb.read.embedded import safetensors_array_keys
    from anemoi_ckpt_nb.read.model_inputs import PREFIX as MODEL_PREFIX
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    try:
        with open_checkpoint(path) as checkpoint:
            if checkpoint.safetensors_metadata != metadata:
                raise VerificationError("the header metadata differs from what was written")
            weights = [
                entry
                for entry in entries
                if safetensors_array_keys(entry.name) is None and not entry.name.startswith(MODEL_PREFIX)
            ]
            _check_inputs(checkpoint, inputs)
            _check_bytes(path, checkpoint, weights, crcs, read_back)
            described = {name: (info.dtype, tuple(info.shape)) for name, info in checkpoint.weights.items()}
            for entry in entries:
                if entry.name.startswith(MODEL_PREFIX):  # their values were compared by _check_inputs
                    described[entry.name] = (entry.dtype, tuple(entry.shape))
            for entry in entries:
                keys = safetensors_array_keys(entry.name)
                if keys is None:
                    continue
                array = _array_at(checkpoint.supporting_arrays, keys)
                if array is None or _array_crc(array) != crcs[entry.name]:
                    raise VerificationError(f"supporting array {entry.name} reads back with other bytes than were written")
                described[entry.name] = (array.dtype.name, tuple(array.shape))
    except (VerificationError, OSError):
        raise
    except Exception as error:  # the file does not open as it must
        raise VerificationError(f"{type(error).__name__}: {error}") from error
    _compare(described, entries)


def _check_bytes(
    path: str | os.PathLike, checkpoint: Any, entries: list[TensorEntry], crcs: dict[str, int],
    read_back: ReadBackSource | None,
) -> None:
    """Find each tensor where the reopened file says it is; compare the CRC-32 of its bytes there with the written one."""
    if callable(read_back):
        read_back = read_back()
    if set(checkpoint.weights) != {entry.name for entry in entries}:
        raise VerificationError(f"{len(checkpoint.weights)} tensors read back instead of {len(entries)}")
    with open(path, "rb") as file:
        for entry in entries:
            info = checkpoint.weights[entry.name]
            if (info.dtype, tuple(info.shape)) != (entry.dtype, tuple(entry.shape)):
                raise VerificationError(f"tensor {entry.name} reads back as {info.dtype} {tuple(info.shape)}")
            if entry.nbytes == 0:
                continue
            span = checkpoint.tensor_span(entry.name)
            if span is None or span[1] != entry.nbytes:
                raise VerificationError(f"tensor {entry.name} is not stored as the {entry.nbytes} bytes written")
            if read_back is not None:
                crc = read_back.get(span)
                if crc is None:
                    raise VerificationError(f"tensor {entry.name} is not stored where its bytes were written")
            else:
                crc = crc32_of(read_chunks(file.fileno(), *span))
            if crc != crcs[entry.name]:
                raise VerificationError(f"tensor {entry.name} reads back with other bytes than were written")


def _check_inputs(checkpoint: Any, inputs: Any) -> None:
    """The model inputs (graph, statistics) read back must be those written."""
    import numpy as np

    if inputs is None:
        return
    back = checkpoint.model_inputs()
    if back is None or back.spec != inputs.spec or set(back.arrays) != set(inputs.arrays):
        raise VerificationError("the graph and statistics read back differ from those written")
    for name, array in inputs.arrays.items():
        if not np.array_equal(back.arrays[name], array):
            raise VerificationError(f"the model input {name} reads back with other values than were written")


def _array_at(arrays: dict[str, Any], keys: list[str]) -> Any:
    node: Any = arrays
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _array_crc(array: Any) -> int:
    import numpy as np

    return crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _compare(described: dict[str, tuple[str, tuple[int, ...]]], entries: list[TensorEntry]) -> None:
    for entry in entries:
        if described.get(entry.name) != (entry.dtype, tuple(entry.shape)):
            raise VerificationError(f"tensor {entry.name} reads back as {described.get(entry.name)}")
    if len(described) != len(entries):
        raise VerificationError(f"{len(described)} tensors read back instead of {len(entries)}")


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))
