"""Turn botocore exceptions into the typed errors of :mod:`anemoi_ckpt_nb.errors`.

Imported only by :mod:`.s3`, so botocore is already loaded when this runs.
"""

from __future__ import annotations

import botocore.exceptions as bx

from anemoi_ckpt_nb.errors import (
    BucketNotFoundError,
    CkptError,
    ConflictError,
    IntegrityError,
    ObjectNotFoundError,
    OfflineError,
    StorageAccessError,
    StorageError,
    StorageUnreachableError,
)

CREDENTIALS_HINT = (
    "check the credentials boto3 uses: AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials"
)
_ACCESS_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "Forbidden",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
}
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "NotFound", "404"}


def offline() -> bool:
    """True when ``ANEMOI_CKPT_OFFLINE`` asks us not to use the network."""
    from anemoi_ckpt_nb import settings

    return settings.is_offline()


def refuse_offline(url: str, key: str | None) -> None:
    """Raise :class:`OfflineError` when offline mode is on; call before any request."""
    if offline():
        where = f"{url.rstrip('/')}/{key}" if key else url
        raise OfflineError(
            f"{where}: S3 access refused because ANEMOI_CKPT_OFFLINE=1",
            hint="unset ANEMOI_CKPT_OFFLINE to use the network, or use a local catalogue",
        )


def translate(
    exc: Exception, *, url: str, key: str | None, endpoint: str, conflict: str | None = None
) -> CkptError | None:
    """The typed error for a botocore exception, or None if it is not one we know.

    Args:
        exc: What boto3 raised.
        url: Storage URL, named in the message.
        key: Key of the object, if any.
        endpoint: The endpoint the client talks to, named when unreachable.
        conflict: Set when the request carried If-Match/If-None-Match: the
            message of the ConflictError for 412, 409, and a 404 (the object
            vanished under us).
    """
    if isinstance(exc, bx.ClientError):
        return _client_error(exc, url=url, key=key, conflict=conflict)
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
        what = "timed out" if "timeout" in type(exc).__name__.lower() else "cannot connect"
        return StorageUnreachableError(
            url,
            key,
            f"the S3 endpoint {endpoint} is unreachable ({what})",
            hint="check AWS_ENDPOINT_URL (or the endpoint_url of this site) and the network; "
            "set ANEMOI_CKPT_OFFLINE=1 to work without it",
        )
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return StorageAccessError(url, key, "no usable S3 credentials found", hint=CREDENTIALS_HINT)
    if isinstance(exc, bx.ProfileNotFound):
        return StorageAccessError(url, key, str(exc), hint="check AWS_PROFILE and ~/.aws/config")
    if isinstance(exc, (bx.CredentialRetrievalError, bx.TokenRetrievalError, bx.SSOError)):
        return StorageAccessError(
            url, key, f"cannot get S3 credentials: {exc}", hint=CREDENTIALS_HINT
        )
    return None


def _client_error(
    exc: bx.ClientError, *, url: str, key: str | None, conflict: str | None
) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    detail = error.get("Message") or code or f"HTTP {status}"
    if code in _CONFLICT_CODES or status == 412 or (conflict and status == 409):
        return ConflictError(url, key, conflict or "changed since it was read")
    if code == "NoSuchBucket":
        return bucket_missing(url)
    if code in _MISSING_CODES or status == 404:
        if conflict:
            return ConflictError(url, key, "vanished since it was read")
        return ObjectNotFoundError(url, key, "no such object")
    if code in _ACCESS_CODES or status == 403:
        return StorageAccessError(
            url,
            key,
            f"S3 refused the credentials ({code or status}: {detail})",
            hint=CREDENTIALS_HINT,
        )
    if code in {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"}:  # the last: MinIO's, for x-amz-checksum-*
        return IntegrityError(url, key, f"the server received damaged bytes ({code})")
    return StorageError(url, key, f"S3 error {code or status}: {detail}")


def bucket_missing(url: str) -> BucketNotFoundError:
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    return BucketNotFoundError(
        url,
        None,
        f"the bucket {bucket!r} does not exist",
        hint=f"create it (`aws s3 mb s3://{bucket}`, with --endpoint-url for a non-AWS server) "
        "or fix the catalogue URL",
    )
