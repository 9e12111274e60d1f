"""Plain and legacy ``torch.save`` pickles, and torch files pickled inside a pickle, read with the restricted unpickler.

A **legacy** file (``_use_new_zipfile_serialization=False``) is: magic number, protocol,
system info, the pickle, the list of storage keys, then each storage as
``<int64 count><raw bytes>``. Read without torch, the pickle is read once, its storages
recorded and placed once the key list is read; with torch, twice: first with storages on the
meta device to learn their dtypes (and so where each one ends), then with slices of the map.
"""

from __future__ import annotations

import io
import struct
import sys

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import CheckpointReadError, CorruptCheckpointError, NotACheckpointError
from anemoi_ckpt_nb.read.resolver import Globals
from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch, StorageRecord
from anemoi_ckpt_nb.read.torchstorages import Described, Storages, storage_id, validate_sparse
from anemoi_ckpt_nb.read.torchzip import ZIP_MAGIC, read_entry, zip_persistent_load
from anemoi_ckpt_nb.read.unpickler import DEFAULT_MAX_PICKLE_BYTES, restricted_load

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
#: How the magic number starts a legacy file: ``LONG1`` of 10 bytes, after the pickle's ``PROTO`` opcode.
_LEGACY_MAGIC_PICKLED = b"\x8a\n" + LEGACY_MAGIC_NUMBER.to_bytes(10, "little")


