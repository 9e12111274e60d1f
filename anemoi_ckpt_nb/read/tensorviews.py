"""The tensors of an open torch file, as :func:`.reader._build` needs them, read with torch or without.

:class:`DescribedTensors`: a file read without torch, its tensors :class:`~.tensorrefs.TensorRef`
descriptions; ``ck.tensor(name)`` imports torch and maps the file (:class:`Materialiser`).
:class:`TorchTensors`: a file read with torch (sparse or quantized tensors, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import CorruptCheckpointError
from anemoi_ckpt_nb.read.checkpoint import CheckpointFile, TensorInfo


class DescribedTensors:
    """What :func:`_build` needs of the tensors of a file read without torch (:mod:`.tensorrefs`)."""

    def __init__(self, loaded: Any) -> None:
        from anemoi_ckpt_nb.read.tensorrefs import is_tensor_ref

        self.loaded = loaded
        self.is_tensor = is_tensor_ref

    def attach(self, ck: CheckpointFile, tensors: dict[str, Any]) -> None:
        from anemoi_ckpt_nb.read.torchfile import load_torch_file

        loaded = self.loaded
        ck._raw_with_torch = lambda: load_torch_file(loaded.path, max_pickle_bytes=loaded.max_pickle_bytes)
        ck._read = lambda offset, nbytes: os.pread(loaded.fileno(), nbytes, offset)
        ck._span = lambda name: tensors[name].span()
        ck._crc = lambda name: tensors[name].crc32()
        ck._make_tensor = Materialiser(self.loaded, ck, tensors)
        ck._refs = tensors

    def parts(self, tensor: Any, name: str) -> list[Any]:
        return [tensor]

    def info(self, name: str, tensor: Any, parts: list[Any]) -> TensorInfo:
        return TensorInfo(name, tensor.shape, tensor.dtype.name, tensor.nbytes)

    def storage_key(self, tensor: Any) -> Any:
        return tensor.storage.key

    def storage_bytes(self, key: Any) -> int:
        return self.loaded.storages[key].nbytes

    def place(self, tensor: Any) -> tuple:
        return (tensor.storage.key, tensor.storage_offset, tensor.shape, tensor.stride)

    def numel(self, tensor: Any) -> int:
        return tensor.numel


class Materialiser:
    """``ck.tensor(name)`` of a file read without torch: torch is imported here, on the first call.

    The file is mapped once, privately, through the descriptor opened with it (so a file
    replaced on disk since is not what gets mapped), and each tensor views its slice.
    """

    def __init__(self, loaded: Any, ck: CheckpointFile, tensors: dict[str, Any]) -> None:
        self._loaded = loaded
        self._size = ck.total_bytes
        self._tensors = tensors
        self._whole: Any = None
        self._storages: dict[str, Any] = {}

    def __call__(self, name: str) -> Any:
        from anemoi_ckpt_nb.read.tensorrefs import materialise

        ref = self._tensors[name]
        return materialise(ref, self._untyped(ref.storage))

    def _untyped(self, record: Any) -> Any:
        import torch

        found = self._storages.get(record.key)
        if found is not None:
            return found
        if record.data is not None:
            untyped = torch.frombuffer(bytearray(record.data), dtype=torch.uint8).untyped_storage() if record.data else None
        elif record.nbytes:
            if self._whole is None:
                self._whole = torch.UntypedStorage.from_file(self._mapped_path(), False, self._size)
            untyped = self._whole[record.offset : record.offset + record.nbytes]
        else:
            untyped = None
        if untyped is None:
            untyped = torch.UntypedStorage(0)
        elif record.swapped:
            untyped = untyped.clone()  # a private copy: byte-swapping a file of the other byte order
            untyped.byteswap(getattr(torch, record.dtype.name))
        self._storages[record.key] = untyped
        return untyped

    def _mapped_path(self) -> str:
        proc = f"/proc/self/fd/{self._loaded.fileno()}"
        return proc if os.path.exists(proc) else str(self._loaded.path)


class TorchTensors:
    """What :func:`_build` needs of the tensors of a file read with torch."""

    def __init__(self, loaded: Any) -> None:
        import torch

        self.loaded = loaded
        self.is_tensor = lambda obj: isinstance(obj, torch.Tensor)

    def attach(self, ck: CheckpointFile, tensors: dict[str, Any]) -> None:
        ck._tensors = tensors
        ck._span = lambda name: _torch_span(tensors[name], self.loaded)
        ck._crc = lambda name: _torch_crc32(tensors[name], self.loaded)

    def parts(self, tensor: Any, name: str) -> list[Any]:
        return _dense_parts(tensor, self.loaded.path, name)

    def info(self, name: str, tensor: Any, parts: list[Any]) -> TensorInfo:
        return _info(name, tensor, parts)

    def storage_key(self, tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        key = self.loaded.storage_by_ptr.get(ptr)
        return key if key is not None else ("memory", ptr, storage.nbytes())

    def storage_bytes(self, key: Any) -> int:
        if isinstance(key, tuple):
            return key[2]
        return self.loaded.storages[key].nbytes

    def place(self, tensor: Any) -> tuple:
        return (self.storage_key(tensor), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))

    def numel(self, tensor: Any) -> int:
        return tensor.numel()


def _torch_span(tensor: Any, loaded: Any) -> tuple[int, int] | None:
    """``(offset, nbytes)`` of a tensor's bytes in a torch file (see :meth:`CheckpointFile.tensor_span`)."""
    import torch

    if tensor.layout is not torch.strided or not tensor.is_contiguous():
        return None
    storage = tensor.untyped_storage()
    key = loaded.storage_by_ptr.get(storage.data_ptr())
    record = loaded.storages.get(key) if key is not None else None
    if record is None or record.offset is None or record.swapped:
        return None
    start = tensor.storage_offset() * tensor.element_size()
    nbytes = tensor.numel() * tensor.element_size()
    if start < 0 or start + nbytes > record.nbytes:
        return None
    return record.offset + start, nbytes


