"""One contract for every storage backend: memory, local folder and S3 (real SeaweedFS)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import uuid
from pathlib import Path

import pytest

from anemoi_ckpt_nb.errors import (
    ConflictError,
    IntegrityError,
    InvalidKeyError,
    ObjectNotFoundError,
)
from anemoi_ckpt_nb.storage import open_storage

MiB = 1024 * 1024
# S3 parts and ranges of 5 MiB (the S3 minimum) so a 12 MiB file takes three.
S3_OPTIONS = {"part_size": 5 * MiB, "max_concurrency": 3}


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request, tmp_path) -> tuple[str, dict]:
    """(url, options) of an empty store of each kind."""
    if request.param == "memory":
        return f"memory://contract-{uuid.uuid4().hex}", {}
    if request.param == "local":
        return str(tmp_path / "store"), {}
    return request.getfixturevalue("s3_url"), S3_OPTIONS


@pytest.fixture
def storage(backend):
    url, options = backend
    return open_storage(url, **options)


@pytest.fixture
def big_file(tmp_path) -> tuple[Path, bytes, str]:
    """A 12 MiB file of random bytes: several S3 parts, two local chunks."""
    data = os.urandom(12 * MiB + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


class Interrupted(BaseException):
    """Stands for Ctrl-C or a killed job: not an ``Exception``, so nothing swallows it."""


class Counter:
    """A progress callback that adds up bytes, optionally failing after ``fail_after``."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.total = 0
        self.fail_after = fail_after

    def __call__(self, nbytes: int) -> None:
        self.total += nbytes
        if self.fail_after is not None and self.total >= self.fail_after:
            raise Interrupted


# --- small objects ----------------------------------------------------------------


def test_put_get_stat_roundtrip(storage):
    etag = storage.put("records/a.json", b'{"a": 1}')
    assert storage.get("records/a.json") == (b'{"a": 1}', etag)
    info = storage.stat("records/a.json")
    assert (info.key, info.size, info.etag) == ("records/a.json", 8, etag)
    assert storage.exists("records/a.json")


def test_missing_object_is_not_found(storage):
    for call in (storage.get, storage.stat):
        with pytest.raises(ObjectNotFoundError) as err:
            call("records/nothing.json")
        assert "records/nothing.json" in str(err.value)
        assert isinstance(err.value, FileNotFoundError)
    assert not storage.exists("records/nothing.json")


def test_create_only_refuses_an_existing_key(storage):
    storage.put("records/a.json", b"first", if_absent=True)
    with pytest.raises(ConflictError, match="records/a.json.*already exists"):
        storage.put("records/a.json", b"second", if_absent=True)
    assert storage.get("records/a.json")[0] == b"first"


def test_compare_and_swap(storage):
    etag1 = storage.put("tags/t.json", b"v1")
    etag2 = storage.replace("tags/t.json", b"v2", etag=etag1)
    assert etag2 != etag1
    assert storage.get("tags/t.json") == (b"v2", etag2)
    with pytest.raises(ConflictError):
        storage.replace("tags/t.json", b"stale write", etag=etag1)
    assert storage.get("tags/t.json")[0] == b"v2"


def test_compare_and_swap_on_a_vanished_key_conflicts(storage):
    etag = storage.put("tags/t.json", b"v1")
    storage.delete("tags/t.json")
    with pytest.raises(ConflictError):
        storage.replace("tags/t.json", b"v2", etag=etag)
    assert not storage.exists("tags/t.json")


def test_unconditional_put_overwrites(storage):
    storage.put("k", b"one")
    etag = storage.put("k", b"two")
    assert storage.get("k") == (b"two", etag)


