"""Failures in the middle of S3 multipart transfers, on a real SeaweedFS server: a failed or
interrupted upload or server-side copy leaves no multipart upload (no billed parts) behind,
stops sending parts at once, and says how to finish an abort it could not do itself."""

from __future__ import annotations

import hashlib
import logging
import os

import pytest

from anemoi_ckpt_nb.errors import ConflictError, IntegrityError, StorageUnreachableError
from anemoi_ckpt_nb.storage import open_storage
from anemoi_ckpt_nb.storage._s3_checksums import PROBE_FOLDER
from anemoi_ckpt_nb.storage.copy import server_side_copy

pytestmark = pytest.mark.s3
MiB = 1024 * 1024
PARTS = 4  # the copies below: 4 parts of 5 MiB (the S3 minimum part size)


def _open_uploads(server, prefix: str = "") -> list[dict]:
    return server.client().list_multipart_uploads(Bucket=server.bucket, Prefix=prefix).get("Uploads", [])


def _count_calls(storage, operation: str) -> list[int]:
    """Count the requests of one S3 operation the storage's own clients send (a boto3 event hook):
    the parts of an upload go through its parts client, the rest through its client. The requests of
    the probe that decides what the parts carry (storage/_s3_checksums.py), made at most once per
    endpoint, are not counted."""
    calls: list[int] = []

    def count(params, **_):
        if f"/{PROBE_FOLDER}/" not in "/" + params.get("Key", ""):
            calls.append(1)

    for client in (storage._client, storage._parts_client):
        client.meta.events.register(f"before-parameter-build.s3.{operation}", count)
    return calls


@pytest.fixture
def source_and_dest(s3_url):
    """Two storages on one server (a server-side copy), one request at a time, and a 20 MiB object."""
    source = open_storage(s3_url + "/src", max_concurrency=1)
    dest = open_storage(s3_url + "/dst", max_concurrency=1)
    data = os.urandom(PARTS * 5 * MiB)
    source.put("blob", data)
    return source, dest, data


def test_a_copy_whose_source_vanishes_aborts_and_blames_the_source(s3_env, source_and_dest):
    source, dest, data = source_and_dest
    other = s3_env.client()
    # The source is deleted for real right after the multipart upload is created: every part copy fails.
    dest._client.meta.events.register(
        "after-call.s3.CreateMultipartUpload",
        lambda **_: other.delete_object(Bucket=s3_env.bucket, Key=f"{source.prefix}/blob"),
    )
    part_copies = _count_calls(dest, "UploadPartCopy")
    with pytest.raises(ConflictError) as caught:
        server_side_copy(source, "blob", dest, "copy", sha256=hashlib.sha256(data).hexdigest(), size=len(data), max_single_copy=1, part_size=5 * MiB)
    assert f"{source.url}/blob" in str(caught.value) and "vanished during the copy" in str(caught.value)
    assert len(part_copies) == 1  # the first failure stopped the copy; no more ranges were sent
    assert _open_uploads(s3_env, dest.prefix) == []
    assert not dest.exists("copy")


def test_a_source_changed_during_the_copy_is_a_conflict_and_leaves_nothing(s3_env, source_and_dest):
    source, dest, data = source_and_dest

    def replace_source(_nbytes):
        source.put("blob", os.urandom(len(data)))  # same size, other bytes, new ETag

    with pytest.raises(ConflictError, match="changed or vanished"):
        server_side_copy(source, "blob", dest, "copy", sha256=hashlib.sha256(data).hexdigest(), size=len(data), max_single_copy=1, part_size=5 * MiB, progress=replace_source)
    assert _open_uploads(s3_env, dest.prefix) == []
    assert not dest.exists("copy")


def test_an_interrupted_copy_stops_copying_and_aborts(s3_env, source_and_dest):
    source, dest, data = source_and_dest
    part_copies = _count_calls(dest, "UploadPartCopy")

    def interrupt(_nbytes):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        server_side_copy(source, "blob", dest, "copy", sha256=hashlib.sha256(data).hexdigest(), size=len(data), max_single_copy=1, part_size=5 * MiB, progress=interrupt)
    # Interrupted after the first part: at most the one part in flight then was finished.
    assert len(part_copies) <= 2 < PARTS
    assert _open_uploads(s3_env, dest.prefix) == []
    assert not dest.exists("copy")
    # Nothing half-done blocks the next try.
    server_side_copy(source, "blob", dest, "copy", sha256=hashlib.sha256(data).hexdigest(), size=len(data), max_single_copy=1, part_size=5 * MiB)
    assert dest.get("copy")[0] == data


def test_a_multipart_upload_of_a_file_that_changed_is_aborted(s3_env, s3_url, tmp_path):
    """Every part is sent before the file's hash is known; a wrong hash must still leave nothing."""
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=2)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(11 * MiB))
    part_uploads = _count_calls(storage, "UploadPart")
    with pytest.raises(IntegrityError, match="nothing stored"):
        storage.upload_file("blobs/x", path, sha256="0" * 64)
    assert len(part_uploads) == 3  # it really went multipart
    assert _open_uploads(s3_env, storage.prefix) == []
    assert not storage.exists("blobs/x")


def test_an_interrupted_multipart_upload_stops_sending_parts(s3_env, s3_url, tmp_path):
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=1)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(20 * MiB))
    part_uploads = _count_calls(storage, "UploadPart")

    def interrupt(_nbytes):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        storage.upload_file("blobs/x", path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), progress=interrupt)
    assert len(part_uploads) <= 2 < 4
    assert _open_uploads(s3_env, storage.prefix) == []


def test_an_abort_that_fails_is_reported_with_the_command_that_finishes_it(seaweed_factory, monkeypatch, caplog, tmp_path):
    site = seaweed_factory("lost", bucket="lost")
    for name, value in site.env().items():
        monkeypatch.setenv(name, value)
    storage = open_storage("s3://lost/cat", part_size=5 * MiB, max_concurrency=1)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(11 * MiB))
    # The site goes away once the multipart upload exists: its parts and its abort both fail.
    # (The upload of blobs/x's, not the one the part checksum's probe may start first.)
    storage._client.meta.events.register(
        "after-call.s3.CreateMultipartUpload", lambda parsed, **_: parsed["Key"].endswith("blobs/x") and site.stop()
    )
    with caplog.at_level(logging.WARNING, logger="anemoi_ckpt_nb.storage._s3_transfer"), pytest.raises(StorageUnreachableError):
        storage.upload_file("blobs/x", path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    site.start()
    (upload,) = _open_uploads(site)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "s3://lost/cat/blobs/x" in warning
    assert f"aws s3api abort-multipart-upload --bucket lost --key cat/blobs/x --upload-id {upload['UploadId']}" in warning
    site.client().abort_multipart_upload(Bucket="lost", Key="cat/blobs/x", UploadId=upload["UploadId"])  # what it says
    assert _open_uploads(site) == []
