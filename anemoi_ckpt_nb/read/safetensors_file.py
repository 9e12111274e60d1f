"""Opening a ``.safetensors`` file: its header read within a bound, its dtypes mapped, no pickle anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import (
    CheckpointReadError,
    CorruptCheckpointError,
    NotACheckpointError,
)
from anemoi_ckpt_nb.read.checkpoint import CheckpointFile, TensorInfo, _fill_identity

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
    import struct

    import torch
    from safetensors import safe_open

    from anemoi_ckpt_nb.read.embedded import (
        SAFETENSORS_METADATA_KEY,
        safetensors_array_keys,
    )

    try:
        with safe_open(str(path), framework="pt") as handle:  # validates header, offsets and file length
            header_metadata = handle.metadata() or {}
    except Exception as error:  # SafetensorError is not importable under a stable name
        raise CorruptCheckpointError(path, f"damaged safetensors file ({error})") from None
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_SAFETENSORS_HEADER:
            raise CheckpointReadError(path, f"safetensors header of {header_len} bytes is over the limit")
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    entries = sorted(
        ((name, e) for name, e in header.items() if name != "__metadata__"), key=lambda item: item[1]["data_offsets"][0]
    )

    ck = CheckpointFile(path, "safetensors", "safetensors")
    ck.total_bytes = size
    mapped = torch.UntypedStorage.from_file(str(path), False, size)
    layout: dict[str, tuple[Any, tuple[int, ...], int, int]] = {}
    arrays: dict[str, list[str]] = {}  # tensor name -> key path, for supporting arrays
    for name, entry in entries:
        dtype_str = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
        if dtype_str is None:
            raise NotACheckpointError(path, f"tensor {name} has dtype {entry.get('dtype')}, which is not supported")
        dtype = getattr(torch, dtype_str)
        shape = tuple(int(n) for n in entry["shape"])
        start, end = (int(n) for n in entry["data_offsets"])
        layout[name] = (dtype, shape, base + start, base + end)
        keys = safetensors_array_keys(name)
        if keys is not None:
            arrays[name] = keys
            continue
        ck.weights[name] = TensorInfo(name, shape, dtype_str, end - start)
        ck.weights_bytes += end - start
        ck.parameter_count += TensorInfo(name, shape, dtype_str, 0).numel

    def make(name: str) -> Any:
        dtype, shape, start, end = layout[name]
        element = torch.empty((), dtype=dtype).element_size()
        if start % element:
            with safe_open(str(path), framework="pt") as handle:  # unaligned: a copy, not a view
                return handle.get_tensor(name)
        stride = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            stride[i] = stride[i + 1] * shape[i + 1]
        storage = torch.storage.TypedStorage(wrap_storage=mapped[start:end], dtype=dtype, _internal=True)
        return torch.empty((0,), dtype=dtype).set_(storage._untyped_storage, 0, shape, stride)

    ck._make_tensor = make
    ck._span = lambda name: (layout[name][2], layout[name][3] - layout[name][2])
    ck.other_bytes = size - ck.weights_bytes
    raw_metadata = header_metadata.get(SAFETENSORS_METADATA_KEY)
    if raw_metadata is not None:
        try:
            metadata = json.loads(raw_metadata)
        except ValueError as error:
            raise CorruptCheckpointError(path, f"the '{SAFETENSORS_METADATA_KEY}' metadata is not JSON ({error})") from None
        if isinstance(metadata, dict):
            ck.metadata, ck.metadata_source = metadata, "safetensors"
    for name, keys in arrays.items():
        node = ck.supporting_arrays
        for part in keys[:-1]:
            node = node.setdefault(part, {})
        node[keys[-1]] = make(name).numpy().copy()
    _fill_identity(ck)
    return ck
