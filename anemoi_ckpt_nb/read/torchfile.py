"""The file formats of ``torch.save``, read with the restricted unpickler and memory-mapped storages.

* **zip** (torch >= 1.6): ``<top>/data.pkl`` is the pickle; each storage is an
  uncompressed entry ``<top>/data/<key>``. The whole file is mapped once
  (``torch.UntypedStorage.from_file``, private mapping) and every storage is a
  slice of that map at its entry's data offset, so nothing is read until a
  tensor's values are used.
* **legacy** (``_use_new_zipfile_serialization=False``): magic number,
  protocol, system info, the pickle, the list of storage keys, then each
  storage as ``<int64 count><raw bytes>``. The pickle is read twice: first
  with storages on the meta device to learn their dtypes (and so where each
  one ends), then with slices of the map.
* **plain pickle**: one restricted pickle, no storages of its own (tensors in
  it come through ``torch.storage._load_from_bytes``, read the same way from
  the embedded bytes, in memory).

TorchScript archives and the pre-2017 tar format are refused: the first holds
code, the second is long gone.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import (
    CheckpointReadError,
    CorruptCheckpointError,
    NotACheckpointError,
)
from anemoi_ckpt_nb.read.arrayrefs import NeedsNumpy
from anemoi_ckpt_nb.read.placeholders import StorageMarker
from anemoi_ckpt_nb.read.resolver import Globals
from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch, StorageRecord
from anemoi_ckpt_nb.read.unpickler import DEFAULT_MAX_PICKLE_BYTES, restricted_load

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
PICKLE_PROTO = 0x80
#: First bytes of protocol 0 and 1 pickles (MARK, GLOBAL, empty list/dict/tuple): worth a careful try.
PROTOCOL_0_STARTS = (b"(", b"c", b"]", b"}", b")")


@dataclass
class TorchFile:
    """What a ``torch.save`` file held, rebuilt without running its code."""

    path: Path
    format: str  # "zip" | "legacy" | "pickle"
    raw: Any
    globals: Globals
    storages: dict[str, StorageRecord] = field(default_factory=dict)
    #: ``data_ptr()`` of each storage's first byte -> its key, to tell which tensors share bytes.
    storage_by_ptr: dict[int, str] = field(default_factory=dict)
    #: The open archive (zip format only), for embedded metadata; closed by :meth:`close`.
    zip: zipfile.ZipFile | None = None
    #: Top-level folder of the archive (zip format only).
    top: str | None = None
    #: Read without torch: tensors are :class:`~.tensorrefs.TensorRef` descriptions of ``storages``.
    described: bool = False
    #: The bound the file was read with (to read it again the same way).
    max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
            self.zip = None


def sniff(path: Path) -> str:
    """``"zip"``, ``"pickle"``, ``"pickle?"`` (maybe protocol 0), ``"safetensors"``, ``"tar"`` or ``"unknown"``."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (ZIP_MAGIC, EMPTY_ZIP_MAGIC):
        return "zip"
    # Before the pickle checks: a safetensors header length can start with any byte (0x80, "(", "}").
    # A pickle cannot pass this one: its bytes 2 to 7 are opcodes, so the length would be huge.
    if len(head) > 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= 100 * 1024 * 1024 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == bytes([PICKLE_PROTO]):
        return "pickle"
    if head[:1] in PROTOCOL_0_STARTS:
        return "pickle?"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "unknown"


_LOAD_LOCK = threading.RLock()


