"""Streaming writers for the two output formats of :mod:`anemoi_ckpt_nb.conversion.convert`.

Both write in one pass, tensor after tensor, in chunks handed to them by the
caller, so memory stays at a few chunks whatever the size of the model.

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

The bytes reach the writers in chunks through :mod:`.streams` (bytes to write, or runs of the
source file for the kernel to copy); :mod:`.output` writes them and reads them back behind the
writer (sha256 of the file, CRC-32 of each tensor as the file holds it); :mod:`.verify` reopens
the written file and compares it with what was meant.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from anemoi_ckpt_nb.conversion.output import OutputFile, write_payload
from anemoi_ckpt_nb.conversion.streams import CHUNK, FileRange, TensorEntry, crc32
from anemoi_ckpt_nb.conversion.verify import VerificationError, verify_safetensors, verify_torch_zip

__all__ = [
    "CHUNK",
    "SAFETENSORS_DTYPES",
    "STORAGE_ALIGNMENT",
    "FileRange",
    "OutputFile",
    "SafetensorsWriter",
    "TensorEntry",
    "TorchZipWriter",
    "VerificationError",
    "crc32",
    "safetensors_order",
    "state_dict_pickle",
    "verify_safetensors",
    "verify_torch_zip",
]

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

    def __init__(self, out: OutputFile, top: str, *, zip64_limit: int = ZIP64_LIMIT) -> None:
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

    def add(self, name: str, chunks: Iterable[Any], size: int, *, crc: int | None = None, watch: bool = False) -> int:
        """Write one record of exactly ``size`` bytes from ``chunks``; return its CRC-32.

        Args:
            crc: the CRC-32 of the bytes, known beforehand (see :attr:`TensorEntry.crc`).
            watch: have the output's read-back CRC the payload (a tensor's bytes).

        Raises:
            ValueError: the chunks add up to another size than announced.
        """
        raw_name = f"{self._top}/{name}".encode()
        offset = self._out.offset
        header, flags, zip64 = self._local_header(raw_name, size)
        self._out.write(header)
        if watch:
            self._out.watch(size)
        crc = write_payload(self._out, name, chunks, size, crc)
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
            crcs[entry.name] = self.add(f"data/{key}", entry.chunks(), entry.nbytes, crc=entry.crc, watch=True)
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

    def write(self, out: OutputFile) -> dict[str, int]:
        """Write the whole file to ``out``.

        Returns:
            Tensor name -> CRC-32 of its bytes.

        Raises:
            ValueError: a tensor's chunks add up to another size than announced.
        """
        out.write(self._header)
        crcs = {}
        for entry in self._entries:
            out.watch(entry.nbytes)
            crcs[entry.name] = write_payload(out, entry.name, entry.chunks(), entry.nbytes, entry.crc)
        return crcs

