"""The central directory of a torch zip archive read without ``zipfile`` (issue 16: ``inspect`` start-up).

``import zipfile`` brings ``shutil``, ``bz2``, ``lzma``, ``threading`` and ``encodings.cp437``: about
16 million instructions of ``anemoi-ckpt inspect``'s 231 million, where ``python -c pass`` is 91.
:func:`open_archive` reads the archives ``torch.save`` writes (and ``zipfile`` appends to: the
embedded metadata) itself, and hands **any** other archive to ``zipfile``, so that everything
unusual is read, and refused, exactly as before. It reads one itself only when all of this holds:

* the end-of-central-directory record is the file's last 22 bytes (no archive comment), on disk 0,
  with as many entries on this disk as in all; a zip64 locator and record before it, if there is a
  locator, are read as ``zipfile`` reads them (one disk, the record's signature);
* the central directory lies inside the file, right before the end records (nothing prepended);
* every entry: the central header signature, its name, extra field and comment inside the directory,
  and the directory ends exactly after the last one; stored (no compression), not encrypted, no
  flag but the data descriptor (bit 3) and UTF-8 names (bit 11); a version ``zipfile`` reads; an
  ASCII name unless flagged UTF-8 (``zipfile`` decodes the others as cp437); zip64 extra fields
  decoded as ``zipfile`` decodes them; the entry's data inside the file, before the directory, and
  not overlapping another entry's.

Reading an entry checks its local header (signature, the same name, inside the file), reads
exactly its size and checks its CRC-32, as ``zipfile`` does; what fails raises :class:`ZipEntryError`.
"""

from __future__ import annotations

import io
import os
import struct

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

_END = struct.Struct("<4s4H2LH")  # end of central directory: 22 bytes
_END64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_END64 = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # 46 bytes
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # 30 bytes
_ALLOWED_FLAGS = 0x08 | 0x800  # data descriptor, UTF-8 name
_MAX_EXTRACT_VERSION = 63  # zipfile's


class ZipEntryError(ValueError):
    """An entry of the archive cannot be read as its directory describes it (truncated or damaged)."""


class Entry:
    """One entry of the central directory: ``zipfile.ZipInfo``'s fields that the reader uses."""

    __slots__ = ("filename", "flag_bits", "compress_type", "CRC", "compress_size", "file_size", "header_offset")

    def __init__(self, filename: str, flag_bits: int, crc: int, compress_size: int, file_size: int, header_offset: int) -> None:
        self.filename, self.flag_bits, self.CRC = filename, flag_bits, crc
        self.compress_type = 0  # only stored entries are read here
        self.compress_size, self.file_size, self.header_offset = compress_size, file_size, header_offset


class Archive:
    """A torch zip archive whose central directory was read and checked (see the module's docstring).

    Offers what the reader uses of ``zipfile.ZipFile``: ``namelist``, ``infolist``, ``getinfo``,
    ``read``, ``open``, ``fp`` and ``close``.
    """

    def __init__(self, fp: Any, entries: list[Entry]) -> None:
        self.fp = fp
        self.filelist = entries
        self.NameToInfo = {entry.filename: entry for entry in entries}  # the last of two equal names, as zipfile

    def namelist(self) -> list[str]:
        return [entry.filename for entry in self.filelist]

    def infolist(self) -> list[Entry]:
        return list(self.filelist)

    def getinfo(self, name: str) -> Entry:
        try:
            return self.NameToInfo[name]
        except KeyError:
            raise KeyError(f"There is no item named {name!r} in the archive") from None

    def read(self, name: str | Entry) -> bytes:
        """The entry's bytes, after the checks ``zipfile`` makes on them.

        Raises:
            KeyError: no such entry.
            ZipEntryError: its local header or its bytes are not what the directory says.
        """
        entry = name if isinstance(name, Entry) else self.getinfo(name)
        if self.fp is None:
            raise ValueError("Attempt to use ZIP archive that was already closed")
        start = data_start(self.fp, entry.header_offset, entry.filename)
        data = os.pread(self.fp.fileno(), entry.compress_size, start)
        if len(data) != entry.compress_size:
            raise ZipEntryError(f"{entry.filename}: the archive ends inside the entry")
        import zlib  # what zipfile checks each entry with; not needed until an entry is read

        if zlib.crc32(data) != entry.CRC:
            raise ZipEntryError(f"Bad CRC-32 for file {entry.filename!r}")
        return data

    def open(self, name: str | Entry) -> io.BytesIO:
        """The entry's bytes (checked by :meth:`read`) as a file: stored entries hold their size."""
        return io.BytesIO(self.read(name))

    def close(self) -> None:
        fp, self.fp = self.fp, None
        if fp is not None:
            fp.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def data_start(fp: Any, header_offset: int, name: str | None = None) -> int:
    """Where the data of the entry whose local header is at ``header_offset`` in ``fp`` starts: after
    the header, its name and its extra field. The header must be whole and signed; with ``name``, its
    name must be that one, as ``zipfile`` checks when it opens an entry (the directory's names are
    UTF-8 or ASCII). ``fp``: an open file (read at offsets, its position kept), or a ``BytesIO``
    (a torch file held in a pickle, read by ``zipfile``).

    Raises:
        ZipEntryError: a header cut short, without its signature, or naming another entry.
    """
    header = _read_at(fp, _LOCAL.size, header_offset)
    if len(header) != _LOCAL.size:
        raise ZipEntryError("Truncated file header")
    fields = _LOCAL.unpack(header)
    if fields[0] != b"PK\x03\x04":
        raise ZipEntryError("Bad magic number for file header")
    name_len, extra_len = fields[10], fields[11]
    if name is not None:
        raw_name = _read_at(fp, name_len, header_offset + _LOCAL.size)
        if raw_name != name.encode("utf-8"):
            raise ZipEntryError(f"File name in directory {name!r} and header {raw_name!r} differ.")
    return header_offset + _LOCAL.size + name_len + extra_len


