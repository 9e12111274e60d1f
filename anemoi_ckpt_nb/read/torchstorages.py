"""Where the tensors of a ``torch.save`` file get their bytes: slices of one memory map, or bytes described without torch.

Each storage a pickle refers to is checked to lie inside the file before it is mapped
(or, read without torch, recorded as a span of the file); sparse tensors rebuilt from
them are checked before anyone may use them.
"""

from __future__ import annotations

import os
from pathlib import Path

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import CorruptCheckpointError
from anemoi_ckpt_nb.read.placeholders import StorageMarker
from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch, StorageRecord


class Described:
    """Records the storages of one file without torch: where each one's bytes lie, checked to be in the file."""

    def __init__(self, source: str, path: Path, *, swap: bool, fd: int) -> None:
        self.source = source
        self.records: dict[str, StorageRecord] = {}
        self.by_ptr: dict[int, str] = {}
        self.size = os.fstat(fd).st_size
        self.swap = swap
        # The file as opened, even if it is replaced on disk meanwhile (open while the archive is).
        self.read = lambda offset, nbytes: os.pread(fd, nbytes, offset)

    def typed(self, key: str, dtype: Any, nbytes: int, offset: int, location: str, *, crc32: int | None = None) -> Any:
        record = self.records.get(key)
        if record is not None:
            return record
        if offset < 0 or offset + nbytes > self.size:
            raise CorruptCheckpointError(
                self.source,
                f"storage {key} needs bytes {offset}..{offset + nbytes} but the file has {self.size}: it is truncated",
            )
        record = self.records[key] = StorageRecord(
            key, dtype, nbytes, offset, location, swapped=self.swap, crc32=crc32, read=self.read
        )
        return record

    def from_bytes(self, key: str, dtype: Any, data: bytes, location: str) -> Any:
        record = self.records[key] = StorageRecord(key, dtype, len(data), None, location, swapped=self.swap, data=data)
        return record

    def pending(self, key: str, dtype: Any, nbytes: int, location: str) -> StorageRecord:
        """A storage whose place in the file is not known yet (a legacy file's: :meth:`place` it)."""
        return StorageRecord(key, dtype, nbytes, None, location, swapped=self.swap, read=self.read)

    def place(self, record: StorageRecord, offset: int) -> None:
        """Put a :meth:`pending` storage at ``offset``, checked to lie inside the file."""
        if offset < 0 or offset + record.nbytes > self.size:
            raise CorruptCheckpointError(
                self.source,
                f"storage {record.key} needs bytes {offset}..{offset + record.nbytes} but the file has {self.size}: it is truncated",
            )
        record.offset = offset
        self.records[record.key] = record


def nested_needs_torch(data: Any) -> Any:
    raise NeedsTorch("a torch file pickled inside the pickle")


class Storages:
    """Makes the storages of one file: slices of one private memory map, or copies of in-memory bytes."""

    def __init__(self, source: str, *, path: Path | None = None, data: bytes | None = None, swap: bool = False) -> None:
        import torch

        self.source = source
        self.records: dict[str, StorageRecord] = {}
        self.by_ptr: dict[int, str] = {}
        self._typed: dict[str, Any] = {}
        self._swap = swap
        if path is not None:
            self.size = os.path.getsize(path)
            self._all = torch.UntypedStorage.from_file(os.fspath(path), False, self.size) if self.size else None
        else:
            assert data is not None
            self.size = len(data)
            self._all = torch.frombuffer(bytearray(data), dtype=torch.uint8).untyped_storage() if data else None

    def typed(self, key: str, dtype: Any, nbytes: int, offset: int, location: str, *, crc32: int | None = None) -> Any:
        """The ``TypedStorage`` for ``key``, ``nbytes`` long at ``offset`` of the file (zip entry CRC ``crc32``)."""
        import torch

        if key in self._typed:
            return self._typed[key]
        if offset < 0 or offset + nbytes > self.size:
            raise CorruptCheckpointError(
                self.source,
                f"storage {key} needs bytes {offset}..{offset + nbytes} but the file has {self.size}: it is truncated",
            )
        if nbytes and self._all is not None:
            untyped = self._all[offset : offset + nbytes]
            if self._swap:
                untyped = untyped.clone()  # a private copy: byte-swapping a big-endian file in place
                untyped.byteswap(dtype)
        else:
            untyped = torch.UntypedStorage(0)
        typed = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        self._typed[key] = typed
        self.records[key] = StorageRecord(key, dtype, nbytes, offset, location, swapped=self._swap, crc32=crc32)
        if nbytes:
            self.by_ptr[untyped.data_ptr()] = key
        return typed

    def from_bytes(self, key: str, dtype: Any, data: bytes, location: str) -> Any:
        """A storage held in memory (compressed zip entries)."""
        import torch

        untyped = torch.frombuffer(bytearray(data), dtype=torch.uint8).untyped_storage() if data else torch.UntypedStorage(0)
        typed = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        self._typed[key] = typed
        self.records[key] = StorageRecord(key, dtype, len(data), None, location)
        if data:
            self.by_ptr[untyped.data_ptr()] = key
        return typed


def storage_id(pid: Any, source: str) -> tuple[StorageMarker, str, str, int, Any]:
    """Check a persistent id ``('storage', type, key, location, numel[, view])``."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6):
        raise CorruptCheckpointError(source, f"unexpected persistent id {type(pid).__name__} in the pickle")
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
        raise CorruptCheckpointError(source, f"unexpected persistent id {typename!r} in the pickle")
    marker, key, location, numel = pid[1:5]
    if isinstance(location, bytes):
        location = location.decode("ascii")
    if not isinstance(marker, StorageMarker) or not isinstance(numel, int) or numel < 0 or not isinstance(location, str):
        raise CorruptCheckpointError(source, "malformed storage reference in the pickle")
    return marker, str(key), location, numel, pid[5] if len(pid) == 6 else None




def forget_sparse() -> None:
    import torch

    torch._utils._sparse_tensors_to_validate.clear()


def validate_sparse(path: Path | str) -> None:
    """Check the sparse tensors just rebuilt: indices in range, compressed indices ordered.

    torch's own check does nothing unless invariant checking is switched on (it is
    off by default, for speed); an index out of range would make ``to_dense()``
    write outside the tensor's memory, so it is switched on here.

    Raises:
        CorruptCheckpointError: a sparse tensor's indices do not fit its shape.
    """
    import torch

    if not torch._utils._sparse_tensors_to_validate:
        return
    try:
        with torch.sparse.check_sparse_tensor_invariants(enable=True):
            torch._utils._validate_loaded_sparse_tensors()
    except (RuntimeError, ValueError, IndexError, NotImplementedError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorruptCheckpointError(path, f"a sparse tensor is inconsistent: {first[:200]}") from None
    finally:
        torch._utils._sparse_tensors_to_validate.clear()
