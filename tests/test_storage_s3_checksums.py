"""What protects the bytes of an S3 upload, on a real SeaweedFS server: each request that carries a
file's bytes has their ``Content-MD5`` (signed, and checked by the server) and no other hash of them,
a part damaged on the way is refused by the server and the upload aborted, and small documents keep
botocore's CRC-32 and a signed payload (docs/storage.md, "What checks the bytes")."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import parse_qs, urlsplit

import pytest

from anemoi_ckpt_nb.errors import IntegrityError
from anemoi_ckpt_nb.storage import open_storage

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def _requests(storage) -> list[tuple[str, dict[str, str]]]:
    """(operation, headers) of every request the storage's two clients send, as sent."""
    sent: list[tuple[str, dict[str, str]]] = []

    def note(request, event_name: str, **_):
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((event_name.rsplit(".", 1)[-1], headers))

    for client in (storage._client, storage._parts_client):
        client.meta.events.register("before-send.s3", note)
    return sent


def _open_uploads(server, prefix: str) -> list[dict]:
    return server.client().list_multipart_uploads(Bucket=server.bucket, Prefix=prefix).get("Uploads", [])


@pytest.mark.parametrize("size", [3 * MiB, 11 * MiB], ids=["one-put", "multipart"])
def test_a_files_bytes_carry_their_md5_and_no_other_hash(s3_url, tmp_path, size):
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=2)
    sent = _requests(storage)
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))
    storage.upload_file("blobs/x", path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    carrying = [headers for operation, headers in sent if operation in ("UploadPart", "PutObject")]
    assert len(carrying) == (1 if size < 5 * MiB else 3)
    for headers in carrying:
        assert "content-md5" in headers
        assert not [name for name in headers if name.startswith("x-amz-checksum-")]  # no CRC-32 beside it
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"  # no sha256 of the payload either
        assert "content-md5" in headers["authorization"]  # the MD5 is signed: the bytes are bound to the request


def test_small_documents_keep_their_crc32_and_signed_payload(s3_url, s3_env):
    storage = open_storage(s3_url)
    sent = _requests(storage)
    etag = storage.put("records/a.json", b'{"a": 1}', if_absent=True)
    storage.replace("records/a.json", b'{"a": 2}', etag=etag)
    puts = [headers for operation, headers in sent if operation == "PutObject"]
    assert len(puts) == 2
    for headers in puts:
        assert "x-amz-checksum-crc32" in headers
        assert headers["x-amz-content-sha256"] not in ("UNSIGNED-PAYLOAD", hashlib.sha256(b"").hexdigest())
    # The server keeps the CRC-32 and returns it, so botocore checks what get() reads against it.
    response = s3_env.client().get_object(Bucket=s3_env.bucket, Key=f"{storage.prefix}/records/a.json")
    assert "x-amz-checksum-crc32" in response["ResponseMetadata"]["HTTPHeaders"]
    assert storage.get("records/a.json")[0] == b'{"a": 2}'


@pytest.mark.parametrize("size", [3 * MiB, 11 * MiB], ids=["one-put", "multipart"])
def test_bytes_damaged_on_the_way_are_refused_by_the_server_and_nothing_is_left(s3_env, s3_url, tmp_path, size):
    """The damage happens after our MD5 was taken: only the server's check of Content-MD5 can see it."""
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=1)
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))
    completes: list[int] = []
    storage._client.meta.events.register("before-call.s3.CompleteMultipartUpload", lambda **_: completes.append(1))

    def damage(request, **_):
        if parse_qs(urlsplit(request.url).query).get("partNumber") == ["1"]:
            return  # the first part goes through intact, the second is damaged
        body = request.body.read() if hasattr(request.body, "read") else bytes(request.body)
        request.body = body[:-1] + bytes([body[-1] ^ 0xFF])  # same length, one byte flipped

    for operation in ("UploadPart", "PutObject"):
        storage._parts_client.meta.events.register(f"before-send.s3.{operation}", damage)
    with pytest.raises(IntegrityError, match=r"damaged bytes \(BadDigest\)"):
        storage.upload_file("blobs/x", path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert completes == []  # refused at the part, not found afterwards from the ETag
    assert _open_uploads(s3_env, storage.prefix) == []
    assert not storage.exists("blobs/x")
