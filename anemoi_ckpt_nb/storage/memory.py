"""In-memory storage: a real backend with the full contract, for tests and demos.

Stores are process-wide and named: every ``MemoryStorage("x")`` (or
``open_storage("memory://x")``) in a process sees the same objects. The etag
is the sha256 of the content, so it changes whenever the content does.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

from anemoi_ckpt_nb.errors import ConflictError, ObjectNotFoundError
from anemoi_ckpt_nb.storage._keys import check_key
from anemoi_ckpt_nb.storage._transfer import CHUNK, download_resumable, upload_mismatch
from anemoi_ckpt_nb.storage.base import ObjectInfo, ProgressCallback, Storage


class _Store:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _store(name: str) -> _Store:
    with _STORES_LOCK:
        return _STORES.setdefault(name, _Store())


def reset(name: str | None = None) -> None:
    """Forget the objects of one named store, or of all stores when ``name`` is None."""
    with _STORES_LOCK:
        if name is None:
            _STORES.clear()
        else:
            _STORES.pop(name, None)


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MemoryStorage(Storage):
    """Objects in a process-wide dict named ``name``; thread-safe.

    Args:
        name: Which named store to use; the same name shares the same objects.
    """

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.url = f"memory://{name}"
        self._store = _store(name)

    def __repr__(self) -> str:
        return f"MemoryStorage({self.name!r})"

    def _missing(self, key: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(self.url, key, "no such object")

    def get(self, key: str) -> tuple[bytes, str]:
        check_key(self.url, key)
        with self._store.lock:
            data = self._store.objects.get(key)
        if data is None:
            raise self._missing(key)
        return data, _etag(data)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        check_key(self.url, key)
        data = bytes(data)
        with self._store.lock:
            if if_absent and key in self._store.objects:
                raise ConflictError(self.url, key, "already exists; create-only write refused")
            self._store.objects[key] = data
        return _etag(data)

    def replace(self, key: str, data: bytes, *, etag: str) -> str:
        check_key(self.url, key)
        data = bytes(data)
        with self._store.lock:
            current = self._store.objects.get(key)
            if current is None:
                raise ConflictError(self.url, key, "vanished since it was read")
            if _etag(current) != etag:
                raise ConflictError(self.url, key, "changed since it was read")
            self._store.objects[key] = data
        return _etag(data)

    def stat(self, key: str) -> ObjectInfo:
        data, etag = self.get(key)
        return ObjectInfo(key=key, size=len(data), etag=etag)

    def delete(self, key: str) -> None:
        check_key(self.url, key)
        with self._store.lock:
            self._store.objects.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._store.lock:
            items = sorted(
                (k, v) for k, v in self._store.objects.items() if k.startswith(prefix)
            )
        for key, data in items:
            yield ObjectInfo(key=key, size=len(data), etag=_etag(data))

    def upload_file(
        self,
        key: str,
        path: str | Path,
        *,
        sha256: str,
        progress: ProgressCallback | None = None,
    ) -> ObjectInfo:
        check_key(self.url, key)
        with self._store.lock:
            stored = self._store.objects.get(key)
        if stored is not None and _etag(stored) == sha256:
            return ObjectInfo(key=key, size=len(stored), etag=sha256)  # already stored
        digest = hashlib.sha256()
        chunks = []
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                chunks.append(chunk)
                if progress is not None:
                    progress(len(chunk))
        if digest.hexdigest() != sha256:
            raise upload_mismatch(self.url, key, path, digest.hexdigest(), sha256)
        data = b"".join(chunks)
        with self._store.lock:
            self._store.objects[key] = data
        return ObjectInfo(key=key, size=len(data), etag=sha256)

    def download_file(
        self,
        key: str,
        dest: str | Path,
        *,
        sha256: str,
        progress: ProgressCallback | None = None,
    ) -> Path:
        data, _ = self.get(key)

        def read_from(offset: int) -> Iterator[bytes]:
            for start in range(offset, len(data), CHUNK):
                yield data[start : start + CHUNK]

        return download_resumable(
            url=self.url,
            key=key,
            dest=dest,
            sha256=sha256,
            size=len(data),
            read_from=read_from,
            progress=progress,
        )
