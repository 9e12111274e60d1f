"""S3 (or any S3-compatible server) through boto3, the only module that imports it.

Configuration is the ordinary AWS one, read by boto3 itself: ``AWS_PROFILE``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``~/.aws/config`` and
``AWS_ENDPOINT_URL`` for a non-AWS server. ``endpoint_url`` and ``profile``
arguments override them for one storage (one site among several).

Create-only is ``PutObject`` with ``If-None-Match: *`` and compare-and-swap
is ``PutObject`` with ``If-Match: <etag>``; 412, 409 and a 404 on a
conditional write are conflicts. The etag is the server's ETag, quoted as
returned. ``ANEMOI_CKPT_OFFLINE=1`` refuses every operation before any request.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from anemoi_ckpt_nb.errors import IntegrityError, ObjectNotFoundError, StorageURLError
from anemoi_ckpt_nb.storage import _s3_checksums as checksums
from anemoi_ckpt_nb.storage import _s3_transfer as transfer
from anemoi_ckpt_nb.storage._keys import check_key
from anemoi_ckpt_nb.storage._s3_errors import bucket_missing, refuse_offline, translate
from anemoi_ckpt_nb.storage._transfer import download_resumable
from anemoi_ckpt_nb.storage.base import ObjectInfo, Orphan, ProgressCallback, Storage

MiB = 1024 * 1024


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix``.

    Args:
        bucket: The bucket; it must exist.
        prefix: Folder inside the bucket ("" for its root).
        endpoint_url: Server URL; default: ``AWS_ENDPOINT_URL`` or AWS.
        profile: AWS profile name; default: ``AWS_PROFILE`` or the default chain.
        region: Region name; default: from the AWS configuration.
        part_size: Bytes per multipart part and per download range (>= 5 MiB).
        max_concurrency: Parts or ranges transferred at once.
        connect_timeout: Seconds before an unreachable endpoint is reported.
        max_attempts: Tries per request (default ``AWS_MAX_ATTEMPTS`` or 2,
            so that an unreachable endpoint fails fast).
        part_checksum: What the parts of a multipart upload carry for the server to check:
            ``"auto"`` their CRC-32 where a probe proved that the server checks it (see
            :mod:`._s3_checksums`), else their MD5; ``"md5"`` always their MD5 (``Content-MD5``,
            which every S3 server checks), with no probe.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        profile: str | None = None,
        region: str | None = None,
        part_size: int = 16 * MiB,
        max_concurrency: int = 4,
        connect_timeout: float = 5.0,
        max_attempts: int | None = None,
        part_checksum: str = "auto",
    ) -> None:
        if part_checksum not in ("auto", "md5"):
            raise StorageURLError(
                f"s3://{bucket}/{prefix}".rstrip("/"), f"part_checksum={part_checksum!r}", hint='use "auto" or "md5"'
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint_url = endpoint_url
        self.profile = profile
        self.region = region
        self.part_size = max(int(part_size), 5 * MiB)
        self.max_concurrency = max(1, int(max_concurrency))
        self.connect_timeout = connect_timeout
        self.max_attempts = max_attempts
        self.part_checksum = part_checksum
        self._client_obj: Any = None
        self._parts_client_obj: Any = None
        self._session: Any = None
        self._client_lock = threading.Lock()
        self._bucket_ok = False

    def __repr__(self) -> str:
        return (
            f"S3Storage({self.url!r}, endpoint_url={self.endpoint_url!r}, "
            f"profile={self.profile!r})"
        )

    def __getstate__(self) -> dict:
        # The boto3 client and the lock do not pickle; a copy makes its own.
        state = dict(self.__dict__)
        state.update(_client_obj=None, _parts_client_obj=None, _session=None, _client_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._client_lock = threading.Lock()

    # --- plumbing -----------------------------------------------------------------

    @property
    def _client(self) -> Any:
        """The client of every request but the file transfers' parts: payloads signed (SigV4)."""
        with self._client_lock:
            if self._client_obj is None:
                self._client_obj = self._new_client()
            return self._client_obj

    @property
    def _parts_client(self) -> Any:
        """The client that sends a file's bytes (``UploadPart``, a small file's ``PutObject``).

        Each of those requests carries the part's ``Content-MD5`` or, where the server is proven
        to check it, its ``x-amz-checksum-crc32``; SigV4 signs either header, so the payload is
        not hashed again for the signature: botocore does the same on https, and on http it would
        sha256 every byte once more. See :mod:`._s3_transfer`.
        """
        with self._client_lock:
            if self._parts_client_obj is None:
                self._parts_client_obj = self._new_client(s3={"payload_signing_enabled": False})
            return self._parts_client_obj

    def _new_client(self, **config: Any) -> Any:
        attempts = self.max_attempts or int(os.environ.get("AWS_MAX_ATTEMPTS", "2"))
        settings = botocore.config.Config(
            connect_timeout=self.connect_timeout,
            read_timeout=60,
            retries={"max_attempts": attempts, "mode": "standard"},
            max_pool_connections=max(10, 2 * self.max_concurrency),
            # A checksum only where we ask for one: the parts send their own (Content-MD5 or
            # CRC-32), and botocore's default CRC-32 on top of an MD5 is a third pass over every
            # byte (docs/benchmarks.md). Small documents ask for CRC-32 themselves (put, replace).
            request_checksum_calculation="when_required",
            **config,
        )
        if self._session is None:  # one for both clients: it loads the service model once
            self._session = boto3.session.Session(profile_name=self.profile)
        return self._session.client("s3", endpoint_url=self.endpoint_url, region_name=self.region, config=settings)

    def _endpoint(self) -> str:
        if self._client_obj is not None:
            return self._client_obj.meta.endpoint_url
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    @contextlib.contextmanager
    def _call(self, key: str | None, *, conflict: str | None = None) -> Iterator[None]:
        """Refuse when offline, then run the block with botocore errors translated.

        ``conflict`` marks a conditional request and says what a 412/409/404 means.
        """
        refuse_offline(self.url, key)
        try:
            yield
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = translate(
                exc, url=self.url, key=key, endpoint=self._endpoint(), conflict=conflict
            )
            if error is None:
                raise
            raise error from None

    def _full(self, key: str) -> str:
        check_key(self.url, key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _target(self, key: str, *, upload: bool = False, part_checksum: str = "md5") -> transfer.Target:
        return transfer.Target(
            client=self._client,
            parts_client=self._parts_client if upload else None,
            bucket=self.bucket,
            key=self._full(key),
            url=self.url,
            name=key,
            part_size=self.part_size,
            workers=self.max_concurrency,
            part_checksum=part_checksum,
        )

    def _part_checksum(self) -> str:
        """What a multipart upload's parts carry: "crc32" where the server is proven to check it."""
        if self.part_checksum == "md5":
            return "md5"
        return checksums.part_checksum(
            client=self._client, parts_client=self._parts_client, bucket=self.bucket, prefix=self.prefix, url=self.url
        ).checksum

    def _head(self, key: str) -> dict:
        """HEAD an object; a bare 404 is checked against the bucket once."""
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise
        if not self._bucket_ok:
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    raise bucket_missing(self.url) from None
                raise
            self._bucket_ok = True
        raise ObjectNotFoundError(self.url, key, "no such object")

    # --- the contract -------------------------------------------------------------

    def get(self, key: str) -> tuple[bytes, str]:
        with self._call(key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
            return response["Body"].read(), response["ETag"]

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        conflict = "already exists; create-only write refused" if if_absent else None
        with self._call(key, conflict=conflict):
            response = self._client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=bytes(data), ChecksumAlgorithm="CRC32", **extra
            )
            return response["ETag"]

    def replace(self, key: str, data: bytes, *, etag: str) -> str:
        with self._call(key, conflict="changed since it was read"):
            response = self._client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=bytes(data), ChecksumAlgorithm="CRC32", IfMatch=etag
            )
            return response["ETag"]

    def stat(self, key: str) -> ObjectInfo:
        with self._call(key):
            head = self._head(key)
            return ObjectInfo(key=key, size=head["ContentLength"], etag=head["ETag"])

    def delete(self, key: str) -> None:
        with self._call(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        with self._call(None):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            found = [
                ObjectInfo(
                    key=item["Key"][len(base) :], size=item["Size"], etag=item["ETag"],
                    modified=item["LastModified"].timestamp() if item.get("LastModified") else None,
                )
                for page in pages
                for item in page.get("Contents", ())
                if item["Key"].startswith(base + prefix)
            ]
        # Filtered and sorted here because SeaweedFS normalises a prefix ("a//" lists "a/")
        # and lists folder by folder ("a/1" before "a.txt"), unlike AWS; the contract
        # promises keys that start with the prefix, in key order.
        found.sort(key=lambda info: info.key)
        yield from found

    def orphans(self, *, min_age: float) -> Iterator[Orphan]:
        """Multipart uploads under the prefix with no new part for ``min_age`` seconds.

        A live upload adds a part every few seconds; nothing else tells a live upload from one
        whose writer was killed, so the age is the rule (``rclone cleanup`` waits a day too).
        """
        import datetime

        base = f"{self.prefix}/" if self.prefix else ""
        now = datetime.datetime.now(datetime.timezone.utc)
        with self._call(None):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=base)
            uploads = [u for page in pages for u in page.get("Uploads", ()) if u["Key"].startswith(base)]
        for upload in uploads:
            key, upload_id, last, size = upload["Key"], upload["UploadId"], upload["Initiated"], 0
            with contextlib.suppress(botocore.exceptions.ClientError):  # then: its start and no size
                parts = self._client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id).get("Parts", ())
                size = sum(part.get("Size", 0) for part in parts)
                last = max([last, *(part["LastModified"] for part in parts)])
            age = (now - last).total_seconds()
            if age >= min_age:
                url = f"s3://{self.bucket}/{key}"
                yield Orphan(url=url, kind="multipart upload", size=size, age=max(0.0, age), handle=(key, upload_id))

    def remove_orphan(self, orphan: Orphan) -> bool:
        key, upload_id = orphan.handle
        if not key.startswith(f"{self.prefix}/" if self.prefix else ""):
            return False
        refuse_offline(self.url, None)
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "NotFound", "404"):
                return False  # completed or aborted meanwhile
            with self._call(None):  # any other error, translated
                raise
        return True

    def upload_file(
        self,
        key: str,
        path: str | Path,
        *,
        sha256: str,
        progress: ProgressCallback | None = None,
    ) -> ObjectInfo:
        path = Path(path)
        size = path.stat().st_size
        with self._call(key):
            try:
                head = self._head(key)
            except ObjectNotFoundError:
                head = None
            if head and head["ContentLength"] == size and head["Metadata"].get("sha256") == sha256:
                return ObjectInfo(key=key, size=size, etag=head["ETag"])  # stored and verified
            # Only a multipart upload's parts may carry a CRC-32: a single PutObject of at most
            # one part's size keeps its Content-MD5, whose cost there is a few milliseconds.
            part_checksum = self._part_checksum() if size > self.part_size else "md5"
            target = self._target(key, upload=True, part_checksum=part_checksum)
            sent = transfer.upload(target, path, size=size, sha256=sha256, progress=progress)
            head = self._head(key)
            wrong = f"size {head['ContentLength']}, expected {size}" if head["ContentLength"] != size else None
            if wrong := wrong or sent.disagreement(head["ETag"]):
                self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
                raise IntegrityError(
                    self.url, key, f"the stored object has {wrong}; it was deleted", hint="retry the upload"
                )
            return ObjectInfo(key=key, size=size, etag=head["ETag"])

    def download_file(
        self,
        key: str,
        dest: str | Path,
        *,
        sha256: str,
        progress: ProgressCallback | None = None,
    ) -> Path:
        with self._call(key, conflict="changed during the download; retry it"):
            head = self._head(key)
            declared = head.get("Metadata", {}).get("sha256")
            if declared and declared != sha256:
                raise IntegrityError(
                    self.url,
                    key,
                    f"the stored object declares sha256 {declared}, expected {sha256}; "
                    f"{dest} was not written",
                    hint="the expected hash is wrong or the key holds another file",
                )
            target = self._target(key)
            size = head["ContentLength"]
            return download_resumable(
                url=self.url,
                key=key,
                dest=dest,
                sha256=sha256,
                size=size,
                read_from=lambda offset: transfer.read_ranges(
                    target, etag=head["ETag"], start=offset, size=size
                ),
                progress=progress,
            )