def _torch_crc32(tensor: Any, loaded: Any) -> int | None:
    """The zip CRC-32 of the entry holding exactly ``tensor``'s bytes (see :meth:`CheckpointFile.tensor_crc32`)."""
    span = _torch_span(tensor, loaded)
    if span is None:
        return None
    record = loaded.storages.get(loaded.storage_by_ptr.get(tensor.untyped_storage().data_ptr()))
    if record is None or record.crc32 is None or span != (record.offset, record.nbytes):
        return None
    return record.crc32


def _info(name: str, tensor: Any, parts: list[Any]) -> TensorInfo:
    from anemoi_ckpt_nb.read.classmap import dtype_name

    shape = tuple(int(n) for n in tensor.shape)
    nbytes = sum(part.numel() * part.element_size() for part in parts)
    layout = str(tensor.layout).removeprefix("torch.")
    return TensorInfo(name, shape, dtype_name(tensor.dtype), nbytes, layout)


def _dense_parts(tensor: Any, path: Path, name: str) -> list[Any]:
    """The dense tensors that hold a tensor's bytes: itself, or a sparse tensor's indices and values (last).

    Raises:
        CorruptCheckpointError: a layout whose bytes cannot be told (none that torch.save writes today).
    """
    import torch

    layout = tensor.layout
    if layout is torch.strided:
        return [tensor]
    if layout is torch.sparse_coo:
        return [tensor._indices(), tensor._values()]
    if layout in (torch.sparse_csr, torch.sparse_bsr):
        return [tensor.crow_indices(), tensor.col_indices(), tensor.values()]
    if layout in (torch.sparse_csc, torch.sparse_bsc):
        return [tensor.ccol_indices(), tensor.row_indices(), tensor.values()]
    raise CorruptCheckpointError(path, f"{name}: a tensor of layout {layout} that this reader cannot size")
