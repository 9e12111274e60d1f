"""The probe that decides whether a multipart upload's parts carry their CRC-32 instead of their MD5,
on the real answers of a real SeaweedFS server (storage/_s3_checksums.py): the server refuses a part
with a wrong CRC-32, so the parts carry their CRC-32; a server that accepts it (the same server, sent
the right CRC-32 by a hook on the request) leaves the parts their MD5; credentials that may not write leave the parts
their MD5, with the reason; the probe leaves nothing behind either way, and runs once per endpoint."""

from __future__ import annotations

import hashlib
import os
import zlib

import pytest

from anemoi_ckpt_nb.errors import StorageAccessError
from anemoi_ckpt_nb.storage import _s3_checksums as checksums
from anemoi_ckpt_nb.storage import open_storage
from anemoi_ckpt_nb.storage._s3_transfer import crc32_header

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def _left_on(server, prefix: str) -> tuple[list, list]:
    """The objects and the multipart uploads under ``prefix``, with the admin's credentials."""
    client = server.client()
    objects = client.list_objects_v2(Bucket=server.bucket, Prefix=prefix).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=server.bucket, Prefix=prefix).get("Uploads", [])
    return objects, uploads


def _probe(storage) -> tuple[checksums.Verdict, bool]:
    return checksums.probe(
        client=storage._client, parts_client=storage._parts_client, bucket=storage.bucket,
        key=f"{storage.prefix}/{checksums.PROBE_FOLDER}/test", url=storage.url,
    )


def test_seaweedfs_refuses_a_part_with_a_wrong_crc32_so_parts_carry_their_crc32(s3_env, s3_url):
    storage = open_storage(s3_url)
    verdict, proven = _probe(storage)
    assert (verdict.checksum, proven) == ("crc32", True)
    assert "refused a part with a wrong CRC-32 (BadDigest)" in verdict.reason
    assert _left_on(s3_env, storage.prefix) == ([], [])


def test_credentials_that_may_not_write_leave_the_parts_their_md5_and_say_why(s3_env, s3_url, monkeypatch):
    for name, value in s3_env.env(readonly=True).items():
        monkeypatch.setenv(name, value)
    storage = open_storage(s3_url)
    verdict, proven = _probe(storage)
    assert (verdict.checksum, proven) == ("md5", False)  # not proven: kept for no one
    assert verdict.reason.startswith("the probe could not start a multipart upload (AccessDenied")
    assert _left_on(s3_env, storage.prefix) == ([], [])
    with pytest.raises(StorageAccessError):  # and the upload itself says what is wrong, as before
        storage.put("records/a.json", b"{}")


def test_the_verdict_is_proven_once_per_endpoint_and_kept(s3_env, s3_url, tmp_path, monkeypatch):
    monkeypatch.setattr(checksums, "_verdicts", {})  # as in a new process
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(6 * MiB))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    probes: list[str] = []
    for n in range(2):  # two storages on the same endpoint, as a catalogue and a site may be
        storage = open_storage(f"{s3_url}/{n}", part_size=5 * MiB)

        def note(request, **_):
            if f"/{checksums.PROBE_FOLDER}/" in request.url:
                probes.append(request.method)

        storage._client.meta.events.register("before-send.s3", note)
        storage._parts_client.meta.events.register("before-send.s3", note)
        storage.upload_file("blobs/x", path, sha256=sha)
    assert probes == ["POST", "PUT", "DELETE"]  # create, the part, abort: once
    assert [(endpoint, v.checksum) for endpoint, v in checksums._verdicts.items()] == [(s3_env.endpoint_url, "crc32")]
    objects, uploads = _left_on(s3_env, s3_url.split("/", 3)[3])
    assert sorted(o["Key"].rsplit("/", 3)[-3] for o in objects) == ["0", "1"] and uploads == []


def test_a_server_that_accepts_a_wrong_crc32_leaves_the_parts_their_md5(s3_env, s3_url):
    """The server here checks the CRC-32, so the part is made to carry its right CRC-32 on its way
    out (the server answers, really, as one that ignores the header would): accepted, so MD5."""
    storage = open_storage(s3_url)
    sent: list[str] = []

    def right_crc32(params, **_):
        params["ChecksumCRC32"] = crc32_header(zlib.crc32(params["Body"]))
        sent.append(params["ChecksumCRC32"])

    storage._parts_client.meta.events.register("provide-client-params.s3.UploadPart", right_crc32)
    verdict, proven = _probe(storage)
    assert sent, "the probe sent no part"
    assert (verdict.checksum, proven) == ("md5", True)  # proven: kept for the endpoint
    assert verdict.reason == "the server accepted a part with a wrong CRC-32: it does not check it"
    assert _left_on(s3_env, storage.prefix) == ([], [])  # the accepted part's upload aborted too
