"""Streaming writers for the two output formats of :mod:`anemoi_ckpt_nb.conversion.convert`.

Both write in one pass, tensor after tensor, in chunks handed to them by the
caller, so memory stays at a few chunks whatever the size of the model. The
sha256 of everything written is computed on the fly (in a helper thread, so it
overlaps the I/O on a second core), and so is each tensor's CRC-32, which the
caller compares with what it reads back.

**Torch zip archive** (:class:`TorchZipWriter`): the layout ``torch.save``
produces (``torch/serialization.py`` ``_save`` and the miniz writer behind
``PyTorchStreamWriter``), so that ``torch.load(path, weights_only=True)``
opens it, with or without ``mmap=True``::

    <top>/data.pkl              pickle (protocol 2) of a plain dict name -> tensor; tensors are
                                ``torch._utils._rebuild_tensor_v2`` over persistent ids
                                ("storage", <torch.XStorage>, key, "cpu", numel)
    <top>/.format_version       "1": storages are numbered in the order the pickle meets them
    <top>/.storage_alignment    "64"
    <top>/byteorder             "little"
    <top>/data/0, data/1, ...   raw little-endian tensor bytes, each starting on a 64-byte boundary
    <top>/version               "3\\n"
    <top>/.data/serialization_id
    <top>/anemoi-metadata/...   appended last, where anemoi-utils' save_metadata appends it

Entries are stored uncompressed, with a data descriptor after each payload
(flag bit 3) and the alignment padding in an ``FB`` extra field, exactly as
miniz lays them out, so that torch's optional offset calculation
(``torch.utils.serialization.config.load.calculate_storage_offsets``) finds
every storage too. ZIP64 fields are used where a size or an offset needs them.
Every timestamp is 1980-01-01 00:00 and the serialization id is derived from
the content, so the same tensors give the same bytes.

**safetensors** (:class:`SafetensorsWriter`): an 8-byte little-endian header
length, the JSON header (padded with spaces to a multiple of 8), then the
tensor bytes back to back. The header is known before any data is written, so
this format streams too.

:func:`verify_torch_zip` and :func:`verify_safetensors` read a written file
back and compare it with what was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

#: How many bytes are read and written at a time. Small enough to stay in the CPU cache
#: between the read, the CRC, the write and the hash: with 8 MiB chunks the same copy ran
#: several times slower on the test machine.
CHUNK = 1024 * 1024



def _crc32_function() -> Callable[..., int]:
    """The zip CRC-32: ISA-L's (about 20 GB/s with carry-less multiply) when installed, else zlib's (4 GB/s).

    Both compute the same CRC-32 (the zip and gzip polynomial). Every byte
    converted is CRC'd twice (when written, and when read back for the
    verification), so on a machine where one core does all the work this is
    half a second per GB saved.
    """
    try:
        from isal.isal_zlib import crc32
    except ImportError:  # isal has no wheel for this platform: the standard library's
        return zlib.crc32
    return crc32


crc32 = _crc32_function()

STORAGE_ALIGNMENT = 64
ZIP64_LIMIT = 0xFFFFFFFF
#: 1980-01-01 00:00:00 in MS-DOS form: the earliest valid zip timestamp, used for every entry.
_DOS_TIME = 0
_DOS_DATE = (0 << 9) | (1 << 5) | 1

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_EOCD64_LOCATOR = struct.Struct("<IIQI")

#: torch dtype name -> safetensors dtype code.
SAFETENSORS_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "complex64": "C64",
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor to write: what it is and where its bytes come from.

    ``chunks()`` yields bytes-like objects (``bytes``, ``memoryview``, numpy
    buffers) that add up to exactly ``nbytes`` of C-contiguous little-endian data.
    """

    name: str
    dtype: str  # torch dtype name: "float32", "bfloat16", ...
    shape: tuple[int, ...]
    nbytes: int
    chunks: Callable[[], Iterable[Any]]


