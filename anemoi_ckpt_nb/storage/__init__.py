"""Storage backends behind one small interface (see :mod:`.base`), and file hashing with its cache (:mod:`.hashing`).

May import: ``anemoi_ckpt_nb.errors`` and ``anemoi_ckpt_nb.settings`` only (boto3 inside the S3 backend).

:func:`open_storage` maps a URL scheme to a backend class and imports it on
first use, so ``boto3`` is only imported when an ``s3://`` URL is opened:

* ``memory://name``: a process-wide named in-memory store (tests, demos);
* ``file:///path`` or a plain path: a local or shared folder (the default);
* ``s3://bucket/prefix``: S3 or any S3-compatible server, through boto3 and
  the ordinary AWS configuration.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from anemoi_ckpt_nb.errors import StorageURLError
from anemoi_ckpt_nb.storage.base import ObjectInfo, ProgressCallback, Storage

__all__ = ["ObjectInfo", "ProgressCallback", "Storage", "open_storage", "BACKENDS"]

#: scheme -> (class path, what to install when its import fails)
BACKENDS: dict[str, tuple[str, str | None]] = {
    "memory": ("anemoi_ckpt_nb.storage.memory:MemoryStorage", None),
    "file": ("anemoi_ckpt_nb.storage.local:LocalStorage", None),
    "s3": ("anemoi_ckpt_nb.storage.s3:S3Storage", "pip install boto3"),
}


def _backend(url: str, scheme: str) -> type[Storage]:
    if scheme not in BACKENDS:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise StorageURLError(
            url, f"unknown storage scheme {scheme!r}", hint=f"use one of {known} or a folder path"
        )
    target, install = BACKENDS[scheme]
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise StorageURLError(
            url,
            f"the {scheme}:// backend needs a package that is missing ({exc.name})",
            hint=install or "reinstall anemoi-ckpt-nb",
        ) from None


def open_storage(url: str | os.PathLike | Storage, **options: Any) -> Storage:
    """Open the storage a URL names.

    Args:
        url: ``memory://name``, ``file:///abs/path``, a plain path, or
            ``s3://bucket/prefix``; a :class:`Storage` is returned as it is.
        **options: Passed to the backend; the S3 backend takes
            ``endpoint_url``, ``profile`` and transfer settings (see
            :class:`~anemoi_ckpt_nb.storage.s3.S3Storage`).

    Returns:
        A :class:`Storage`.

    Raises:
        StorageURLError: unknown scheme, malformed URL, or the backend's
            package is not installed (the hint says what to install).
    """
    if isinstance(url, Storage):
        return url
    if isinstance(url, os.PathLike) or "://" not in str(url):
        return _backend(str(url), "file")(Path(os.fspath(url)), **options)
    url = str(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    cls = _backend(url, scheme)
    if scheme == "memory":
        name = (parts.netloc + parts.path).strip("/")
        return cls(name or "default", **options)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageURLError(
                url, "file:// URLs name a local path", hint="use file:///abs/path"
            )
        return cls(Path(unquote(parts.path)), **options)
    if not parts.netloc:
        raise StorageURLError(url, "no bucket in the URL", hint="use s3://bucket/prefix")
    return cls(parts.netloc, parts.path.strip("/"), **options)
