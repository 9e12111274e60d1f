"""Parallel multipart upload and ranged download for the S3 backend.

Uploads read the file once, in order: each part's bytes feed the file's
sha256 and the part's own checksum, which the server checks so that it
rejects a damaged part: its CRC-32 (``x-amz-checksum-crc32``) where the server
was proven to check that (:mod:`._s3_checksums`), else its MD5
(``Content-MD5``, which every S3 server checks). The upload is completed (and
so becomes visible) only when the whole file hashed to the expected sha256; on
any failure or interruption it is aborted and nothing is left.

Every byte is thus read once and hashed twice here, and by nothing else: the
parts go through the storage's parts client, which adds no checksum of its own
(``request_checksum_calculation="when_required"``) and does not sha256 the
payload for the signature (``payload_signing_enabled=False``; the signed
checksum header already binds the bytes to the request). On a machine
whose CPU the S3 server shares, each extra pass over the bytes is time, and
MD5 is the slowest of them (docs/benchmarks.md, "The CLI without torch"). Downloads fetch ranges in
parallel but yield them in order, so the caller's ``.part`` file always holds
a prefix of the object and can be resumed.

:func:`multipart` (create, then abort on any failure) and :func:`in_order`
(parts in parallel, stopped at the first failure) serve both uploads here and
the server-side copies of :mod:`.copy`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from anemoi_ckpt_nb.errors import StorageError
from anemoi_ckpt_nb.storage._transfer import upload_mismatch
from anemoi_ckpt_nb.storage.base import ProgressCallback
from anemoi_ckpt_nb.storage.crc import crc32

LOG = logging.getLogger(__name__)
_MD5_ETAG = re.compile(r'^"?[0-9a-f]{32}(-\d+)?"?$')
MAX_PARTS = 10_000
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """Where a transfer goes, and how."""

    client: Any  # create, complete, abort, ranged reads
    parts_client: Any  # the requests that carry a file's bytes, each with its own checksum
    bucket: str
    key: str  # the full S3 key, prefix included
    url: str  # storage URL, for errors
    name: str  # the storage key, for errors
    part_size: int
    workers: int
    part_checksum: str = "md5"  # or "crc32", only where the server was proven to check it


@dataclass(frozen=True)
class Sent:
    """What an upload sent, for the caller to check the stored object against."""

    etag: str | None  # the MD5 ETag the server should report (parts with Content-MD5)
    crc32: str | None  # the composite CRC-32 of the parts, "<base64>-<parts>" (parts with CRC-32)
    reported_crc32: str | None  # the one CompleteMultipartUpload returned, if the server returns one

    def disagreement(self, etag: str) -> str | None:
        """What in the server's answers contradicts what was sent, or None."""
        if self.etag is not None and not etag_matches(etag, self.etag):
            return f"ETag {etag}, expected {self.etag}"
        if self.reported_crc32 is not None and self.reported_crc32 != self.crc32:
            return f"CRC-32 {self.reported_crc32}, expected {self.crc32}"
        return None


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def crc32_header(value: int) -> str:
    """A CRC-32 as ``x-amz-checksum-crc32`` carries it: base64 of its four big-endian bytes."""
    return _b64(value.to_bytes(4, "big"))


def composite_crc32(values: list[int]) -> str:
    """The checksum S3 reports for a multipart upload made of parts with these CRC-32s:
    the CRC-32 of their bytes end to end, then the number of parts."""
    return crc32_header(crc32(b"".join(v.to_bytes(4, "big") for v in values), 0)) + f"-{len(values)}"