class Digests:
    """sha256 digests fed from a helper thread, each in the order its chunks are given.

    hashlib releases the GIL on large buffers, so hashing overlaps the caller's
    reads and writes where a second core is free. The queue is bounded, so at
    most a few chunks are in flight.

    Args:
        names: the digests to keep.
        release: called from the thread with each chunk fed with ``last_use``
            once it is hashed (a :class:`BufferPool` takes its buffers back this way).
    """

    def __init__(self, names: Iterable[str], *, release: Callable[[memoryview], None] | None = None) -> None:
        self._digests = {name: hashlib.sha256() for name in names}
        self._release = release
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="convert-sha256", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            name, view, last_use = item
            self._digests[name].update(view)
            if last_use and self._release is not None:
                self._release(view)
            self._queue.task_done()
        self._queue.task_done()

    def feed(self, name: str, data: Any, *, last_use: bool = True) -> None:
        """Hash ``data`` into digest ``name``; it must not change until hashed (``release`` says when)."""
        self._queue.put((name, memoryview(data).cast("B"), last_use))

    def hexdigest(self, name: str) -> str:
        """The digest of everything fed to ``name`` so far (waits for the thread to catch up)."""
        self._queue.join()
        return self._digests[name].hexdigest()

    def close(self) -> None:
        """Stop the thread (also after a failure)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()


class HashingFile:
    """A binary file that counts the bytes written and feeds them to a digest.

    Args:
        file: the file to write to.
        digests: where the bytes are hashed, under ``name``.
    """

    def __init__(self, file: BinaryIO, digests: Digests, name: str = "output") -> None:
        self._file = file
        self._digests = digests
        self._name = name
        self.offset = 0

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self._file.write(view)
        self.offset += view.nbytes
        self._digests.feed(self._name, view)

    def finish(self) -> str:
        """Flush, and return the hex sha256 of all bytes written."""
        self._file.flush()
        return self._digests.hexdigest(self._name)


class BufferPool:
    """A few reusable chunk buffers for reading a file by offset.

    Reading into the same buffers again keeps memory flat and avoids the page
    faults of fresh allocations. A buffer goes back to the pool when the
    hashing thread is done with it (pass :meth:`give_back` as the ``release``
    of :class:`Digests`).
    """

    def __init__(self, *, count: int = 12, size: int = CHUNK) -> None:
        self._size = size
        self._count = count
        self._buffers: dict[int, bytearray] = {}  # made on first need: small files need one or two
        self._free: queue.Queue[bytearray] = queue.Queue()

    def give_back(self, view: memoryview) -> None:
        owner = view.obj
        if id(owner) in self._buffers:
            view.release()
            self._free.put(owner)  # type: ignore[arg-type]

    def _take(self) -> bytearray:
        if self._free.empty() and len(self._buffers) < self._count:
            buffer = bytearray(self._size)
            self._buffers[id(buffer)] = buffer
            return buffer
        return self._free.get()

    def read(self, fd: int, offset: int, size: int) -> Iterator[memoryview]:
        """``size`` bytes of ``fd`` from ``offset``, a pooled buffer at a time.

        Raises:
            ValueError: the file ends before.
        """
        end = offset + size
        while offset < end:
            buffer = self._take()
            want = min(self._size, end - offset)
            view = memoryview(buffer)[:want]
            got = 0
            while got < want:
                n = os.preadv(fd, [view[got:]], offset + got)
                if n == 0:
                    self._free.put(buffer)
                    raise ValueError(f"file ends at byte {offset + got}, {end - offset - got} bytes short")
                got += n
            offset += want
            yield view


# --- torch zip archive ---------------------------------------------------------


@dataclass
class _Record:
    name: bytes
    offset: int
    size: int
    crc: int
    flags: int
    zip64: bool


class TorchZipWriter:
    """Write a torch zip archive record by record (see the module docstring).

    Args:
        out: where the bytes go.
        top: the archive's top-level folder (torch uses the file's stem).
        zip64_limit: sizes and offsets from this value on use ZIP64 fields. Only
            tests lower it, to exercise the ZIP64 layout with small files.
    """

    def __init__(self, out: HashingFile, top: str, *, zip64_limit: int = ZIP64_LIMIT) -> None:
        self._out = out
        self._top = top
        self._limit = zip64_limit
        self._records: list[_Record] = []

    def _local_header(self, name: bytes, size: int) -> tuple[bytes, int, bool]:
        """The local header for a record of ``size`` bytes starting at the current offset."""
        offset = self._out.offset
        zip64_values = []
        if size >= self._limit:
            zip64_values += [size, size]
        if offset >= self._limit:
            zip64_values.append(offset)
        zip64_extra = b""
        if zip64_values:
            zip64_extra = struct.pack(f"<HH{len(zip64_values)}Q", 1, 8 * len(zip64_values), *zip64_values)
        # Pad through an "FB" extra field so the payload starts on a 64-byte boundary, as miniz does.
        start = offset + _LOCAL.size + len(name) + len(zip64_extra) + 4
        padding = -start % STORAGE_ALIGNMENT
        extra = zip64_extra + struct.pack("<HH", 0x4246, padding) + b"Z" * padding
        flags = 0x0800 | (0x0008 if size > 0 else 0)
        header = _LOCAL.pack(
            0x04034B50, 45 if zip64_values else 20, flags, 0, _DOS_TIME, _DOS_DATE, 0, 0, 0, len(name), len(extra)
        )
        return header + name + extra, flags, bool(zip64_values)

    def add(self, name: str, chunks: Iterable[Any], size: int) -> int:
        """Write one record of exactly ``size`` bytes from ``chunks``; return its CRC-32.

        Raises:
            ValueError: the chunks add up to another size than announced.
        """
        raw_name = f"{self._top}/{name}".encode()
        offset = self._out.offset
        header, flags, zip64 = self._local_header(raw_name, size)
        self._out.write(header)
        crc = 0
        written = 0
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            if written + view.nbytes > size:
                raise ValueError(f"{name}: more than the {size} bytes announced")
            crc = crc32(view, crc)
            self._out.write(view)
            written += view.nbytes
        if written != size:
            raise ValueError(f"{name}: {written} bytes instead of the {size} announced")
        if size > 0:
            # torch computes where the next storage starts from these sizes (16 or 24 bytes).
            if zip64:
                self._out.write(struct.pack("<IIQQ", 0x08074B50, crc, size, size))
            else:
                self._out.write(struct.pack("<IIII", 0x08074B50, crc, size, size))
        self._records.append(_Record(raw_name, offset, size, crc, flags, zip64))
        return crc

    def add_bytes(self, name: str, data: bytes) -> int:
        """Write a small record held in memory; return its CRC-32."""
        return self.add(name, [data] if data else [], len(data))

    def add_tensors(self, entries: list[TensorEntry]) -> dict[str, int]:
        """Write ``data.pkl``, the bookkeeping records and every tensor's storage.

        Returns:
            Tensor name -> CRC-32 of its bytes.
        """
        pickled = state_dict_pickle(entries)
        self.add_bytes("data.pkl", pickled)
        self.add_bytes(".format_version", b"1")
        self.add_bytes(".storage_alignment", str(STORAGE_ALIGNMENT).encode())
        self.add_bytes("byteorder", b"little")
        crcs = {}
        for key, entry in enumerate(entries):
            crcs[entry.name] = self.add(f"data/{key}", entry.chunks(), entry.nbytes)
        self.add_bytes("version", b"3\n")
        self.add_bytes(".data/serialization_id", _serialization_id(pickled, crcs.values()))
        return crcs

    def finish(self) -> None:
        """Write the central directory and the end records."""
        cd_offset = self._out.offset
        for record in self._records:
            values = []
            if record.size >= self._limit:
                values += [record.size, record.size]
            if record.offset >= self._limit:
                values.append(record.offset)
            extra = struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values) if values else b""
            size32 = 0xFFFFFFFF if record.size >= self._limit else record.size
            offset32 = 0xFFFFFFFF if record.offset >= self._limit else record.offset
            version = 45 if values else 20
            self._out.write(
                _CENTRAL.pack(
                    0x02014B50, version, version, record.flags, 0, _DOS_TIME, _DOS_DATE, record.crc,
                    size32, size32, len(record.name), len(extra), 0, 0, 0, 0, offset32,
                )
                + record.name
                + extra
            )
        cd_size = self._out.offset - cd_offset
        count = len(self._records)
        if count >= 0xFFFF or cd_offset >= self._limit or cd_size >= self._limit:
            eocd64_offset = self._out.offset
            self._out.write(_EOCD64.pack(0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset))
            self._out.write(_EOCD64_LOCATOR.pack(0x07064B50, 0, eocd64_offset, 1))
            count = min(count, 0xFFFF)
            cd_size = min(cd_size, 0xFFFFFFFF)
            cd_offset = min(cd_offset, 0xFFFFFFFF)
        self._out.write(_EOCD.pack(0x06054B50, 0, 0, count, count, cd_size, cd_offset, 0))


def _serialization_id(pickled: bytes, crcs: Iterable[int]) -> bytes:
    """A 40-digit id like torch's, but derived from the content so the output is reproducible."""
    digest = hashlib.sha256(pickled)
    for crc in crcs:
        digest.update(crc.to_bytes(4, "little"))
    return str(int.from_bytes(digest.digest()[:16], "little")).zfill(40)[-40:].encode()