def test_list_is_in_key_order_and_filters_by_prefix(storage):
    keys = ["records/b.json", "a/1", "a.txt", "a/b/c", "ab", "records/a.json", "z"]
    for key in keys:
        storage.put(key, key.encode())
    assert [i.key for i in storage.list()] == sorted(keys)
    assert [i.key for i in storage.list("a/")] == ["a/1", "a/b/c"]
    assert [i.key for i in storage.list("a")] == ["a.txt", "a/1", "a/b/c", "ab"]
    assert [i.key for i in storage.list("records/")] == ["records/a.json", "records/b.json"]
    assert list(storage.list("nothing/")) == []
    info = {i.key: i for i in storage.list()}
    assert info["a/b/c"].size == 5
    assert info["a/b/c"].etag == storage.stat("a/b/c").etag


def test_list_with_an_invalid_prefix_finds_nothing_and_stays_inside(storage, tmp_path):
    (tmp_path / "beside.txt").write_text("not in the store")  # next to the local store's root
    storage.put("a/b", b"x")
    for prefix in ("../", "../beside", "a//", "a/../a/", "./a/"):
        assert list(storage.list(prefix)) == [], prefix
    assert [i.key for i in storage.list("a/")] == ["a/b"]


def test_delete(storage):
    storage.put("records/a.json", b"x")
    storage.delete("records/a.json")
    assert not storage.exists("records/a.json")
    storage.delete("records/a.json")  # missing is fine
    storage.put("records/a.json", b"again", if_absent=True)  # and the name is free again
    assert storage.get("records/a.json")[0] == b"again"


@pytest.mark.parametrize(
    "key", ["", "/a", "a/", "a//b", "../x", "a/../b", ".hidden", "a/.b", "a\\b"]
)
def test_invalid_keys_are_refused(storage, key):
    with pytest.raises(InvalidKeyError):
        storage.put(key, b"x")
    with pytest.raises(InvalidKeyError):
        storage.get(key)


# --- large files --------------------------------------------------------------------


def test_upload_and_download_verified(storage, big_file, tmp_path):
    path, data, sha = big_file
    sent, received = Counter(), Counter()
    info = storage.upload_file("blobs/sha256/" + sha, path, sha256=sha, progress=sent)
    assert (info.key, info.size) == ("blobs/sha256/" + sha, len(data))
    assert sent.total == len(data)
    dest = storage.download_file(
        "blobs/sha256/" + sha, tmp_path / "out" / "copy.bin", sha256=sha, progress=received
    )
    assert dest == tmp_path / "out" / "copy.bin"
    assert dest.read_bytes() == data
    assert received.total == len(data)
    assert not (tmp_path / "out" / "copy.bin.part").exists()


def test_uploading_stored_content_again_transfers_nothing(storage, big_file):
    path, _, sha = big_file
    storage.upload_file("blobs/x", path, sha256=sha)
    again = Counter()
    storage.upload_file("blobs/x", path, sha256=sha, progress=again)
    assert again.total == 0


def test_upload_with_wrong_sha256_stores_nothing(storage, big_file):
    path, _, _ = big_file
    with pytest.raises(IntegrityError, match="expected"):
        storage.upload_file("blobs/x", path, sha256="0" * 64)
    assert not storage.exists("blobs/x")
    assert list(storage.list()) == []


def test_download_with_wrong_sha256_leaves_dest_untouched(storage, big_file, tmp_path):
    path, _, sha = big_file
    storage.upload_file("blobs/x", path, sha256=sha)
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"previous content")
    with pytest.raises(IntegrityError):
        storage.download_file("blobs/x", dest, sha256="0" * 64)
    assert dest.read_bytes() == b"previous content"
    assert not (tmp_path / "dest.bin.part").exists()


def test_download_of_a_missing_key_is_not_found(storage, tmp_path):
    with pytest.raises(ObjectNotFoundError):
        storage.download_file("blobs/none", tmp_path / "x", sha256="0" * 64)
    assert not (tmp_path / "x").exists()