def _read_at(fp: Any, size: int, offset: int) -> bytes:
    if type(fp) is io.BytesIO:
        return fp.getvalue()[offset : offset + size]
    return os.pread(fp.fileno(), size, offset)


def open_archive(path: Any) -> Any:
    """The archive at ``path``: an :class:`Archive` if it is one this module reads, else a ``zipfile.ZipFile``.

    Raises:
        whatever ``zipfile.ZipFile(path)`` raises for archives handed to it; ``OSError`` opening the file.
    """
    fp = open(path, "rb")
    try:
        entries = _entries(fp)
    except BaseException:
        fp.close()
        raise
    if entries is not None:
        return Archive(fp, entries)
    fp.close()
    import zipfile

    return zipfile.ZipFile(path)


def _entries(fp: Any) -> list[Entry] | None:
    """The archive's entries, or ``None`` for an archive left to ``zipfile``."""
    size = os.fstat(fp.fileno()).st_size
    if size < _END.size:
        return None
    fd = fp.fileno()
    end = _END.unpack(os.pread(fd, _END.size, size - _END.size))
    signature, disk, disk_start, count_here, count, dir_size, dir_offset, comment_len = end
    if signature != b"PK\x05\x06" or comment_len != 0 or disk != 0 or disk_start != 0 or count_here != count:
        return None
    dir_end = size - _END.size  # where the directory must end: the end records follow it
    if size >= _END.size + _END64_LOCATOR.size:
        locator = _END64_LOCATOR.unpack(os.pread(fd, _END64_LOCATOR.size, dir_end - _END64_LOCATOR.size))
        if locator[0] == b"PK\x06\x07":
            if locator[1] != 0 or locator[3] > 1:
                return None  # zipfile refuses archives on several disks
            record_at = dir_end - _END64_LOCATOR.size - _END64.size
            if record_at < 0:
                return None
            record = _END64.unpack(os.pread(fd, _END64.size, record_at))
            if record[0] != b"PK\x06\x06" or record[4] != 0 or record[5] != 0 or record[6] != record[7]:
                return None
            count, dir_size, dir_offset = record[7], record[8], record[9]
            dir_end = record_at
    if dir_offset + dir_size != dir_end:  # a directory elsewhere, or data before the archive
        return None
    directory = os.pread(fd, dir_size, dir_offset)
    if len(directory) != dir_size:
        return None
    entries: list[Entry] = []
    at = 0
    while at < dir_size:
        entry, at = _entry(directory, at, dir_offset)
        if entry is None:
            return None
        entries.append(entry)
    if at != dir_size or len(entries) != count:
        return None
    placed = sorted(entries, key=lambda entry: entry.header_offset)
    for before, after in zip(placed, placed[1:]):  # entries that share bytes are left to zipfile, as before
        if before.header_offset + _LOCAL.size + before.compress_size > after.header_offset:
            return None
    return entries


def _entry(directory: bytes, at: int, dir_offset: int) -> tuple[Entry | None, int]:
    """The central directory entry at ``at`` and where the next starts; ``(None, at)`` if not one read here."""
    if at + _CENTRAL.size > len(directory):
        return None, at
    fields = _CENTRAL.unpack_from(directory, at)
    signature, _, _, extract_version, _, flags, method = fields[:7]
    crc, compress_size, file_size, name_len, extra_len, comment_len = fields[9:15]
    header_offset = fields[18]
    end = at + _CENTRAL.size + name_len + extra_len + comment_len
    if signature != b"PK\x01\x02" or end > len(directory):
        return None, at
    if method != 0 or flags & ~_ALLOWED_FLAGS or extract_version > _MAX_EXTRACT_VERSION:
        return None, at
    raw_name = directory[at + _CENTRAL.size : at + _CENTRAL.size + name_len]
    if flags & 0x800:
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            return None, at
    elif raw_name.isascii():  # cp437 and ASCII agree on these
        name = raw_name.decode("ascii")
    else:
        return None, at
    extra = directory[at + _CENTRAL.size + name_len : at + _CENTRAL.size + name_len + extra_len]
    sizes = _zip64(extra, file_size, compress_size, header_offset)
    if sizes is None:
        return None, at
    file_size, compress_size, header_offset = sizes
    if file_size != compress_size or header_offset + _LOCAL.size + compress_size > dir_offset:
        return None, at  # a stored entry holds its size; its data lies before the directory
    return Entry(name, flags, crc, compress_size, file_size, header_offset), end


def _zip64(extra: bytes, file_size: int, compress_size: int, header_offset: int) -> tuple[int, int, int] | None:
    """The sizes and offset with their zip64 extra field applied as ``zipfile`` applies it; ``None`` if damaged."""
    while len(extra) >= 4:
        kind, length = struct.unpack("<HH", extra[:4])
        if length + 4 > len(extra):
            return None
        if kind == 0x0001:
            data = extra[4 : length + 4]
            try:
                if file_size in (0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF):
                    (file_size,) = struct.unpack("<Q", data[:8])
                    data = data[8:]
                if compress_size == 0xFFFF_FFFF:
                    (compress_size,) = struct.unpack("<Q", data[:8])
                    data = data[8:]
                if header_offset == 0xFFFF_FFFF:
                    (header_offset,) = struct.unpack("<Q", data[:8])
            except struct.error:
                return None
        extra = extra[length + 4 :]
    return file_size, compress_size, header_offset
