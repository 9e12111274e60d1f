"""The remembered sha256 of users' files (storage/hashing.py): believed only while it describes the file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.conversion.files import SourceHash
from anemoi_ckpt_nb.storage.hashing import XATTR, cached_sha256, record_sha256, sha256_file, sha256_of
from rootless import held_to_permissions

FAKE = "f" * 64  # a planted hash: if it comes back, the cache was read


def _xattrs_work(path) -> bool:
    try:
        os.setxattr(path, "user.anemoi_ckpt.probe", b"1")
        os.removexattr(path, "user.anemoi_ckpt.probe")
    except OSError:
        return False
    return True


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    if not _xattrs_work(path):
        pytest.skip(f"the file system of {tmp_path} keeps no user extended attributes")
    return path


def _plant(path, sha: str = FAKE) -> None:
    st = os.stat(path)
    os.setxattr(path, XATTR, f"{st.st_size}:{st.st_mtime_ns}:{sha}".encode())


def test_a_computed_hash_is_remembered_and_then_believed(blob):
    true = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert sha256_of(blob) == true
    assert os.getxattr(blob, XATTR).decode().endswith(":" + true)
    _plant(blob)
    assert sha256_of(blob) == FAKE  # read from the cache, not from the bytes
    assert sha256_file(blob) == true  # the proving hash never looks at it


def test_a_changed_file_is_hashed_again(blob):
    _plant(blob)
    with open(blob, "r+b") as f:  # same size, new bytes: the modification time moves
        f.write(b"changed")
    true = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert sha256_of(blob) == true  # and remembered
    st = os.stat(blob)
    with open(blob, "ab") as f:
        f.write(b"longer")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old time put back: the size still tells
    assert sha256_of(blob) == hashlib.sha256(blob.read_bytes()).hexdigest()


@pytest.mark.parametrize("value", [b"garbage", b"1:2", b"\xff\xfe", ("{size}:{mtime}:" + "g" * 64).encode()])
def test_a_malformed_record_is_ignored(blob, value):
    st = os.stat(blob)
    os.setxattr(blob, XATTR, value.replace(b"{size}", str(st.st_size).encode()).replace(b"{mtime}", str(st.st_mtime_ns).encode()))
    assert sha256_of(blob) == hashlib.sha256(blob.read_bytes()).hexdigest()


def test_nothing_is_recorded_for_a_file_that_changed_while_it_was_read(blob):
    with open(blob, "rb") as f:
        before = os.fstat(f.fileno())
        with open(blob, "ab") as writer:  # a writer busy with the file meanwhile
            writer.write(b"more")
        assert record_sha256(f.fileno(), FAKE, before) is False
        assert cached_sha256(f.fileno()) is None


def test_the_cache_can_be_turned_off(blob, monkeypatch):
    monkeypatch.setenv("ANEMOI_CKPT_HASH_CACHE", "off")
    _plant(blob)
    true = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert sha256_of(blob) == true
    assert SourceHash(blob).result() == true
    assert os.getxattr(blob, XATTR).decode().endswith(FAKE)  # and nothing was written


def test_progress_totals_stay_right_on_a_cache_hit(blob):
    seen: list[int] = []
    sha256_of(blob, progress=seen.append)
    assert sum(seen) == blob.stat().st_size
    seen.clear()
    sha256_of(blob, progress=seen.append)
    assert seen == [blob.stat().st_size]


def test_the_source_hash_thread_remembers_and_reuses(blob):
    true = hashlib.sha256(blob.read_bytes()).hexdigest()
    first = SourceHash(blob)
    assert first._hasher is not None and first.result() == true
    assert os.getxattr(blob, XATTR).decode().endswith(":" + true)
    _plant(blob)
    second = SourceHash(blob)
    assert second._hasher is None and second.result() == FAKE  # no thread, no read
    second.cancel()  # harmless


def test_direct_reads_refused_after_open_fall_back_to_ordinary_reads(blob, monkeypatch):
    """The kernel refuses a direct read into an unaligned buffer (EINVAL), as some file
    systems refuse every direct read after accepting O_DIRECT at open: the hash goes on."""
    import mmap

    monkeypatch.setenv("ANEMOI_CKPT_HASH_CACHE", "off")
    buffers: list[mmap.mmap] = []

    class Unaligned(SourceHash):
        def _buffer(self):
            buffers.append(mmap.mmap(-1, self.CHUNK + 1))
            return memoryview(buffers[-1])[1:]

    try:
        os.close(os.open(blob, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        pytest.skip(f"the file system of {blob.parent} refuses O_DIRECT at open (the ordinary path)")
    # Not from the page cache (which holds the blob just written): from the disk, directly.
    monkeypatch.setattr("anemoi_ckpt_nb.conversion.files._cache_reader", lambda fd: None)
    hasher = Unaligned(blob)
    assert hasher.result() == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert hasher._direct is False  # it did fall back


@pytest.mark.parametrize("evicted", ["none", "all", "second half", "every other chunk"])
def test_the_source_hash_takes_what_the_page_cache_holds_and_reads_the_rest(tmp_path, monkeypatch, evicted):
    """Chunks the page cache holds are read from it, the others from the disk around it: the same hash."""
    monkeypatch.setenv("ANEMOI_CKPT_HASH_CACHE", "off")
    chunk = SourceHash.CHUNK
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(4 * chunk + 12345))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages only: those can be dropped
        size = path.stat().st_size
        spans = {
            "none": [],
            "all": [(0, size)],
            "second half": [(size // 2, size - size // 2)],
            "every other chunk": [(offset, chunk) for offset in range(0, size, 2 * chunk)],
        }[evicted]
        for offset, length in spans:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    hasher = SourceHash(path)
    assert hasher.result() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_register_then_convert_reads_the_source_once_for_its_hash(tmp_path):
    """Registering hashes the training file; the CLI-style convert afterwards takes that hash."""
    source = examples.write_training_checkpoint(tmp_path / "run" / "last.ckpt", weights_bytes=50_000)
    if not _xattrs_work(source.path):
        pytest.skip("no user extended attributes here")
    catalogue = Catalogue.create(tmp_path / "cat")
    record = catalogue.register(source.path)
    true = sha256_file(source.path)
    with open(source.path, "rb") as f:
        assert record.sha256 == true and cached_sha256(f.fileno()) == true

    (tmp_path / "out").mkdir()
    result = convert(source.path, tmp_path / "out")
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["converted_from"]["sha256"] == true
    assert sidecar["converted_from"]["uuid"] == source.uuid


def test_a_file_the_user_may_not_write_is_hashed_and_left_untouched(tmp_path):
    """Someone else's checkpoint (here: read-only, and root held to the permission bits):
    converting it works, and no attribute is added to it."""
    source = examples.write_training_checkpoint(tmp_path / "theirs.ckpt", weights_bytes=50_000)
    if not _xattrs_work(source.path):
        pytest.skip("no user extended attributes here")
    preexec = held_to_permissions()
    source.path.chmod(0o444)
    (tmp_path / "out").mkdir()
    script = f"""
import json
from anemoi_ckpt_nb.conversion.convert import convert
result = convert({str(source.path)!r}, {str(tmp_path / "out")!r})
print(json.loads(result.sidecar.read_text())["converted_from"]["sha256"])
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        preexec_fn=preexec,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == sha256_file(source.path)
    assert XATTR not in os.listxattr(source.path)