def load_torch_file(path: Path, *, max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES, describe: bool = False) -> TorchFile:
    """Read a ``torch.save`` file (zip, legacy or plain pickle) safely.

    Args:
        path: the file.
        max_pickle_bytes: refuse pickles larger than this (they are read into memory).
        describe: read a zip archive without torch, tensors described (:mod:`.tensorrefs`).

    Raises:
        NeedsTorch: with ``describe``, the file needs torch to be read (another format, a
            sparse or quantized tensor, ...); nothing was kept open.
        NotACheckpointError: not a torch file (or a TorchScript or tar archive).
        CorruptCheckpointError: truncated or damaged.
        UnsafePickleError: the pickle reached for a refused global; nothing ran.
        CheckpointReadError: the pickle is larger than ``max_pickle_bytes``.
    """
    kind = sniff(path)
    if describe:
        if kind != "zip":
            raise NeedsTorch(f"a {kind} file")
        try:  # numpy too described first (arrayrefs); a pickle using numpy otherwise is read with numpy
            return _load_zip(path, max_pickle_bytes=max_pickle_bytes, describe=True, describe_numpy=True)
        except NeedsNumpy:
            return _load_zip(path, max_pickle_bytes=max_pickle_bytes, describe=True)
    if kind in ("zip", "pickle", "pickle?"):
        # torch collects the sparse tensors it rebuilds in one list for the whole process
        # (torch._utils._sparse_tensors_to_validate), checked and emptied after a load: two
        # loads at once in threads (convert --jobs) would check, and blame, each other's.
        with _LOAD_LOCK:
            _forget_sparse()  # what a load that failed half-way left, not this file's
            if kind == "zip":
                return _load_zip(path, max_pickle_bytes=max_pickle_bytes)
            try:
                return _load_pickle_file(path, max_pickle_bytes=max_pickle_bytes)
            except CorruptCheckpointError:
                if kind == "pickle":
                    raise
                raise NotACheckpointError(path, "not a torch checkpoint: neither a zip archive nor a pickle") from None
    if kind == "tar":
        raise NotACheckpointError(
            path,
            "a tar archive (the PyTorch format of before version 0.4 is not supported)",
            hint="load it with that old torch and torch.save it again",
        )
    raise NotACheckpointError(path, "not a torch checkpoint: neither a zip archive nor a pickle")


# --- storages -----------------------------------------------------------------


class _Described:
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


def _nested_needs_torch(data: Any) -> Any:
    raise NeedsTorch("a torch file pickled inside the pickle")


class _Storages:
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


def _storage_id(pid: Any, source: str) -> tuple[StorageMarker, str, str, int, Any]:
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


# --- zip ------------------------------------------------------------------------


def _load_zip(path: Path, *, max_pickle_bytes: int, describe: bool = False, describe_numpy: bool = False) -> TorchFile:
    source = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise CorruptCheckpointError(path, f"truncated or damaged zip archive ({error})") from None
    try:
        names = zf.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
            raise NotACheckpointError(
                path,
                "a TorchScript archive (torch.jit.save); it holds code, which this reader never runs",
                hint="use torch.jit.load only if you trust the file",
            )
        if not pickles:
            raise NotACheckpointError(path, "a zip archive without data.pkl: not a torch checkpoint")
        if len(pickles) > 1:
            raise CorruptCheckpointError(path, f"the archive holds {len(pickles)} data.pkl entries")
        top = pickles[0].split("/", 1)[0]
        check_names(names, top, source)
        data = _read_entry(zf, pickles[0], max_pickle_bytes, source)
        swap = False
        if f"{top}/byteorder" in names:
            order = zf.read(f"{top}/byteorder")
            if order not in (b"little", b"big"):
                raise CorruptCheckpointError(path, f"unknown byte order {order[:20]!r}")
            swap = order.decode() != sys.byteorder
        storages = _Described(source, path, swap=swap, fd=zf.fp.fileno()) if describe else _Storages(source, path=path, swap=swap)
        globals_ = Globals(source, describe=describe, describe_numpy=describe_numpy)
        globals_.copy_budget = copy_budget(len(data))
        globals_.extra[("torch.storage", "_load_from_bytes")] = _nested_needs_torch if describe else nested_loader(
            globals_, max_pickle_bytes
        )
        raw = restricted_load(io.BytesIO(data), globals_, persistent_load=_zip_persistent_load(zf, top, storages))
        if not describe:
            _validate_sparse(path)
    except BaseException:
        zf.close()
        raise
    return TorchFile(
        path=path,
        format="zip",
        raw=raw,
        globals=globals_,
        storages=storages.records,
        storage_by_ptr=storages.by_ptr,
        zip=zf,
        top=top,
        described=describe,
        max_pickle_bytes=max_pickle_bytes,
    )


