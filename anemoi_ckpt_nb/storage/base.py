"""The one small storage interface every backend implements.

Keys are ``/``-separated relative names (``records/<uuid>.json``). Three
guarantees matter to the catalogue and every backend must give them:

* ``put(key, data, if_absent=True)`` is create-only: when the key exists it
  raises :class:`~anemoi_ckpt_nb.errors.ConflictError` and writes nothing
  (S3 ``If-None-Match: *``; local: exclusive create).
* ``replace(key, data, etag=...)`` is compare-and-swap: when the stored object
  no longer has that etag it raises ``ConflictError`` (S3 ``If-Match``;
  local: a lock plus atomic rename).
* A reader never sees a partial object: writes become visible whole or not at all.

Large files go through ``upload_file`` / ``download_file`` which stream,
verify the sha256 and, for downloads, write to a temporary name first and
resume an interrupted transfer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Called with the number of bytes transferred since the last call.
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or ``stat`` says about one stored object."""

    key: str
    size: int
    etag: str
    #: When it was last written (seconds since the epoch), where a listing says (a folder, S3); else None.
    modified: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Orphan:
    """Something a killed writer left in a storage: a temporary file, an unfinished multipart upload."""

    #: Where it is, for people (a ``file://`` or ``s3://`` URL; an upload's names its key).
    url: str
    #: ``temporary file``, ``planted symlink`` or ``multipart upload``.
    kind: str
    size: int
    #: Seconds since it last changed (an upload: since its last part).
    age: float
    #: The backend's own handle, for :meth:`Storage.remove_orphan`.
    handle: Any = field(default=None, compare=False, repr=False)


class Storage(ABC):
    """Abstract storage backend. See the module docstring for the contract."""

    #: The URL this storage was opened from (``memory://x``, ``file:///p``, ``s3://b/p``).
    url: str

    @abstractmethod
    def get(self, key: str) -> tuple[bytes, str]:
        """Return ``(data, etag)`` of an object.

        Raises:
            ObjectNotFoundError: the key does not exist.
        """

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        """Write a small object whole and return its new etag.

        Args:
            if_absent: create-only; raise ``ConflictError`` if the key exists.
        """

    @abstractmethod
    def replace(self, key: str, data: bytes, *, etag: str) -> str:
        """Compare-and-swap: overwrite only if the stored etag is still ``etag``.

        Raises:
            ConflictError: the object changed (or vanished) since ``etag`` was read.
        """

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and etag of an object. Raises ``ObjectNotFoundError``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def upload_file(
        self,
        key: str,
        path: str | Path,
        *,
        sha256: str,
        progress: ProgressCallback | None = None,
    ) -> ObjectInfo:
        """Stream a local file to ``key`` and verify it arrived whole.

        Raises:
            IntegrityError: the stored bytes do not hash to ``sha256``;
                nothing is left under ``key``.
        """

    @abstractmethod
    def download_file(
        self,
        key: str,
        dest: str | Path,
        *,
        sha256: str,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Fetch ``key`` to ``dest`` through a temporary file in the same folder,
        resume that file if an earlier attempt was interrupted, verify the
        sha256, then rename it into place.

        Raises:
            IntegrityError: the bytes do not hash to ``sha256``; ``dest`` is untouched.
        """

    def orphans(self, *, min_age: float) -> Iterator[Orphan]:
        """What killed writers left: temporaries no process holds, multipart uploads untouched for ``min_age`` s.

        A backend whose writes leave nothing behind (memory) has none.
        """
        return iter(())

    def remove_orphan(self, orphan: Orphan) -> bool:
        """Remove one of :meth:`orphans` unless a writer took it up since; True if removed."""
        return False

    def exists(self, key: str) -> bool:
        from anemoi_ckpt_nb.errors import ObjectNotFoundError

        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True
