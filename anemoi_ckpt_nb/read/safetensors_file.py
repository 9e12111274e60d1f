"""Opening a ``.safetensors`` file: its header read within a bound and checked, its dtypes mapped, no pickle
anywhere, and no torch until a tensor is asked for."""

from __future__ import annotations

import json
import os
from pathlib import Path

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import (
    CheckpointReadError,
    CorruptCheckpointError,
    NotACheckpointError,
)
from anemoi_ckpt_nb.read.checkpoint import CheckpointFile, TensorInfo
from anemoi_ckpt_nb.read.identity import fill_identity

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
}


#: A safetensors header larger than this is refused (real ones are a few MB).
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def _open_safetensors(path: Path, size: int) -> CheckpointFile:
    """Read a ``.safetensors`` file's header and lay its tensors out, without torch.

    The header is checked as ``safetensors`` checks it: a JSON object of tensors with a
    known dtype, whose byte ranges match their shapes and cover the data exactly, back to
    back; ``__metadata__`` maps strings to strings.
    """
    from anemoi_ckpt_nb.read.embedded import SAFETENSORS_METADATA_KEY, safetensors_array_keys
    from anemoi_ckpt_nb.read.tensorrefs import DTYPE, StorageRecord, TensorRef
    from anemoi_ckpt_nb.read import model_inputs
    from anemoi_ckpt_nb.read.model_inputs import PREFIX as MODEL_PREFIX

    handle = open(path, "rb")
    try:
        fd = handle.fileno()
        header_len, header = _safetensors_header(path, fd, size)
    except BaseException:
        handle.close()
        raise
    base = 8 + header_len
    header_metadata = header.pop("__metadata__", None) or {}
    entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"])

    ck = CheckpointFile(path, "safetensors", "safetensors")
    ck.total_bytes = size
    ck._closers.append(handle.close)
    def read(offset: int, nbytes: int) -> bytes:  # the file as opened
        return os.pread(fd, nbytes, offset)

    ck._read = read
    refs: dict[str, TensorRef] = {}
    arrays: dict[str, list[str]] = {}  # tensor name -> key path, for supporting arrays
    for name, entry in entries:
        dtype_str = _SAFETENSORS_DTYPES[entry["dtype"]]
        shape = tuple(entry["shape"])
        start, end = entry["data_offsets"]
        record = StorageRecord(name, DTYPE[dtype_str], end - start, base + start, "cpu", read=read)
        stride = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            stride[i] = stride[i + 1] * shape[i + 1]
        refs[name] = TensorRef(record, 0, shape, tuple(stride), DTYPE[dtype_str])
        keys = safetensors_array_keys(name)
        if keys is not None:
            arrays[name] = keys
            continue
        if name.startswith(MODEL_PREFIX):  # the graph and statistics the model is built from
            continue
        ck.weights[name] = TensorInfo(name, shape, dtype_str, end - start)
        ck.weights_bytes += end - start
        ck.parameter_count += TensorInfo(name, shape, dtype_str, 0).numel
    ck._refs = {name: ref for name, ref in refs.items() if name in ck.weights}
    ck._make_tensor = _SafetensorsTensors(path, size, fd, refs)
    ck._span = lambda name: refs[name].span()
    ck.other_bytes = size - ck.weights_bytes
    raw_metadata = header_metadata.get(SAFETENSORS_METADATA_KEY)
    if raw_metadata is not None:
        try:
            metadata = json.loads(raw_metadata)
        except RecursionError:
            raise CorruptCheckpointError(path, f"the '{SAFETENSORS_METADATA_KEY}' metadata is nested too deeply to read") from None
        except ValueError as error:
            raise CorruptCheckpointError(path, f"the '{SAFETENSORS_METADATA_KEY}' metadata is not JSON ({error})") from None
        if isinstance(metadata, dict):
            ck.metadata, ck.metadata_source = metadata, "safetensors"
    ck.safetensors_metadata = header_metadata
    for name, keys in arrays.items():
        node = ck.supporting_arrays
        for part in keys[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict) or isinstance(node.get(keys[-1]), dict):
            # "a" and "a/b": one name is an array and a folder of arrays at once.
            raise CorruptCheckpointError(path, f"supporting array {name} clashes with another array's name")
        node[keys[-1]] = refs[name].numpy()
    spec = header_metadata.get(model_inputs.SAFETENSORS_SPEC_KEY)
    if spec is not None:

        def tensor(name: str) -> Any:
            if name not in refs:
                raise KeyError(name)
            return refs[name].numpy()

        ck._model_inputs = lambda: model_inputs.from_tensors(spec, tensor)
    fill_identity(ck)
    return ck


