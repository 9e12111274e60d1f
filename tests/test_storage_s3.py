"""What only the S3 backend does: conditional writes on the real server, AWS
configuration, and the errors users see for bad credentials, lost endpoints,
missing buckets and offline mode."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal

import botocore.exceptions
import pytest
from s3server import free_ports

from anemoi_ckpt_nb.errors import (
    BucketNotFoundError,
    IntegrityError,
    OfflineError,
    StorageAccessError,
    StorageUnreachableError,
)
from anemoi_ckpt_nb.storage import open_storage
from anemoi_ckpt_nb.storage.s3 import S3Storage

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def _status(call) -> int:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        call()
    return err.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_seaweedfs_honours_conditional_writes(s3_env):
    """The server itself, through plain boto3: what the backend relies on."""
    client, bucket = s3_env.client(), s3_env.bucket

    def put(key: str, body: bytes, **condition):
        return client.put_object(Bucket=bucket, Key=key, Body=body, **condition)

    first = put("cond/a", b"1", IfNoneMatch="*")["ETag"]
    assert _status(lambda: put("cond/a", b"2", IfNoneMatch="*")) == 412
    second = put("cond/a", b"3", IfMatch=first)["ETag"]
    assert _status(lambda: put("cond/a", b"4", IfMatch=first)) == 412
    # AWS answers 404 here; SeaweedFS 412. The backend treats both as a conflict.
    assert _status(lambda: put("cond/none", b"5", IfMatch=first)) in (404, 412)
    assert client.get_object(Bucket=bucket, Key="cond/a")["ETag"] == second
    upload = client.create_multipart_upload(Bucket=bucket, Key="cond/a")["UploadId"]
    part = client.upload_part(Bucket=bucket, Key="cond/a", UploadId=upload, PartNumber=1, Body=b"x")
    complete = lambda: client.complete_multipart_upload(  # noqa: E731
        Bucket=bucket, Key="cond/a", UploadId=upload, IfNoneMatch="*",
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert _status(complete) == 412
    client.abort_multipart_upload(Bucket=bucket, Key="cond/a", UploadId=upload)
    assert client.get_object(Bucket=bucket, Key="cond/a")["Body"].read() == b"3"


def test_interrupted_multipart_upload_is_aborted(s3_url, s3_env, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(11 * MiB))
    storage = open_storage(s3_url, part_size=5 * MiB, max_concurrency=1)

    class Stop(BaseException):
        pass

    def stop(_nbytes):
        raise Stop

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(Stop):
        storage.upload_file("blobs/x", path, sha256=sha, progress=stop)
    uploads = s3_env.client().list_multipart_uploads(Bucket=s3_env.bucket, Prefix=storage.prefix)
    assert uploads.get("Uploads", []) == []
    assert not storage.exists("blobs/x")


def test_download_refuses_an_object_declaring_another_hash(s3_url, tmp_path):
    storage = open_storage(s3_url)
    path = tmp_path / "f.bin"
    path.write_bytes(b"content")
    storage.upload_file("blobs/x", path, sha256=hashlib.sha256(b"content").hexdigest())
    fetched = []
    with pytest.raises(IntegrityError, match="declares sha256"):
        storage.download_file("blobs/x", tmp_path / "out", sha256="0" * 64, progress=fetched.append)
    assert fetched == []  # refused before any byte was fetched
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_give_one_clear_error(s3_url, monkeypatch, variable):
    monkeypatch.setenv(variable, "wrong-value")
    storage = open_storage(s3_url)
    for call in (lambda: storage.get("k"), lambda: storage.stat("k"), lambda: list(storage.list())):
        with pytest.raises(StorageAccessError) as err:
            call()
        message = str(err.value)
        assert s3_url in message
        assert "AWS_PROFILE" in message and "AWS_ACCESS_KEY_ID" in message
        assert "\n" not in message
        assert err.value.__suppress_context__  # no botocore traceback chained under it


def test_missing_credentials_give_one_clear_error(s3_url, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageAccessError, match="no usable S3 credentials.*AWS_ACCESS_KEY_ID"):
        open_storage(s3_url).get("k")


def test_unknown_profile_gives_one_clear_error(s3_url):
    with pytest.raises(StorageAccessError, match="AWS_PROFILE"):
        open_storage(s3_url, profile="no-such-profile").get("k")


def test_unreachable_endpoint_gives_one_clear_error(s3_url):
    (port,) = free_ports(1)  # nothing listens there
    endpoint = f"http://127.0.0.1:{port}"
    storage = open_storage(s3_url, endpoint_url=endpoint)
    for call in (lambda: storage.get("k"), lambda: storage.put("k", b"x", if_absent=True)):
        with pytest.raises(StorageUnreachableError) as err:
            call()
        assert endpoint in str(err.value)
        assert "AWS_ENDPOINT_URL" in str(err.value)


def test_a_stopped_site_is_unreachable_until_it_returns(seaweed_factory, monkeypatch):
    site = seaweed_factory("site-b", bucket="site-b")
    for name, value in site.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint comes from the argument
    storage = open_storage("s3://site-b/cat", endpoint_url=site.endpoint_url)
    storage.put("records/a.json", b"{}", if_absent=True)
    site.stop()
    with pytest.raises(StorageUnreachableError):
        storage.get("records/a.json")
    site.start()
    assert storage.get("records/a.json")[0] == b"{}"


def test_a_server_stop_has_to_kill_leaves_no_grpc_socket_in_tmp(seaweed_factory):
    """weed puts its gRPC sockets in /tmp whatever TMPDIR says, and a killed weed leaves them there
    (as one that does not stop in time is killed): stop() removes the server's own."""
    site = seaweed_factory("site-c")
    sockets = site.grpc_sockets()
    assert any(path.is_socket() for path in sockets), f"weed made none of {sockets}: s3server.py looks elsewhere"
    os.killpg(site.process.pid, signal.SIGSTOP)  # frozen: SIGTERM cannot stop it, so stop() kills it
    site.stop(timeout=1)
    assert [path for path in sockets if path.exists() or path.is_symlink()] == []