class _Global:
    """A global a pickle names (``torch._utils._rebuild_tensor_v2``), written by name: torch is never imported."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any) -> Any:  # pickle's save_reduce wants a callable; never called
        raise TypeError(f"{self.module}.{self.name} is only written by name")


def state_dict_pickle(entries: list[TensorEntry]) -> bytes:
    """The ``data.pkl`` of ``torch.save({name: tensor, ...})``, storage ``n`` being entry ``n``.

    Built from descriptions only, without torch: the pickler is Python's own
    (protocol 2, as torch.save uses), with torch's globals written by name. Dtypes
    with a legacy typed storage use ``_rebuild_tensor_v2`` as torch does; the others
    (float8, uint16, ...) ``_rebuild_tensor_v3`` over an untyped storage, also as
    torch does. tests/test_convert_writers.py checks the bytes against torch's own pickle.
    """
    import collections
    import io
    import pickle

    from anemoi_ckpt_nb.read.tensorrefs import DTYPES

    for entry in entries:
        if entry.dtype not in DTYPES:
            raise ValueError(f"{entry.name}: a torch archive of this converter cannot store dtype {entry.dtype}")
    globals_: dict[tuple[str, str], _Global] = {}

    def named(module: str, name: str) -> _Global:
        return globals_.setdefault((module, name), _Global(module, name))

    class Storage:
        def __init__(self, key: int, entry: TensorEntry) -> None:
            self.key = str(key)
            self.entry = entry

    class Tensor:
        def __init__(self, key: int, entry: TensorEntry) -> None:
            self.storage = Storage(key, entry)
            self.entry = entry

        def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
            shape = tuple(self.entry.shape)
            stride = _contiguous_stride(shape)
            if DTYPES[self.entry.dtype][1]:
                rebuild = named("torch._utils", "_rebuild_tensor_v2")
                return (rebuild, (self.storage, 0, shape, stride, False, collections.OrderedDict()))
            rebuild = named("torch._utils", "_rebuild_tensor_v3")
            dtype = named("torch", self.entry.dtype)
            return (rebuild, (self.storage, 0, shape, stride, False, collections.OrderedDict(), dtype))

    class Pickler(pickle._Pickler):  # the Python one: its dispatch table takes the globals written by name
        dispatch = dict(pickle._Pickler.dispatch)

        def save_named(self, obj: _Global) -> None:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
            self.memoize(obj)

        dispatch[_Global] = save_named

        def persistent_id(self, obj: Any) -> Any:
            if not isinstance(obj, Storage):
                return None
            entry = obj.entry
            itemsize, storage = DTYPES[entry.dtype]
            if storage:
                return ("storage", named("torch", storage), obj.key, "cpu", entry.nbytes // itemsize)
            return ("storage", named("torch.storage", "UntypedStorage"), obj.key, "cpu", entry.nbytes)

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({entry.name: Tensor(key, entry) for key, entry in enumerate(entries)})
    return buffer.getvalue()


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride = []
    running = 1
    for size in reversed(shape):
        stride.append(running)
        running *= max(size, 1)
    return tuple(reversed(stride))


# --- safetensors -----------------------------------------------------------------


def safetensors_order(entries: list[TensorEntry]) -> list[TensorEntry]:
    """Largest item size first (stable), so every tensor is aligned to its item size, as safetensors does."""
    from anemoi_ckpt_nb.read.tensorrefs import DTYPES

    return sorted(entries, key=lambda e: -DTYPES.get(e.dtype, (1, None))[0])


class SafetensorsWriter:
    """Write a ``.safetensors`` file: header first, then each tensor's bytes.

    Args:
        entries: the tensors, in the order their bytes are laid out.
        metadata: the string -> string ``__metadata__`` of the header.

    Raises:
        ValueError: a dtype safetensors has no code for.
    """

    def __init__(self, entries: list[TensorEntry], metadata: dict[str, str]) -> None:
        self._entries = entries
        header: dict[str, Any] = {"__metadata__": metadata}
        offset = 0
        for entry in entries:
            code = SAFETENSORS_DTYPES.get(entry.dtype)
            if code is None:
                raise ValueError(f"{entry.name}: safetensors cannot store dtype {entry.dtype}")
            header[entry.name] = {"dtype": code, "shape": list(entry.shape), "data_offsets": [offset, offset + entry.nbytes]}
            offset += entry.nbytes
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        raw += b" " * (-len(raw) % 8)
        self._header = struct.pack("<Q", len(raw)) + raw

    def write(self, out: HashingFile) -> dict[str, int]:
        """Write the whole file to ``out``.

        Returns:
            Tensor name -> CRC-32 of its bytes.

        Raises:
            ValueError: a tensor's chunks add up to another size than announced.
        """
        out.write(self._header)
        crcs = {}
        for entry in self._entries:
            crc = 0
            written = 0
            for chunk in entry.chunks():
                view = memoryview(chunk).cast("B")
                if written + view.nbytes > entry.nbytes:
                    raise ValueError(f"{entry.name}: more than the {entry.nbytes} bytes announced")
                crc = crc32(view, crc)
                out.write(view)
                written += view.nbytes
            if written != entry.nbytes:
                raise ValueError(f"{entry.name}: {written} bytes instead of the {entry.nbytes} announced")
            crcs[entry.name] = crc
        return crcs


# --- verification ------------------------------------------------------------------


class VerificationError(ValueError):
    """A written file does not read back as what was written."""


def verify_torch_zip(
    path: str | os.PathLike,
    entries: list[TensorEntry],
    crcs: dict[str, int],
    metadata: dict[str, Any],
    *,
    inputs: Any = None,
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
            _check_bytes(path, checkpoint, entries, crcs)
            _check_inputs(checkpoint, inputs)
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
) -> None:
    """Reopen a file written by :class:`SafetensorsWriter` and check it against the source.

    The reader reopens the file, without torch, and checks its header as
    ``safetensors`` does; each tensor's bytes are read back where the header puts
    them and their CRC-32 compared with the one computed from the source's bytes
    (supporting arrays under :data:`~anemoi_ckpt_nb.read.embedded.SAFETENSORS_ARRAY_PREFIX`
    through the arrays the reader rebuilt); the header must give the expected
    names, dtypes, shapes and metadata.

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
            _check_bytes(path, checkpoint, weights, crcs)
            _check_inputs(checkpoint, inputs)
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


def _check_bytes(path: str | os.PathLike, checkpoint: Any, entries: list[TensorEntry], crcs: dict[str, int]) -> None:
    """Read each tensor back where the reopened file says it is; compare its CRC-32 with the written one."""
    if set(checkpoint.weights) != {entry.name for entry in entries}:
        raise VerificationError(f"{len(checkpoint.weights)} tensors read back instead of {len(entries)}")
    pool = BufferPool(count=1)
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
            crc = 0
            for chunk in pool.read(file.fileno(), *span):
                crc = crc32(chunk, crc)
                pool.give_back(chunk)
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
