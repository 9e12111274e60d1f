"""Which checksum a part of an upload carries: its CRC-32 where the server is proven to check it,
else its MD5.

Every S3 server checks ``Content-MD5``. The newer ``x-amz-checksum-crc32`` header is checked by
AWS and by SeaweedFS (4.48, the tests' server, refuses a wrong one with ``BadDigest`` and stores
nothing), but a server that predates it may ignore it, and would then check nothing. MD5 is the
slowest pass the client makes over the bytes (0.71 GiB/s of one core here, CRC-32 3.9 GiB/s with
zlib and far more with ISA-L), on machines whose CPU the server often shares, so which kind of
server this is is worth proving, once per process and endpoint.

The proof: a multipart upload to a scratch key under the storage's prefix, created as the real
uploads are (``ChecksumAlgorithm="CRC32"``), one tiny part sent exactly as the real parts are (the
parts client: signed header, unsigned payload) with a deliberately wrong CRC-32, then aborted.
Refused as damaged: the server checks, and parts carry their CRC-32. Accepted: it does not, and
parts keep their MD5. Anything else (credentials that may not start an upload, a network error):
MD5, with the reason logged, and no verdict kept, so a later upload may prove it. No object is
ever written, since a multipart upload is only visible once completed, and the upload is aborted
whatever happens; one that cannot be aborted is logged with the command that aborts it, and
``gc`` lists it among the orphans.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from anemoi_ckpt_nb.storage._s3_transfer import abort, crc32_header
from anemoi_ckpt_nb.storage.crc import crc32

LOG = logging.getLogger(__name__)

#: The codes S3 servers refuse a wrong ``x-amz-checksum-*`` with: AWS and SeaweedFS ``BadDigest``,
#: MinIO ``XAmzContentChecksumMismatch``. The probe sends no ``Content-MD5``, so a ``BadDigest``
#: can only be the CRC-32's.
REFUSED_AS_DAMAGED = frozenset({"BadDigest", "XAmzContentChecksumMismatch"})
PROBE_BODY = b"anemoi-ckpt-nb: a part whose CRC-32 is wrong, which the server must refuse"
PROBE_FOLDER = ".anemoi-ckpt-probe"

_verdicts: dict[str, Verdict] = {}  # endpoint URL -> a verdict the server's answers proved
_lock = threading.Lock()  # one probe at a time: parallel uploads wait for the first one's verdict


@dataclass(frozen=True)
class Verdict:
    """The checksum parts carry ("crc32" or "md5"), and why."""

    checksum: str
    reason: str


def part_checksum(*, client: Any, parts_client: Any, bucket: str, prefix: str, url: str) -> Verdict:
    """The checksum the parts of an upload to this endpoint carry, probed on first use.

    Args:
        client: The storage's client (create and abort the probe's upload).
        parts_client: The client that sends a file's bytes, which sends the probe's part.
        bucket: The storage's bucket.
        prefix: The storage's prefix: the probe's scratch key goes under it, where the
            storage may write and ``gc`` looks for forgotten uploads.
        url: The storage URL, for the log.
    """
    endpoint = parts_client.meta.endpoint_url
    with _lock:
        verdict = _verdicts.get(endpoint)
        if verdict is None:
            scratch = f"{prefix}/{PROBE_FOLDER}/{uuid.uuid4().hex}" if prefix else f"{PROBE_FOLDER}/{uuid.uuid4().hex}"
            verdict, proven = probe(client=client, parts_client=parts_client, bucket=bucket, key=scratch, url=url)
            if proven:
                _verdicts[endpoint] = verdict
            LOG.info("%s: upload parts carry their %s: %s", url, "CRC-32" if verdict.checksum == "crc32" else "MD5",
                     verdict.reason)
        return verdict


def probe(*, client: Any, parts_client: Any, bucket: str, key: str, url: str) -> tuple[Verdict, bool]:
    """Send a part with a wrong CRC-32 to a scratch multipart upload at ``key``, then abort it.

    Returns:
        The verdict, and whether the server's answer proved it (refused as damaged, or accepted)
        rather than the probe failing for another reason.
    """
    wrong = crc32_header(crc32(PROBE_BODY, 0) ^ 1)
    try:
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")["UploadId"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return Verdict("md5", f"the probe could not start a multipart upload ({_describe(exc)})"), False
    try:
        parts_client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=PROBE_BODY, ChecksumCRC32=wrong
        )
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in REFUSED_AS_DAMAGED:
            return Verdict("crc32", f"the server refused a part with a wrong CRC-32 ({code})"), True
        return Verdict("md5", f"the probe's part was refused, but not as damaged ({_describe(exc)})"), False
    except botocore.exceptions.BotoCoreError as exc:
        return Verdict("md5", f"the probe's part was not answered ({_describe(exc)})"), False
    finally:
        abort(client, bucket=bucket, key=key, upload_id=upload_id, url=url)
    return Verdict("md5", "the server accepted a part with a wrong CRC-32: it does not check it"), True


def _describe(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def forget() -> None:
    """Drop every verdict kept (tests, or a server replaced behind the same endpoint)."""
    with _lock:
        _verdicts.clear()