def is_legacy_head(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts a torch file of the legacy format (before torch 1.6).

    torch pickles the magic number first, with the protocol it is asked for (2 unless told).
    """
    return head[:1] == b"\x80" and head[2:14] == _LEGACY_MAGIC_PICKLED


def copy_budget(pickle_bytes: int) -> int:
    """Bytes a pickle of ``pickle_bytes`` may hand to calls: what it holds, twice, plus 16 MiB."""
    return 2 * pickle_bytes + 16 * 1024 * 1024

def load_legacy(f: Any, globals_: Globals, storages: Storages, max_pickle_bytes: int) -> Any:
    """The rest of a legacy file, after its magic number (``f`` positioned there), read with torch."""
    import torch

    source = globals_.source
    _legacy_header(f, globals_, max_pickle_bytes)
    start = f.tell()

    # Pass 1: storages on the meta device, to learn each one's dtype and size.
    found: dict[str, tuple[Any, int]] = {}

    def meta_load(pid: Any) -> Any:
        marker, key, location, numel, view = storage_id(pid, source)
        found.setdefault(key, (marker.dtype, numel))
        storage = torch.UntypedStorage(numel * torch._utils._element_size(marker.dtype), device="meta")
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=marker.dtype, _internal=True)

    restricted_load(Bounded(f, max_pickle_bytes, source), globals_, persistent_load=meta_load)
    sizes = {key: (numel, torch._utils._element_size(dtype)) for key, (dtype, numel) in found.items()}
    offsets = _legacy_offsets(f, globals_, sizes, storages.size, max_pickle_bytes)

    # Pass 2: the real thing, with slices of the memory map.
    views: dict[str, Any] = {}

    def real_load(pid: Any) -> Any:
        marker, key, location, numel, view = storage_id(pid, source)
        if key not in offsets:
            raise CorruptCheckpointError(source, f"legacy storage {key} has no data in the file")
        dtype, total = found[key]
        size = torch._utils._element_size(dtype)
        typed = storages.typed(key, dtype, total * size, offsets[key], location)
        if view is None:
            return typed
        view_key, view_offset, view_size = view
        if view_key not in views:
            if not (0 <= view_offset and view_offset + view_size <= total):
                raise CorruptCheckpointError(source, f"legacy storage view {view_key} is out of bounds")
            sliced = typed._untyped_storage[view_offset * size : (view_offset + view_size) * size]
            views[view_key] = torch.storage.TypedStorage(wrap_storage=sliced, dtype=dtype, _internal=True)
        return views[view_key]

    f.seek(start)
    raw = restricted_load(Bounded(f, max_pickle_bytes, source), globals_, persistent_load=real_load)
    validate_sparse(source)
    return raw


def load_legacy_described(f: Any, globals_: Globals, storages: Described, max_pickle_bytes: int) -> Any:
    """The rest of a legacy file (``f`` after its magic number) read without torch: tensors described.

    One pass: each storage the pickle names is recorded with its dtype and size (all a
    tensor's bounds are checked against), and placed in the file once the key list that
    follows the pickle says where its bytes are.

    Raises:
        NeedsTorch: a storage view (written by torch before 1.0); torch's own reading decides.
    """
    source = globals_.source
    _legacy_header(f, globals_, max_pickle_bytes)
    records: dict[str, StorageRecord] = {}
    sizes: dict[str, tuple[int, int]] = {}

    def persistent_load(pid: Any) -> Any:
        marker, key, location, numel, view = storage_id(pid, source)
        if view is not None:
            raise NeedsTorch("a view of a legacy storage")
        record = records.get(key)
        if record is None:  # as torch: a key named again is the storage first named, whatever type it says
            sizes[key] = (numel, marker.dtype.itemsize)
            record = records[key] = storages.pending(key, marker.dtype, numel * marker.dtype.itemsize, location)
        return record

    raw = restricted_load(Bounded(f, max_pickle_bytes, source), globals_, persistent_load=persistent_load)
    offsets = _legacy_offsets(f, globals_, sizes, storages.size, max_pickle_bytes)
    for key, record in records.items():
        storages.place(record, offsets[key])
    return raw


def _legacy_header(f: Any, globals_: Globals, max_pickle_bytes: int) -> None:
    """The protocol and system-information pickles after the magic number: refuse what is not ours."""
    source = globals_.source
    protocol = restricted_load(Bounded(f, max_pickle_bytes, source), globals_)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CorruptCheckpointError(source, f"unknown legacy torch protocol {protocol!r}")
    sys_info = restricted_load(Bounded(f, max_pickle_bytes, source), globals_)
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    if little != (sys.byteorder == "little"):
        raise NotACheckpointError(source, "a legacy torch file of the other byte order is not supported")


def _legacy_offsets(
    f: Any, globals_: Globals, sizes: dict[str, tuple[int, int]], file_size: int, max_pickle_bytes: int
) -> dict[str, int]:
    """Where each storage's bytes start, from the key list after the pickle (``f`` positioned there).

    Args:
        sizes: ``key -> (element count, item size)`` of every storage the pickle named.

    Raises:
        CorruptCheckpointError: a damaged key list, a storage the pickle does not name, an
            element count other than the pickle's, or storages past the end of the file.
    """
    source = globals_.source
    keys = restricted_load(Bounded(f, max_pickle_bytes, source), globals_)
    if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
        raise CorruptCheckpointError(source, "the legacy storage key list is damaged")
    offsets: dict[str, int] = {}
    position = f.tell()
    for key in map(str, keys):
        if key not in sizes:
            raise CorruptCheckpointError(source, f"legacy storage {key} is not referred to by the pickle")
        numel, itemsize = sizes[key]
        f.seek(position)
        header = f.read(8)
        if len(header) != 8:
            raise CorruptCheckpointError(source, f"legacy storage {key} is missing: the file is truncated")
        (count,) = struct.unpack("<q", header)
        if count != numel:
            raise CorruptCheckpointError(source, f"legacy storage {key} holds {count} elements, the pickle expects {numel}")
        offsets[key] = position + 8
        position += 8 + numel * itemsize
    if position > file_size:
        raise CorruptCheckpointError(source, "the legacy storages run past the end of the file: it is truncated")
    missing = sorted(set(sizes) - set(offsets))
    if missing:
        raise CorruptCheckpointError(source, f"legacy storage {missing[0]} has no data in the file")
    return offsets


class Bounded:
    """A file view that refuses to read more than ``limit`` bytes of pickle."""

    def __init__(self, f: Any, limit: int, source: str) -> None:
        self._f = f
        self._left = limit
        self._source = source

    def _count(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise CheckpointReadError(
                self._source,
                "the pickle is over the limit of bytes read into memory",
                hint="raise it with open_checkpoint(path, max_pickle_bytes=...) if you trust the file",
            )
        return data

    def read(self, n: int = -1) -> bytes:
        # Never ask for more than the limit: a buffered read allocates the size it is asked for.
        return self._count(self._f.read(min(n, self._left + 1) if n >= 0 else self._left + 1))

    def readline(self) -> bytes:
        return self._count(self._f.readline(self._left + 1))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def nested_loader(globals_: Globals, max_pickle_bytes: int):
    """``torch.storage._load_from_bytes``: a torch file inside the pickle, read in memory the same safe way."""

    def load_from_bytes(data: Any) -> Any:
        if not isinstance(data, (bytes, bytearray)):
            raise CorruptCheckpointError(globals_.source, "torch.storage._load_from_bytes needs bytes")
        data = bytes(data)
        if data[:4] == ZIP_MAGIC:
            import zipfile  # a torch file in a pickle is rare: inspect does not import zipfile (issue 16)

            zf = zipfile.ZipFile(io.BytesIO(data))
            with zf:
                pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
                if len(pickles) != 1:
                    raise CorruptCheckpointError(globals_.source, "embedded torch bytes lack data.pkl")
                top = pickles[0].split("/", 1)[0]
                storages = Storages(globals_.source, data=data)
                inner = read_entry(zf, pickles[0], max_pickle_bytes, globals_.source)
                return restricted_load(
                    io.BytesIO(inner), globals_, persistent_load=zip_persistent_load(zf, top, storages)
                )
        f = io.BytesIO(data)
        first = restricted_load(f, globals_)
        if type(first) is not int or first != LEGACY_MAGIC_NUMBER:
            raise CorruptCheckpointError(globals_.source, "embedded torch bytes are not a torch file")
        return load_legacy(f, globals_, Storages(globals_.source, data=data), max_pickle_bytes)

    return load_from_bytes


def loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Restricted ``pickle.loads``: plain data, placeholders, and tensors pickled on their own.

    Raises:
        UnsafePickleError: the pickle reached for a refused global; nothing ran.
        CorruptCheckpointError: the pickle is damaged.
    """
    globals_ = Globals(source)
    globals_.extra[("torch.storage", "_load_from_bytes")] = nested_loader(globals_, DEFAULT_MAX_PICKLE_BYTES)
    return restricted_load(io.BytesIO(data), globals_)
