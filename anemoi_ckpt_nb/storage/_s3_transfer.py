"""Parallel multipart upload and ranged download for the S3 backend.

Uploads read the file once, in order: each part's bytes feed the file's
sha256 and the part's MD5, which is sent as ``Content-MD5`` so the server
rejects a damaged part. The upload is completed (and so becomes visible) only
when the whole file hashed to the expected sha256; on any failure or
interruption it is aborted and nothing is left. Downloads fetch ranges in
parallel but yield them in order, so the caller's ``.part`` file always holds
a prefix of the object and can be resumed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.core.errors import StorageError
from anemoi_ckpt_nb.storage._transfer import upload_mismatch
from anemoi_ckpt_nb.storage.base import ProgressCallback

_MD5_ETAG = re.compile(r'^"?[0-9a-f]{32}(-\d+)?"?$')
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Target:
    """Where a transfer goes, and how."""

    client: Any
    bucket: str
    key: str  # the full S3 key, prefix included
    url: str  # storage URL, for errors
    name: str  # the storage key, for errors
    part_size: int
    workers: int


def _md5_header(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def upload(
    t: Target, path: Path, *, size: int, sha256: str, progress: ProgressCallback | None
) -> str:
    """Upload ``path`` to the target; return the ETag the server should report.

    Raises:
        IntegrityError: the file does not hash to ``sha256``; nothing is stored.
    """
    part_size = max(t.part_size, -(-size // MAX_PARTS))
    if size <= part_size:
        return _upload_single(t, path, sha256=sha256, progress=progress)
    upload_id = t.client.create_multipart_upload(
        Bucket=t.bucket, Key=t.key, Metadata={"sha256": sha256}
    )["UploadId"]
    completed = False
    try:
        parts, md5s, got = _upload_parts(t, path, upload_id, part_size, progress)
        if got != sha256:
            raise upload_mismatch(t.url, t.name, path, got, sha256)
        t.client.complete_multipart_upload(
            Bucket=t.bucket, Key=t.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        completed = True
    finally:
        if not completed:
            try:
                t.client.abort_multipart_upload(Bucket=t.bucket, Key=t.key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
    return hashlib.md5(b"".join(md5s)).hexdigest() + f"-{len(md5s)}"


def _upload_single(
    t: Target, path: Path, *, sha256: str, progress: ProgressCallback | None
) -> str:
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise upload_mismatch(t.url, t.name, path, got, sha256)
    md5 = hashlib.md5(data)
    t.client.put_object(
        Bucket=t.bucket,
        Key=t.key,
        Body=data,
        ContentMD5=_md5_header(md5.digest()),
        Metadata={"sha256": sha256},
    )
    if progress is not None:
        progress(len(data))
    return md5.hexdigest()


def _upload_parts(
    t: Target, path: Path, upload_id: str, part_size: int, progress: ProgressCallback | None
) -> tuple[list[dict], list[bytes], str]:
    def send(number: int, chunk: bytes, md5: bytes) -> tuple[dict, int]:
        response = t.client.upload_part(
            Bucket=t.bucket,
            Key=t.key,
            UploadId=upload_id,
            PartNumber=number,
            Body=chunk,
            ContentMD5=_md5_header(md5),
        )
        return {"PartNumber": number, "ETag": response["ETag"]}, len(chunk)

    def collect(future: Future) -> None:
        part, nbytes = future.result()
        parts.append(part)
        if progress is not None:
            progress(nbytes)  # from this thread, so callers need no locking

    digest = hashlib.sha256()
    parts: list[dict] = []
    md5s: list[bytes] = []
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=t.workers, thread_name_prefix="s3-upload")
    try:
        with open(path, "rb") as f:
            while chunk := f.read(part_size):
                digest.update(chunk)
                md5s.append(hashlib.md5(chunk).digest())
                pending.append(pool.submit(send, len(md5s), chunk, md5s[-1]))
                # Bounded: at most `workers` parts in memory while the next is read.
                while len(pending) >= t.workers:
                    collect(pending.popleft())
        while pending:
            collect(pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return parts, md5s, digest.hexdigest()


def etag_matches(reported: str, expected: str) -> bool:
    """Whether the server's ETag confirms our bytes; True when it is not an MD5 ETag
    (e.g. SSE-KMS on AWS), since each part's Content-MD5 was already checked."""
    if not _MD5_ETAG.match(reported):
        return True
    return reported.strip('"') == expected


def read_ranges(t: Target, *, etag: str, start: int, size: int) -> Iterator[bytes]:
    """Yield the object's bytes from ``start`` to ``size`` in order, fetching
    up to ``workers`` ranges at once. ``If-Match`` makes a change of the object
    during the download fail instead of mixing two versions."""

    def fetch(offset: int) -> bytes:
        end = min(offset + t.part_size, size) - 1
        response = t.client.get_object(
            Bucket=t.bucket, Key=t.key, Range=f"bytes={offset}-{end}", IfMatch=etag
        )
        data = response["Body"].read()
        if len(data) != end - offset + 1:
            raise StorageError(
                t.url, t.name, f"short read: got {len(data)} bytes of range {offset}-{end}"
            )
        return data

    offsets = iter(range(start, size, t.part_size))
    pool = ThreadPoolExecutor(max_workers=t.workers, thread_name_prefix="s3-download")
    try:
        pending = deque(pool.submit(fetch, o) for o in islice(offsets, t.workers))
        while pending:
            data = pending.popleft().result()
            if (offset := next(offsets, None)) is not None:
                pending.append(pool.submit(fetch, offset))
            yield data
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
