"""`read.zipdir`: the torch zip archives it reads itself, read as zipfile reads them; every other archive left to zipfile."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.read import zipdir


def _torch_file(path: Path) -> Path:
    torch.save({"w": torch.arange(12, dtype=torch.float32), "b": torch.ones(3, dtype=torch.float64), "n": "text"}, path)
    return path


def _same_as_zipfile(path: Path) -> zipdir.Archive:
    archive = zipdir.open_archive(path)
    assert isinstance(archive, zipdir.Archive), "read by zipfile, not by zipdir"
    with zipfile.ZipFile(path) as reference:
        assert archive.namelist() == reference.namelist()
        for ours, theirs in zip(archive.infolist(), reference.infolist()):
            for field in ("filename", "flag_bits", "compress_type", "CRC", "compress_size", "file_size", "header_offset"):
                assert getattr(ours, field) == getattr(theirs, field), (ours.filename, field)
            assert archive.read(ours.filename) == reference.read(theirs.filename)
            with archive.open(ours) as fp:
                assert fp.read() == reference.read(theirs)
    return archive


def test_torch_save_archives_are_read_as_zipfile_reads_them(tmp_path):
    path = _torch_file(tmp_path / "t.pt")
    tail = path.read_bytes()[-22 - 20 :]
    assert tail[:4] == b"PK\x06\x07", "torch.save writes a zip64 locator and record: read through them"
    _same_as_zipfile(path).close()


def test_training_checkpoint_with_metadata_appended_by_zipfile(tmp_path):
    examples.write_training_checkpoint(tmp_path / "training.ckpt", weights_bytes=4096)
    archive = _same_as_zipfile(tmp_path / "training.ckpt")
    assert any(name.endswith("anemoi-metadata/anemoi.json") for name in archive.namelist())
    archive.close()


def test_archives_written_by_zipfile_with_zip64_records(tmp_path):
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("top/data.pkl", b"\x80\x02K\x01.")
        with zf.open("top/data/0", "w", force_zip64=True) as fp:  # zip64 extra fields in the local header
            fp.write(bytes(range(256)) * 8)
        zf.writestr("top/é.txt", "utf-8 name")  # flagged UTF-8
    _same_as_zipfile(path).close()


def test_zip64_extra_fields_decode_as_zipfile_decodes_them():
    def extra(*values: int) -> bytes:
        body = b"".join(struct.pack("<Q", v) for v in values)
        return struct.pack("<HH", 0x0001, len(body)) + body + struct.pack("<HH", 0x7075, 1) + b"x"

    for sizes, fields in [
        ((0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF), (5 << 32, 5 << 32, 7 << 32)),
        ((0xFFFF_FFFF, 0xFFFF_FFFF, 100), (5 << 32, 5 << 32)),
        ((100, 100, 0xFFFF_FFFF), (9 << 32,)),
    ]:
        info = zipfile.ZipInfo("x")
        info.file_size, info.compress_size, info.header_offset = sizes
        info.extra = extra(*fields)
        info._decodeExtra()
        assert zipdir._zip64(info.extra, *sizes) == (info.file_size, info.compress_size, info.header_offset)
    assert zipdir._zip64(struct.pack("<HH", 0x0001, 4) + b"\0" * 4, 0xFFFF_FFFF, 0xFFFF_FFFF, 0) is None  # zipfile: BadZipFile
    assert zipdir._zip64(struct.pack("<HH", 0x0001, 16), 0, 0, 0) is None  # longer than the field: BadZipFile


def _left_to_zipfile(path: Path) -> None:
    """zipdir hands the archive to zipfile: the same ZipFile, or the same refusal as before."""
    try:
        expected: object = type(zipfile.ZipFile(path))
    except Exception as error:  # noqa: BLE001 - whatever zipfile raises, zipdir must raise
        expected = type(error)
    try:
        archive = zipdir.open_archive(path)
    except Exception as error:  # noqa: BLE001
        assert type(error) is expected, (error, expected)
        return
    assert type(archive) is expected is zipfile.ZipFile, "zipdir read an archive it should have left to zipfile"
    archive.close()


def test_truncated_archives_get_zipfiles_error(tmp_path):
    data = _torch_file(tmp_path / "t.pt").read_bytes()
    for cut in (len(data) - 1, len(data) - 22, len(data) // 2, 30, 4):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(zipfile.BadZipFile):
            zipdir.open_archive(tmp_path / "cut.pt")


def test_unusual_archives_are_left_to_zipfile(tmp_path):
    plain = _torch_file(tmp_path / "t.pt").read_bytes()
    (tmp_path / "prepended.pt").write_bytes(b"#!/bin/sh\n" + plain)  # zipfile finds it by its "concat" offset
    _left_to_zipfile(tmp_path / "prepended.pt")
    with zipfile.ZipFile(tmp_path / "comment.zip", "w") as zf:
        zf.writestr("top/data.pkl", b"\x80\x02K\x01.")
        zf.comment = b"a comment"
    _left_to_zipfile(tmp_path / "comment.zip")
    with zipfile.ZipFile(tmp_path / "deflated.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/data.pkl", b"\x80\x02K\x01." * 10)
    _left_to_zipfile(tmp_path / "deflated.zip")
    with zipfile.ZipFile(tmp_path / "cp437.zip", "w") as zf:
        zf.writestr(zipfile.ZipInfo("top/A.bin"), b"x")
    data = (tmp_path / "cp437.zip").read_bytes().replace(b"top/A.bin", b"top/\x80.bin")  # cp437's "Ç", no UTF-8 flag
    (tmp_path / "cp437.zip").write_bytes(data)
    _left_to_zipfile(tmp_path / "cp437.zip")
    assert zipfile.ZipFile(tmp_path / "cp437.zip").namelist() == ["top/Ç.bin"]


def _central_entries(data: bytes) -> list[int]:
    return [i for i in range(len(data)) if data.startswith(b"PK\x01\x02", i)]


def test_damaged_directories_are_left_to_zipfile(tmp_path):
    plain = _torch_file(tmp_path / "t.pt").read_bytes()
    first = _central_entries(plain)[0]

    def patched(offset: int, value: bytes) -> Path:
        data = bytearray(plain)
        data[offset : offset + len(value)] = value
        path = tmp_path / "patched.pt"
        path.write_bytes(bytes(data))
        return path

    _left_to_zipfile(patched(first, b"PK\x01\x03"))  # central header signature
    _left_to_zipfile(patched(first + 8, struct.pack("<H", 1)))  # encrypted
    _left_to_zipfile(patched(first + 8, struct.pack("<H", 1 << 6)))  # strong encryption
    _left_to_zipfile(patched(first + 6, struct.pack("<H", 64)))  # a version zipfile refuses
    _left_to_zipfile(patched(first + 28, struct.pack("<H", 60000)))  # name past the directory's end
    _left_to_zipfile(patched(first + 24, struct.pack("<L", 1 << 30)))  # data past the directory
    second = _central_entries(plain)[1]
    _left_to_zipfile(patched(second + 42, plain[first + 42 : first + 46]))  # two entries at one offset
    end = len(plain) - 22
    _left_to_zipfile(patched(end + 8, struct.pack("<H", 1)))  # entries on this disk != in all
    _left_to_zipfile(patched(end + 4, struct.pack("<H", 1)))  # another disk
    locator = end - 20
    assert plain[locator : locator + 4] == b"PK\x06\x07"
    _left_to_zipfile(patched(locator + 16, struct.pack("<L", 2)))  # zip64: several disks (zipfile refuses)
    record = locator - 56
    assert plain[record : record + 4] == b"PK\x06\x06"
    _left_to_zipfile(patched(record + 24, struct.pack("<QQ", 99, 99)))  # zip64: entries counted wrong


def test_an_entry_past_the_end_of_the_file(tmp_path):
    path = _torch_file(tmp_path / "t.pt")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[-1]
    data[info.header_offset + 28 : info.header_offset + 30] = struct.pack("<H", 65535)  # local extra field
    path.write_bytes(bytes(data))
    with zipdir.open_archive(path) as archive, pytest.raises(zipdir.ZipEntryError, match="ends inside the entry"):
        archive.read(info.filename)


def test_entries_are_checked_when_read(tmp_path):
    path = _torch_file(tmp_path / "t.pt")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    start = data.index(info.filename.encode(), info.header_offset) + len(info.filename)
    data[start + struct.unpack("<H", data[info.header_offset + 28 : info.header_offset + 30])[0] + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    archive = zipdir.open_archive(path)
    assert isinstance(archive, zipdir.Archive)
    with pytest.raises(zipdir.ZipEntryError, match="Bad CRC-32"):
        archive.read(info.filename)
    with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
        zipfile.ZipFile(path).read(info.filename)
    data[info.header_offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zipdir.ZipEntryError, match="Bad magic number for file header"):
        archive.read(info.filename)
    data[info.header_offset] ^= 0xFF
    data[info.header_offset + 30] ^= 0x20  # the local header's name
    path.write_bytes(bytes(data))
    with pytest.raises(zipdir.ZipEntryError, match="differ"):
        archive.read(info.filename)
    with pytest.raises(KeyError):
        archive.read("nothing")
    archive.close()
    with pytest.raises(ValueError, match="closed"):
        archive.read(info.filename)


def test_the_local_header_is_checked_alike_for_zipdir_and_zipfile_archives(tmp_path):
    """``zipdir.data_start`` places every entry's data where zipfile reads it, for both kinds of archive the
    reader opens (a file, and zipfile's BytesIO of a torch file held in a pickle), and refuses damaged headers;
    ``torchzip.data_offset`` (the storages' offsets) turns the refusal into the reader's error."""
    from anemoi_ckpt_nb.errors import CorruptCheckpointError
    from anemoi_ckpt_nb.read.torchzip import data_offset

    path = _torch_file(tmp_path / "t.pt")
    data = path.read_bytes()
    with zipdir.open_archive(path) as archive, zipfile.ZipFile(io.BytesIO(data)) as in_memory:
        for entry in archive.infolist():
            start = zipdir.data_start(archive.fp, entry.header_offset, entry.filename)
            assert data[start : start + entry.file_size] == in_memory.read(entry.filename)
            assert data_offset(archive, entry, "t.pt") == start == data_offset(in_memory, in_memory.getinfo(entry.filename), "t.pt")
        entry = archive.infolist()[-1]
        with pytest.raises(zipdir.ZipEntryError, match="differ"):
            zipdir.data_start(archive.fp, entry.header_offset, entry.filename + "x")
    damaged = bytearray(data)
    damaged[entry.header_offset + 1] ^= 0xFF
    (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
    with open(tmp_path / "damaged.pt", "rb") as fp:
        with pytest.raises(zipdir.ZipEntryError, match="Bad magic number"):
            zipdir.data_start(fp, entry.header_offset)
        with pytest.raises(zipdir.ZipEntryError, match="Truncated file header"):
            zipdir.data_start(fp, len(data) - 29)
    with zipfile.ZipFile(io.BytesIO(bytes(damaged))) as in_memory:
        with pytest.raises(CorruptCheckpointError, match="bad local header"):
            data_offset(in_memory, in_memory.getinfo(entry.filename), "t.pt")