def test_download_resumes_from_a_partial_file(storage, big_file, tmp_path):
    path, data, sha = big_file
    storage.upload_file("blobs/x", path, sha256=sha)
    dest = tmp_path / "dest.bin"
    kept = 5 * MiB + 4321  # not on a part boundary
    (tmp_path / "dest.bin.part").write_bytes(data[:kept])
    fetched = Counter()
    storage.download_file("blobs/x", dest, sha256=sha, progress=fetched)
    assert fetched.total == len(data) - kept  # only the missing range crossed the wire
    assert dest.read_bytes() == data


def test_interrupted_download_resumes(storage, big_file, tmp_path):
    path, data, sha = big_file
    storage.upload_file("blobs/x", path, sha256=sha)
    dest = tmp_path / "dest.bin"
    with pytest.raises(Interrupted):
        storage.download_file("blobs/x", dest, sha256=sha, progress=Counter(fail_after=1))
    assert not dest.exists()
    partial = (tmp_path / "dest.bin.part").read_bytes()
    assert 0 < len(partial) < len(data)
    assert data.startswith(partial)
    fetched = Counter()
    storage.download_file("blobs/x", dest, sha256=sha, progress=fetched)
    assert fetched.total == len(data) - len(partial)
    assert dest.read_bytes() == data


def test_a_partial_file_of_other_content_is_refetched(storage, big_file, tmp_path):
    path, data, sha = big_file
    storage.upload_file("blobs/x", path, sha256=sha)
    (tmp_path / "dest.bin.part").write_bytes(b"not a prefix of the object")
    storage.download_file("blobs/x", tmp_path / "dest.bin", sha256=sha)
    assert (tmp_path / "dest.bin").read_bytes() == data


def test_interrupted_upload_leaves_nothing_visible(storage, big_file):
    path, _, sha = big_file
    with pytest.raises(Interrupted):
        storage.upload_file("blobs/x", path, sha256=sha, progress=Counter(fail_after=1))
    assert not storage.exists("blobs/x")
    assert list(storage.list()) == []


# --- concurrency --------------------------------------------------------------------


def _increment(storage, key: str) -> int:
    """Add one to the counter under ``key`` by compare-and-swap; return the conflicts seen."""
    conflicts = 0
    while True:
        data, etag = storage.get(key)
        try:
            storage.replace(key, str(int(data) + 1).encode(), etag=etag)
            return conflicts
        except ConflictError:
            conflicts += 1


def _contend(url: str, options: dict, increments: int) -> tuple[bool, int]:
    """One competing process: try to create ``once``, then increment ``counter``."""
    storage = open_storage(url, **options)
    try:
        storage.put("once", str(os.getpid()).encode(), if_absent=True)
        won = True
    except ConflictError:
        won = False
    return won, sum(_increment(storage, "counter") for _ in range(increments))


@pytest.mark.parametrize(
    "kind", ["local", pytest.param("s3", marks=pytest.mark.s3)]
)
def test_no_lost_update_with_8_processes(kind, tmp_path, request):
    url, options = (
        (str(tmp_path / "store"), {})
        if kind == "local"
        else (request.getfixturevalue("s3_url"), S3_OPTIONS)
    )
    open_storage(url, **options).put("counter", b"0")
    processes, increments = 8, 10
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(_contend, [(url, options, increments)] * processes)
    storage = open_storage(url, **options)
    assert storage.get("counter")[0] == str(processes * increments).encode()
    assert sum(won for won, _ in results) == 1


def test_no_lost_update_with_8_threads(storage):
    storage.put("counter", b"0")
    threads = [
        threading.Thread(target=lambda: [_increment(storage, "counter") for _ in range(10)])
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.get("counter")[0] == b"80"


def test_a_listing_says_when_an_object_was_written_where_the_backend_knows(storage, backend):
    import time

    storage.put("aged/x", b"1")
    [info] = storage.list("aged/")
    if backend[0].startswith("memory"):
        assert info.modified is None
    else:  # clean --orphans tells a young alias (a registration in flight) from a stray one by it
        assert info.modified is not None and abs(time.time() - info.modified) < 600
