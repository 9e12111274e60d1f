"""What protects the bytes of an S3 upload, on a real SeaweedFS server: each request that carries a
file's bytes carries one checksum of them, signed, that the server checks, and no other hash of them:
a multipart upload's parts their CRC-32, since a probe proved that the server checks it (SeaweedFS
does), or their MD5 with ``part_checksum="md5"``, as a single PutObject always does; a part damaged
on the way is refused by the server and the upload aborted, on either path; small documents keep
botocore's CRC-32 and a signed payload (docs/storage.md, "What checks the bytes")."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import parse_qs, urlsplit

import pytest

from anemoi_ckpt_nb.errors import IntegrityError
from anemoi_ckpt_nb.storage import _s3_checksums as checksums
from anemoi_ckpt_nb.storage import open_storage

pytestmark = pytest.mark.s3
MiB = 1024 * 1024
PATHS = {"one-put": (3 * MiB, "auto"), "multipart": (11 * MiB, "auto"), "multipart-md5": (11 * MiB, "md5")}


def _requests(storage) -> list[tuple[str, str, dict[str, str]]]:
    """(operation, URL, headers) of every request the storage's two clients send, as sent."""
    sent: list[tuple[str, str, dict[str, str]]] = []

    def note(request, event_name: str, **_):
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((event_name.rsplit(".", 1)[-1], request.url, headers))

    for client in (storage._client, storage._parts_client):
        client.meta.events.register("before-send.s3", note)
    return sent


def _open_uploads(server, prefix: str) -> list[dict]:
    return server.client().list_multipart_uploads(Bucket=server.bucket, Prefix=prefix).get("Uploads", [])


def _random_file(path, size: int):
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("path_id", PATHS)
def test_a_files_bytes_carry_one_signed_checksum_and_no_other_hash(s3_env, s3_url, tmp_path, path_id, monkeypatch):
    size, part_checksum = PATHS[path_id]
    monkeypatch.setattr(checksums, "_verdicts", {})  # as in a new process: the server is asked, where needed
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=2, part_checksum=part_checksum)
    sent = _requests(storage)
    path, sha = _random_file(tmp_path / "f.bin", size)
    storage.upload_file("blobs/x", path, sha256=sha)
    carrying = [(url, headers) for operation, url, headers in sent if operation in ("UploadPart", "PutObject")]
    ours = [headers for url, headers in carrying if "/blobs/x" in url]
    assert len(ours) == (1 if size < 5 * MiB else 3)
    expected = "x-amz-checksum-crc32" if path_id == "multipart" else "content-md5"
    for headers in ours:
        assert [name for name in headers if name == "content-md5" or name.startswith("x-amz-checksum-")] == [expected]
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"  # no sha256 of the payload either
        assert expected in headers["authorization"]  # signed: the bytes are bound to the request
    # The probe's part, sent only to decide what a multipart upload's parts carry, unless forced.
    probes = [url for url, _ in carrying if "/blobs/x" not in url]
    assert len(probes) == (path_id == "multipart") and all(f"/{checksums.PROBE_FOLDER}/" in url for url in probes)
    head = s3_env.client().head_object(Bucket=s3_env.bucket, Key=f"{storage.prefix}/blobs/x", ChecksumMode="ENABLED")
    # The server kept what the parts carried: the composite of their CRC-32s, or none.
    assert head.get("ChecksumCRC32", "").endswith("-3") is (path_id == "multipart")


def test_small_documents_keep_their_crc32_and_signed_payload(s3_url, s3_env):
    storage = open_storage(s3_url)
    sent = _requests(storage)
    etag = storage.put("records/a.json", b'{"a": 1}', if_absent=True)
    storage.replace("records/a.json", b'{"a": 2}', etag=etag)
    puts = [headers for operation, _, headers in sent if operation == "PutObject"]
    assert len(puts) == 2
    for headers in puts:
        assert "x-amz-checksum-crc32" in headers
        assert headers["x-amz-content-sha256"] not in ("UNSIGNED-PAYLOAD", hashlib.sha256(b"").hexdigest())
    # The server keeps the CRC-32 and returns it, so botocore checks what get() reads against it.
    response = s3_env.client().get_object(Bucket=s3_env.bucket, Key=f"{storage.prefix}/records/a.json")
    assert "x-amz-checksum-crc32" in response["ResponseMetadata"]["HTTPHeaders"]
    assert storage.get("records/a.json")[0] == b'{"a": 2}'


@pytest.mark.parametrize("path_id", PATHS)
def test_bytes_damaged_on_the_way_are_refused_by_the_server_and_nothing_is_left(s3_env, s3_url, tmp_path, path_id):
    """The damage happens after our checksum was taken: only the server's check of it can see it."""
    size, part_checksum = PATHS[path_id]
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=1, part_checksum=part_checksum)
    path, sha = _random_file(tmp_path / "f.bin", size)
    completes: list[int] = []
    storage._client.meta.events.register("before-call.s3.CompleteMultipartUpload", lambda **_: completes.append(1))
    damaged: list[list[str]] = []

    def damage(request, **_):
        if parse_qs(urlsplit(request.url).query).get("partNumber") == ["1"] or "/blobs/x" not in request.url:
            return  # the first part (and the probe's, if any) goes through intact, the second is damaged
        body = request.body.read() if hasattr(request.body, "read") else bytes(request.body)
        request.body = body[:-1] + bytes([body[-1] ^ 0xFF])  # same length, one byte flipped
        damaged.append([name.lower() for name in request.headers if name.lower() in ("content-md5", "x-amz-checksum-crc32")])

    for operation in ("UploadPart", "PutObject"):
        storage._parts_client.meta.events.register(f"before-send.s3.{operation}", damage)
    with pytest.raises(IntegrityError, match=r"damaged bytes \(BadDigest\)"):
        storage.upload_file("blobs/x", path, sha256=sha)
    # What refused the damaged bytes: the one checksum they carried.
    assert damaged == [["x-amz-checksum-crc32" if path_id == "multipart" else "content-md5"]]
    assert completes == []  # refused at the part, not found afterwards
    assert _open_uploads(s3_env, storage.prefix) == []
    assert not storage.exists("blobs/x")


def test_a_composite_crc32_that_disagrees_with_the_parts_sent_is_refused_and_the_object_deleted(s3_env, s3_url, tmp_path):
    """The server checked each part; the composite it returns at the end is checked against the
    parts' CRC-32s as sent. Here its answer is altered on arrival, the only way to see a real server
    disagree about parts it accepted."""
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=2)
    path, sha = _random_file(tmp_path / "f.bin", 11 * MiB)

    def disagree(parsed, **_):
        assert parsed["ChecksumCRC32"].endswith("-3")  # what the server returns
        parsed["ChecksumCRC32"] = "AAAAAA==-3"

    storage._client.meta.events.register("after-call.s3.CompleteMultipartUpload", disagree)
    with pytest.raises(IntegrityError, match=r"has CRC-32 AAAAAA==-3, expected \S+-3; it was deleted"):
        storage.upload_file("blobs/x", path, sha256=sha)
    assert not storage.exists("blobs/x")
    assert _open_uploads(s3_env, storage.prefix) == []