def test_missing_bucket_is_named(s3_env, tmp_path):
    storage = open_storage("s3://no-such-bucket/cat")
    path = tmp_path / "f"
    path.write_bytes(b"x")
    calls = [
        lambda: storage.get("k"),
        lambda: storage.stat("k"),
        lambda: storage.put("k", b"x", if_absent=True),
        lambda: list(storage.list()),
        lambda: storage.upload_file("k", path, sha256=hashlib.sha256(b"x").hexdigest()),
    ]
    for call in calls:
        with pytest.raises(BucketNotFoundError, match="'no-such-bucket' does not exist"):
            call()


def test_offline_mode_refuses_every_operation_without_network(s3_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ANEMOI_CKPT_OFFLINE", "1")
    (port,) = free_ports(1)  # were the network touched, this would be "unreachable" instead
    storage = open_storage(s3_url, endpoint_url=f"http://127.0.0.1:{port}")
    path = tmp_path / "f"
    path.write_bytes(b"x")
    calls = [
        lambda: storage.get("k"),
        lambda: storage.put("k", b"x"),
        lambda: storage.replace("k", b"x", etag="e"),
        lambda: storage.stat("k"),
        lambda: storage.delete("k"),
        lambda: list(storage.list()),
        lambda: storage.upload_file("k", path, sha256="0" * 64),
        lambda: storage.download_file("k", tmp_path / "d", sha256="0" * 64),
    ]
    for call in calls:
        with pytest.raises(OfflineError, match="ANEMOI_CKPT_OFFLINE"):
            call()


def test_profile_and_endpoint_arguments(s3_env, monkeypatch, tmp_path):
    """A site configured by profile, as another site would be: no AWS_* keys in the environment."""
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[site-a]\naws_access_key_id = {s3_env.access_key}\n"
        f"aws_secret_access_key = {s3_env.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    storage = open_storage(
        f"s3://{s3_env.bucket}/profiled", profile="site-a", endpoint_url=s3_env.endpoint_url
    )
    etag = storage.put("k", b"v")
    assert storage.get("k") == (b"v", etag)
    storage.delete("k")


def test_s3_storage_survives_pickling(s3_url):
    storage = open_storage(s3_url, part_size=6 * MiB)
    storage.put("k", b"v")
    copy = pickle.loads(pickle.dumps(storage))
    assert isinstance(copy, S3Storage)
    assert (copy.url, copy.part_size) == (storage.url, 6 * MiB)
    assert copy.get("k")[0] == b"v"