def check_names(names: list[str], top: str, source: str) -> None:
    """Refuse an archive that torch would read differently from us.

    torch's zip reader takes the archive's folder from its first entry and compares names
    ignoring case, taking whichever of two equal names its search meets first; we read
    ``<top>/data.pkl`` exactly. Names equal but for case (``DATA.PKL`` beside ``data.pkl``),
    repeated names, or a first entry outside ``top`` would make one file mean two things.

    Raises:
        CorruptCheckpointError: any of these.
    """
    if names and names[0].split("/", 1)[0] != top:
        raise CorruptCheckpointError(
            source, f"its first entry {names[0]!r} is outside the folder {top!r} of data.pkl, where torch would look"
        )
    seen: dict[str, str] = {}
    for name in names:
        folded = name.casefold()
        if folded in seen:
            what = "twice" if seen[folded] == name else f"as {seen[folded]!r} and {name!r}, which differ only in case"
            raise CorruptCheckpointError(
                source, f"the archive names one entry {what}: torch and this reader could read different ones",
                hint="the file was not written by torch.save; do not use it unless you trust its origin",
            )
        seen[folded] = name


def copy_budget(pickle_bytes: int) -> int:
    """Bytes a pickle of ``pickle_bytes`` may hand to calls: what it holds, twice, plus 16 MiB."""
    return 2 * pickle_bytes + 16 * 1024 * 1024


