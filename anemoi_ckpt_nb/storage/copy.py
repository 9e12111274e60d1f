"""Copies between storages and streamed hashing of stored objects, for replication.

Three things the storage interface does not offer, written once here beside
the backends they need to look inside:

* :func:`same_s3_endpoint`: whether two S3 storages sit on one endpoint with
  one identity, so the server can copy between them without the bytes
  leaving it;
* :func:`server_side_copy`: ``CopyObject`` for objects up to 5 GiB, else a
  multipart upload of ``UploadPartCopy`` ranges (the S3 limit for one copy),
  aborted on any failure or interrupt so that no parts stay billed; the copy
  is checked by size and carries the sha256 as metadata;
* :func:`hash_object`: the sha256 and size of a stored object, streamed
  (S3 ranged reads, a file read in chunks), never held whole in memory.

Nothing here imports boto3: the S3 storage's own client is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

from anemoi_ckpt_nb.errors import ConflictError, IntegrityError
from anemoi_ckpt_nb.storage.base import ProgressCallback, Storage

GiB = 1024**3
MiB = 1024**2
#: Largest object one ``CopyObject`` may copy (S3 limit); larger ones go by ``UploadPartCopy``.
MAX_SINGLE_COPY = 5 * GiB
#: Bytes per ``UploadPartCopy`` part (S3: 5 MiB to 5 GiB, at most 10,000 parts).
COPY_PART_SIZE = 512 * MiB
_MAX_PARTS = 10_000
_CHUNK = 8 * MiB


def is_s3(storage: Storage) -> bool:
    """True for the S3 backend (checked without importing it, so boto3 stays unloaded)."""
    return type(storage).__name__ == "S3Storage" and hasattr(storage, "bucket")


def local_root(storage: Storage) -> os.PathLike | None:
    """The folder of a local-folder storage, else None."""
    return getattr(storage, "root", None) if type(storage).__name__ == "LocalStorage" else None


def endpoint_of(storage: Storage) -> str:
    """The S3 endpoint a storage talks to, normalised (``"AWS S3"`` for AWS itself)."""
    endpoint = getattr(storage, "endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    return endpoint.rstrip("/").lower()


def same_s3_endpoint(a: Storage, b: Storage) -> bool:
    """Whether ``a`` and ``b`` are S3 storages on one endpoint with the same profile.

    Then one client can read ``a`` and write ``b``, so the server copies the
    bytes itself. Different profiles may hold different credentials, so they
    are treated as different identities.
    """
    if not (is_s3(a) and is_s3(b)):
        return False
    profile_a = getattr(a, "profile", None) or os.environ.get("AWS_PROFILE")
    profile_b = getattr(b, "profile", None) or os.environ.get("AWS_PROFILE")
    return endpoint_of(a) == endpoint_of(b) and profile_a == profile_b


def server_side_copy(
    source: Storage,
    source_key: str,
    dest: Storage,
    dest_key: str,
    *,
    sha256: str,
    size: int,
    max_single_copy: int = MAX_SINGLE_COPY,
    part_size: int = COPY_PART_SIZE,
    progress: ProgressCallback | None = None,
) -> str:
    """Copy an object between two S3 storages of one endpoint, without downloading it.

    Args:
        source: The S3 storage holding the object.
        source_key: Its key there.
        dest: The S3 storage to copy into (same endpoint and profile, see :func:`same_s3_endpoint`).
        dest_key: The key to write.
        sha256: The object's sha256, stored as the copy's ``sha256`` metadata.
        size: The object's size; the source must have it, and so must the copy.
        max_single_copy: Above this size, copy in parts (``UploadPartCopy``).
        part_size: Bytes per part (at least 5 MiB).
        progress: Called with bytes copied, part by part.

    Returns:
        The copy's ETag.

    Raises:
        ObjectNotFoundError: the source object is missing.
        ConflictError: the source changed or vanished during the copy (nothing is written).
        IntegrityError: the source or the copy has the wrong size (a wrong copy is deleted).
        StorageError: S3 refused the copy.
    """
    from anemoi_ckpt_nb.storage import _s3_transfer as transfer

    src: Any = source
    dst: Any = dest
    with src._call(source_key):
        head = src._head(source_key)
    if head["ContentLength"] != size:
        raise IntegrityError(src.url, source_key, f"has {head['ContentLength']} bytes, the record says {size}", hint="verify the locations with `anemoi-ckpt locations ID --verify`")
    copy_source = {"Bucket": src.bucket, "Key": src._full(source_key)}
    target = dst._full(dest_key)
    with dst._call(dest_key):
        with _source_changes(src, source_key):
            if size <= max_single_copy:
                dst._client.copy_object(
                    Bucket=dst.bucket,
                    Key=target,
                    CopySource=copy_source,
                    CopySourceIfMatch=head["ETag"],
                    MetadataDirective="REPLACE",
                    Metadata={"sha256": sha256},
                )
                if progress is not None:
                    progress(size)
            else:
                with transfer.multipart(dst._client, bucket=dst.bucket, key=target, url=dst.url, metadata={"sha256": sha256}) as upload_id:
                    parts = _copy_parts(dst, target, upload_id, copy_source, head["ETag"], size=size, part_size=part_size, progress=progress)
                    dst._client.complete_multipart_upload(Bucket=dst.bucket, Key=target, UploadId=upload_id, MultipartUpload={"Parts": parts})
        copied = dst._head(dest_key)
        if copied["ContentLength"] != size:
            dst._client.delete_object(Bucket=dst.bucket, Key=target)
            raise IntegrityError(dst.url, dest_key, f"the copy has {copied['ContentLength']} bytes, expected {size}; it was deleted", hint="retry the replication")
    return copied["ETag"]


@contextlib.contextmanager
def _source_changes(src: Any, source_key: str) -> Iterator[None]:
    """Report a copy whose source changed or vanished (``CopySourceIfMatch`` failed, 412,
    or no such key, 404) as a conflict on the source, not as an error of the copy's key."""
    try:
        yield
    except Exception as exc:
        response = getattr(exc, "response", None)
        if not isinstance(response, dict):
            raise
        code = response.get("Error", {}).get("Code")
        if code not in {"PreconditionFailed", "NoSuchKey"} and response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 412:
            raise
        raise ConflictError(
            src.url, source_key, "changed or vanished during the copy; nothing was copied", hint="retry the replication"
        ) from None