def _safetensors_header(path: Path, fd: int, size: int) -> tuple[int, dict[str, Any]]:
    """``(header length, header)`` of a safetensors file, checked.

    Raises:
        CheckpointReadError: a header over :data:`MAX_SAFETENSORS_HEADER`.
        CorruptCheckpointError: anything safetensors itself would refuse.
    """
    import struct

    from anemoi_ckpt_nb.read.tensorrefs import DTYPE

    def damaged(why: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(path, f"damaged safetensors file ({why})")

    head = os.pread(fd, 8, 0)
    if len(head) != 8:
        raise damaged("no header length")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > MAX_SAFETENSORS_HEADER:
        raise CheckpointReadError(path, f"safetensors header of {header_len} bytes is over the limit")
    if 8 + header_len > size:
        raise damaged(f"the header of {header_len} bytes runs past the end of the file")
    try:
        header = json.loads(os.pread(fd, header_len, 8))
    except ValueError as error:
        raise damaged(f"the header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise damaged("the header is not a JSON object")
    metadata = header.get("__metadata__")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise damaged("__metadata__ must map strings to strings")
    position = 0
    tensors = sorted(
        ((name, entry) for name, entry in header.items() if name != "__metadata__"),
        key=lambda item: _offsets_key(item[1]),
    )
    for name, entry in tensors:
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
            raise damaged(f"tensor {name} is described by {entry!r:.60}")
        if entry["dtype"] not in _SAFETENSORS_DTYPES:
            raise NotACheckpointError(path, f"tensor {name} has dtype {entry['dtype']}, which is not supported")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or any(type(n) is not int or n < 0 for n in shape):
            raise damaged(f"tensor {name} has a malformed shape")
        if not isinstance(offsets, list) or len(offsets) != 2 or any(type(n) is not int for n in offsets):
            raise damaged(f"tensor {name} has malformed data offsets")
        start, end = offsets
        numel = 1
        for n in shape:
            numel *= n
        if start != position or end - start != numel * DTYPE[_SAFETENSORS_DTYPES[entry["dtype"]]].itemsize:
            raise damaged(f"tensor {name} is not laid out where its shape and dtype say (bytes {start}..{end})")
        position = end
    if 8 + header_len + position != size:
        raise damaged(f"the tensors end at byte {8 + header_len + position}, the file at {size}")
    return header_len, header


def _offsets_key(entry: Any) -> tuple:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if isinstance(offsets, list) and all(type(n) is int for n in offsets):
        return (0, *offsets)
    return (1,)


class _SafetensorsTensors:
    """``ck.tensor(name)`` of a safetensors file: torch is imported here, on the first call."""

    def __init__(self, path: Path, size: int, fd: int, refs: dict[str, Any]) -> None:
        self._path = path
        self._size = size
        self._fd = fd
        self._refs = refs
        self._whole: Any = None

    def __call__(self, name: str) -> Any:
        import torch

        from anemoi_ckpt_nb.read.tensorrefs import materialise

        ref = self._refs[name]
        record = ref.storage
        if record.offset % ref.dtype.itemsize:  # unaligned: a copy, not a view
            data = bytearray(os.pread(self._fd, record.nbytes, record.offset))
            untyped = torch.frombuffer(data, dtype=torch.uint8).untyped_storage() if data else torch.UntypedStorage(0)
            return materialise(ref, untyped)
        if self._whole is None:
            proc = f"/proc/self/fd/{self._fd}"
            self._whole = torch.UntypedStorage.from_file(proc if os.path.exists(proc) else str(self._path), False, self._size)
        untyped = self._whole[record.offset : record.offset + record.nbytes] if record.nbytes else torch.UntypedStorage(0)
        return materialise(ref, untyped)