def _read_entry(zf: zipfile.ZipFile, name: str, limit: int, source: str) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise CheckpointReadError(
            source,
            f"{name} is {info.file_size} bytes, over the limit of {limit} for a pickle read into memory",
            hint="raise it with open_checkpoint(path, max_pickle_bytes=...) if you trust the file",
        )
    try:
        with zf.open(info) as fp:
            # Read at most limit + 1 bytes whatever the header claims: a compressed entry can lie.
            data = fp.read(limit + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CorruptCheckpointError(source, f"cannot read {name} ({error})") from None
    if len(data) > limit:
        raise CheckpointReadError(source, f"{name} is over the limit of {limit} bytes for a pickle read into memory")
    return data


def _zip_persistent_load(zf: zipfile.ZipFile, top: str, storages: Any):
    source = storages.source

    def persistent_load(pid: Any) -> Any:
        marker, key, location, numel, _ = _storage_id(pid, source)
        nbytes = numel * marker.dtype.itemsize
        name = f"{top}/data/{key}"
        try:
            info = zf.getinfo(name)
        except KeyError:
            raise CorruptCheckpointError(source, f"the pickle refers to storage {key}, which the archive lacks") from None
        if info.file_size != nbytes:
            raise CorruptCheckpointError(
                source, f"storage {key} has {info.file_size} bytes, the pickle expects {nbytes}"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            # torch.save never compresses; a re-zipped file is read into memory instead of mapped.
            return storages.from_bytes(key, marker.dtype, _read_entry(zf, name, nbytes, source), location)
        return storages.typed(key, marker.dtype, nbytes, _data_offset(zf, info, source), location, crc32=info.CRC)

    return persistent_load


def _data_offset(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> int:
    """Where an uncompressed entry's bytes start: after its local header, name and extra field."""
    fp = zf.fp
    assert fp is not None
    fp.seek(info.header_offset)
    header = fp.read(30)
    if len(header) != 30 or header[:4] != ZIP_MAGIC:
        raise CorruptCheckpointError(source, f"bad local header for {info.filename}: the archive is damaged")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _forget_sparse() -> None:
    import torch

    torch._utils._sparse_tensors_to_validate.clear()


def _validate_sparse(path: Path | str) -> None:
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


# --- plain and legacy pickles -----------------------------------------------------


def _load_pickle_file(path: Path, *, max_pickle_bytes: int) -> TorchFile:
    source = str(path)
    globals_ = Globals(source)
    globals_.copy_budget = copy_budget(min(path.stat().st_size, max_pickle_bytes))
    globals_.extra[("torch.storage", "_load_from_bytes")] = nested_loader(globals_, max_pickle_bytes)
    with open(path, "rb") as f:
        first = restricted_load(_Bounded(f, max_pickle_bytes, source), globals_)
        if type(first) is not int or first != LEGACY_MAGIC_NUMBER:
            _validate_sparse(path)
            return TorchFile(path=path, format="pickle", raw=first, globals=globals_)
        storages = _Storages(source, path=path)
        raw = _load_legacy(f, globals_, storages, max_pickle_bytes)
    return TorchFile(
        path=path, format="legacy", raw=raw, globals=globals_, storages=storages.records, storage_by_ptr=storages.by_ptr
    )


def _load_legacy(f: Any, globals_: Globals, storages: _Storages, max_pickle_bytes: int) -> Any:
    """The rest of a legacy file, after its magic number (``f`` positioned there)."""
    import torch

    source = globals_.source
    protocol = restricted_load(f, globals_)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CorruptCheckpointError(source, f"unknown legacy torch protocol {protocol!r}")
    sys_info = restricted_load(f, globals_)
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    if little != (sys.byteorder == "little"):
        raise NotACheckpointError(source, "a legacy torch file of the other byte order is not supported")
    start = f.tell()

    # Pass 1: storages on the meta device, to learn each one's dtype and size.
    found: dict[str, tuple[Any, int]] = {}

    def meta_load(pid: Any) -> Any:
        marker, key, location, numel, view = _storage_id(pid, source)
        found.setdefault(key, (marker.dtype, numel))
        storage = torch.UntypedStorage(numel * torch._utils._element_size(marker.dtype), device="meta")
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=marker.dtype, _internal=True)

    restricted_load(_Bounded(f, max_pickle_bytes, source), globals_, persistent_load=meta_load)
    keys = restricted_load(f, globals_)
    if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
        raise CorruptCheckpointError(source, "the legacy storage key list is damaged")
    offsets: dict[str, int] = {}
    position = f.tell()
    for key in map(str, keys):
        if key not in found:
            raise CorruptCheckpointError(source, f"legacy storage {key} is not referred to by the pickle")
        dtype, numel = found[key]
        f.seek(position)
        header = f.read(8)
        if len(header) != 8:
            raise CorruptCheckpointError(source, f"legacy storage {key} is missing: the file is truncated")
        (count,) = struct.unpack("<q", header)
        if count != numel:
            raise CorruptCheckpointError(source, f"legacy storage {key} holds {count} elements, the pickle expects {numel}")
        offsets[key] = position + 8
        position += 8 + numel * torch._utils._element_size(dtype)
    if position > storages.size:
        raise CorruptCheckpointError(source, "the legacy storages run past the end of the file: it is truncated")

    # Pass 2: the real thing, with slices of the memory map.
    views: dict[str, Any] = {}

    def real_load(pid: Any) -> Any:
        marker, key, location, numel, view = _storage_id(pid, source)
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
    raw = restricted_load(_Bounded(f, max_pickle_bytes, source), globals_, persistent_load=real_load)
    _validate_sparse(source)
    return raw


class _Bounded:
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
            zf = zipfile.ZipFile(io.BytesIO(data))
            with zf:
                pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
                if len(pickles) != 1:
                    raise CorruptCheckpointError(globals_.source, "embedded torch bytes lack data.pkl")
                top = pickles[0].split("/", 1)[0]
                storages = _Storages(globals_.source, data=data)
                inner = _read_entry(zf, pickles[0], max_pickle_bytes, globals_.source)
                return restricted_load(
                    io.BytesIO(inner), globals_, persistent_load=_zip_persistent_load(zf, top, storages)
                )
        f = io.BytesIO(data)
        first = restricted_load(f, globals_)
        if type(first) is not int or first != LEGACY_MAGIC_NUMBER:
            raise CorruptCheckpointError(globals_.source, "embedded torch bytes are not a torch file")
        return _load_legacy(f, globals_, _Storages(globals_.source, data=data), max_pickle_bytes)

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