def _copy_parts(
    dst: Any, target: str, upload_id: str, copy_source: dict, etag: str, *, size: int, part_size: int, progress: ProgressCallback | None
) -> list[dict]:
    """Copy the source into the multipart upload ``upload_id`` range by range; return its parts.

    The first failing part (or an interrupt) stops the copy: ranges not yet
    started are not copied, and the caller's :func:`multipart` aborts the upload.
    """
    from anemoi_ckpt_nb.storage import _s3_transfer as transfer

    part_size = max(part_size, 5 * MiB, -(-size // _MAX_PARTS))

    def copy(number: int, start: int) -> tuple[dict, int]:
        end = min(start + part_size, size) - 1
        response = dst._client.upload_part_copy(
            Bucket=dst.bucket,
            Key=target,
            UploadId=upload_id,
            PartNumber=number,
            CopySource=copy_source,
            CopySourceRange=f"bytes={start}-{end}",
            CopySourceIfMatch=etag,
        )
        return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}, end - start + 1

    tasks = (lambda n=i + 1, o=start: copy(n, o) for i, start in enumerate(range(0, size, part_size)))
    parts = []
    with contextlib.closing(transfer.in_order(dst.max_concurrency, tasks, name="s3-copy")) as copied:
        for part, nbytes in copied:
            parts.append(part)
            if progress is not None:
                progress(nbytes)
    return parts


def declared_sha256(storage: Storage, key: str) -> str | None:
    """The ``sha256`` an S3 object declares in its metadata (None elsewhere or when absent)."""
    if not is_s3(storage):
        return None
    s3: Any = storage
    with s3._call(key):
        return s3._head(key).get("Metadata", {}).get("sha256")


def hash_object(storage: Storage, key: str, *, progress: ProgressCallback | None = None) -> tuple[str, int]:
    """The sha256 and size of a stored object, read as a stream.

    Args:
        storage: Any storage.
        key: The object.
        progress: Called with bytes read.

    Returns:
        ``(sha256 hex, size)``.

    Raises:
        ObjectNotFoundError: no such object.
        StorageUnreachableError, StorageAccessError: the storage cannot be read.
    """
    if local_root(storage) is not None:
        local: Any = storage
        with local.opened_path(key) as path, open(path, "rb") as f:  # never through a planted symlink
            return _digest(iter(lambda: f.read(_CHUNK), b""), progress)
    if is_s3(storage):
        from anemoi_ckpt_nb.storage import _s3_transfer as transfer

        s3: Any = storage
        with s3._call(key):
            head = s3._head(key)
            chunks = transfer.read_ranges(s3._target(key), etag=head["ETag"], start=0, size=head["ContentLength"])
            return _digest(chunks, progress)
    data, _ = storage.get(key)  # the in-memory backend: the bytes are in memory already
    return _digest([data], progress)


def _digest(chunks: Iterable[bytes], progress: ProgressCallback | None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return digest.hexdigest(), size