def upload(
    t: Target, path: Path, *, size: int, sha256: str, progress: ProgressCallback | None
) -> Sent:
    """Upload ``path`` to the target; return what was sent, to check the stored object against.

    Raises:
        IntegrityError: the file does not hash to ``sha256``; nothing is stored.
    """
    part_size = max(t.part_size, -(-size // MAX_PARTS))
    if size <= part_size:
        return Sent(_upload_single(t, path, sha256=sha256, progress=progress), None, None)
    crc = t.part_checksum == "crc32"
    with multipart(t.client, bucket=t.bucket, key=t.key, url=t.url, metadata={"sha256": sha256},
                   checksum="CRC32" if crc else None) as upload_id:
        parts, checksums, got = _upload_parts(t, path, upload_id, part_size, progress)
        if got != sha256:
            raise upload_mismatch(t.url, t.name, path, got, sha256)
        completed = t.client.complete_multipart_upload(
            Bucket=t.bucket, Key=t.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    if crc:
        return Sent(None, composite_crc32(checksums), completed.get("ChecksumCRC32"))
    return Sent(hashlib.md5(b"".join(checksums)).hexdigest() + f"-{len(checksums)}", None, None)


def _upload_single(
    t: Target, path: Path, *, sha256: str, progress: ProgressCallback | None
) -> str:
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise upload_mismatch(t.url, t.name, path, got, sha256)
    md5 = hashlib.md5(data)
    t.parts_client.put_object(
        Bucket=t.bucket,
        Key=t.key,
        Body=data,
        ContentMD5=_b64(md5.digest()),
        Metadata={"sha256": sha256},
    )
    if progress is not None:
        progress(len(data))
    return md5.hexdigest()


def _upload_parts(
    t: Target, path: Path, upload_id: str, part_size: int, progress: ProgressCallback | None
) -> tuple[list[dict], list[Any], str]:
    """Send the parts; return them as CompleteMultipartUpload lists them, each part's checksum
    (its CRC-32 as an int, or its MD5 digest) and the sha256 of all the bytes sent."""
    name = "ChecksumCRC32" if t.part_checksum == "crc32" else "ContentMD5"

    def send(number: int, chunk: bytes, checksum: str) -> tuple[dict, int]:
        response = t.parts_client.upload_part(
            Bucket=t.bucket, Key=t.key, UploadId=upload_id, PartNumber=number, Body=chunk, **{name: checksum}
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if name == "ChecksumCRC32":  # an upload created with CRC-32 is completed with each part's CRC-32
            part[name] = checksum
        return part, len(chunk)

    digest = hashlib.sha256()
    checksums: list[Any] = []

    def tasks(f: Any) -> Iterator[Callable[[], tuple[dict, int]]]:
        # Read lazily, in order: in_order draws a part only when a worker is free,
        # so at most `workers` parts are in memory.
        while chunk := f.read(part_size):
            digest.update(chunk)
            if name == "ChecksumCRC32":
                checksums.append(crc32(chunk, 0))
                header = crc32_header(checksums[-1])
            else:
                checksums.append(hashlib.md5(chunk).digest())
                header = _b64(checksums[-1])
            yield lambda n=len(checksums), c=chunk, h=header: send(n, c, h)

    parts: list[dict] = []
    with open(path, "rb") as f, contextlib.closing(in_order(t.workers, tasks(f), name="s3-upload")) as sent:
        for part, nbytes in sent:
            parts.append(part)
            if progress is not None:
                progress(nbytes)  # from this thread, so callers need no locking
    return parts, checksums, digest.hexdigest()


@contextlib.contextmanager
def multipart(
    client: Any, *, bucket: str, key: str, url: str, metadata: dict[str, str], checksum: str | None = None
) -> Iterator[str]:
    """Create a multipart upload and yield its id; the block must complete it.

    ``checksum`` ("CRC32") declares the algorithm of the parts' checksums: S3 then requires
    each part's in the completion, and returns their composite.

    If the block raises anything (a failed part, a wrong hash, ``KeyboardInterrupt``),
    the upload is aborted, so no parts stay stored (and billed) on the server.
    The block must have stopped every part transfer before it ends (see
    :func:`in_order`): a part that lands after the abort would be kept.
    An abort that fails too is logged with the command that finishes it.
    """
    extra = {"ChecksumAlgorithm": checksum} if checksum else {}
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata, **extra)["UploadId"]
    try:
        yield upload_id
    except BaseException:
        abort(client, bucket=bucket, key=key, upload_id=upload_id, url=url)
        raise


def abort(client: Any, *, bucket: str, key: str, upload_id: str, url: str) -> bool:
    """Abort a multipart upload, trying twice; True when the server confirmed it.

    Never raises (the error that made us abort matters more): a failure is
    logged as a warning naming the upload and the command that aborts it.
    """
    error: BaseException | None = None
    for _attempt in range(2):
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            return True
        except Exception as exc:  # noqa: BLE001 - reported below, never instead of the cause
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "NoSuchUpload":
                return True  # already gone: completed or aborted
            error = exc
    LOG.warning(
        "%s: could not abort the multipart upload of s3://%s/%s (%s); its parts stay stored until "
        "aborted: aws s3api abort-multipart-upload --bucket %s --key %s --upload-id %s",
        url, bucket, key, error, bucket, key, upload_id,
    )
    return False


def in_order(workers: int, tasks: Iterable[Callable[[], T]], *, name: str) -> Iterator[T]:
    """Run ``tasks`` on up to ``workers`` threads and yield their results in task order.

    A task is drawn from ``tasks`` only when a thread is free, so a lazy
    iterable keeps at most ``workers`` tasks' data in memory. At the first
    failure, or when the caller stops (close the generator, e.g. with
    ``contextlib.closing``, so that this happens at once), tasks not yet started
    are cancelled and the running ones awaited: nothing runs after it ends.

    Args:
        workers: Threads, and tasks in flight at once.
        tasks: Callables without arguments.
        name: Thread name prefix.

    Returns:
        A generator of the tasks' results.

    Raises:
        Whatever a task raised, when its result is reached.
    """
    tasks = iter(tasks)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        pending: deque[Future] = deque(pool.submit(task) for task in islice(tasks, workers))
        while pending:
            result = pending.popleft().result()
            if (task := next(tasks, None)) is not None:
                pending.append(pool.submit(task))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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

    offsets = range(start, size, t.part_size)
    yield from in_order(t.workers, (lambda o=o: fetch(o) for o in offsets), name="s3-download")
