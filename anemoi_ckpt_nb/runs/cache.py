"""A local cache of registered checkpoints, for machines whose compute nodes are offline.

Layout, one folder per checkpoint uuid::

    <cache>/<uuid>/<filename>            the checkpoint, only ever renamed into place whole
    <cache>/<uuid>/<filename>.part       an interrupted download, resumed by the next prefetch
    <cache>/<uuid>/cache.json            CacheEntry: what the file must be (sha256, size, source)
    <cache>/<uuid>/runs/<manifest>.json  run manifests of forks and resumes started from it

:func:`prefetch` runs where the network is (a login node): it downloads
through the storage's resumable, verified ``download_file`` after checking the
disk has room. :func:`verify_cached` runs anywhere, reads only local files and
is what the offline training step calls.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from anemoi_ckpt_nb.errors import CacheError, SchemaError
from anemoi_ckpt_nb.storage.disk import (  # noqa: F401
    MARGIN_FRACTION,
    MIN_MARGIN,
    check_space,
    is_whole,
    required_space,
)
from anemoi_ckpt_nb.storage.hashing import sha256_file

CACHE_ENTRY = "cache.json"
RUNS = "runs"
ENTRY_VERSION = 1




class CacheEntry(BaseModel):
    """``<cache>/<uuid>/cache.json``: what the cached file must be and where it came from."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = ENTRY_VERSION
    uuid: str
    filename: str
    #: The cached file, absolute, as written on the machine that fetched it.
    path: str
    sha256: str
    size: int
    #: The catalogue URL and the key of the blob the file was fetched from.
    catalogue: str
    blob: str
    fetched_at: dt.datetime
    fetched_by: str
    #: Not stored: True when this call found the file already cached and fetched nothing.
    _already_cached: bool = PrivateAttr(default=False)

    @property
    def already_cached(self) -> bool:
        return self._already_cached

    def __eq__(self, other: object) -> bool:
        # Entries are equal when they store the same thing, however this call found them.
        return isinstance(other, CacheEntry) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  (mutable, as pydantic models are)


def default_cache_dir() -> Path:
    """``$ANEMOI_CKPT_CACHE``, else the user's cache folder (``~/.cache/anemoi-ckpt-nb/checkpoints``);
    see :func:`anemoi_ckpt_nb.settings.cache`."""
    from anemoi_ckpt_nb import settings

    return settings.cache().value


def entry_dir(cache: str | Path, uuid: str) -> Path:
    """The folder of checkpoint ``uuid`` in ``cache`` (absolute, as written into scripts)."""
    return Path(cache).expanduser().absolute() / uuid


def cached_path(cache: str | Path, uuid: str, filename: str) -> Path:
    """Where the checkpoint file of ``uuid`` lives in ``cache``."""
    return entry_dir(cache, uuid) / Path(filename).name


def prefetch_command(uuid: str, cache: str | Path, catalogue: str | None = None) -> str:
    """The command that fills the cache, for hints in error messages."""
    where = f" --catalogue {shlex.quote(str(catalogue))}" if catalogue else ""
    return f"anemoi-ckpt{where} prefetch {shlex.quote(uuid)} --cache {shlex.quote(str(cache))}"


def write_atomically(path: Path, data: bytes) -> None:
    """Write a small file whole or not at all (a temporary beside it, then a rename)."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name created exclusively: a predictable one could be a planted symlink.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # e.g. a full disk: leave no stray temporary behind
        raise


def _write_entry(folder: Path, entry: CacheEntry) -> None:
    write_atomically(folder / CACHE_ENTRY, entry.model_dump_json(indent=2).encode() + b"\n")


def read_entry(cache: str | Path, uuid: str) -> CacheEntry | None:
    """The cache entry of ``uuid``, or None when it was never fetched.

    Raises:
        SchemaError: the entry is unreadable or from a newer release.
    """
    path = entry_dir(cache, uuid) / CACHE_ENTRY
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        entry = CacheEntry.model_validate_json(data)
    except ValueError as exc:
        raise SchemaError(
            f"{path}: not a cache entry ({exc.__class__.__name__})", hint="delete the folder and prefetch again"
        ) from None
    if entry.schema_version > ENTRY_VERSION:
        raise SchemaError(
            f"{path}: schema_version {entry.schema_version} is newer than this release reads",
            hint="pip install -U anemoi-ckpt-nb",
        )
    return entry


def verify_cached(
    path: str | Path,
    *,
    sha256: str,
    size: int | None = None,
    hint: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Check a cached file is there, whole and unchanged. Reads only local files.

    Args:
        path: The cached file.
        sha256: What its bytes must hash to.
        size: Its size, checked first (cheap) when given.
        hint: The command that fetches it (see :func:`prefetch_command`).
        progress: Called with bytes hashed.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        CacheError: missing (mentioning an interrupted ``.part`` download if
            there is one), of the wrong size, or hashing to something else.
    """
    path = Path(path)
    hint = hint or "run the prefetch step again on a node with network access"
    if not path.is_file():
        part = path.with_name(path.name + ".part")
        if part.exists():
            raise CacheError(
                path,
                f"the cached checkpoint is missing: its download was interrupted ({part.stat().st_size:,} bytes in {part.name})",
                hint=f"resume it with: {hint}",
            )
        raise CacheError(path, "the cached checkpoint is missing", hint=f"fetch it first with: {hint}")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise CacheError(
            path,
            f"the cached checkpoint has {actual_size:,} bytes, the manifest says {size:,}: it was truncated or changed",
            hint=f"delete it and fetch it again with: {hint}",
        )
    actual = sha256_file(path, progress=progress)
    if actual != sha256:
        raise CacheError(
            path,
            f"the cached checkpoint hashes to sha256 {actual}, expected {sha256}: it was changed or damaged",
            hint=f"delete it and fetch it again with: {hint}",
        )
    return path


def prefetch(
    storage: Any,
    record: Any,
    *,
    cache: str | Path,
    margin: int | None = None,
    progress: Callable[[int], None] | None = None,
    store: Any = None,
) -> CacheEntry:
    """Download a registered checkpoint into the cache, verified; resume an interrupted download.

    Args:
        storage: The catalogue's storage (:class:`~anemoi_ckpt_nb.storage.base.Storage`).
        record: The checkpoint's :class:`~anemoi_ckpt_nb.catalogue.schema.CheckpointRecord`.
        cache: The cache folder (created if missing).
        margin: Bytes to leave free beyond the file (default: 5% of it, at least 64 MiB).
        progress: Called with the number of bytes fetched or hashed.
        store: The catalogue (``CatalogueStore``): when given, the file comes from
            the best of its copies at any site (:func:`anemoi_ckpt_nb.sites.fetch.fetch`)
            and the entry records ``site`` and ``source_url``.

    Returns:
        The cache entry, also written to ``<cache>/<uuid>/cache.json``.

    Raises:
        CacheError: the record has no uploaded blob to fetch.
        InsufficientSpaceError: the disk is too small; nothing was downloaded.
        IntegrityError: the downloaded bytes do not match the record's sha256.
        OfflineError, StorageUnreachableError: the storage cannot be reached.
    """
    from anemoi_ckpt_nb.catalogue.layout import whoami

    folder = entry_dir(cache, record.uuid)
    dest = cached_path(cache, record.uuid, record.filename)
    if not record.blob and store is None:
        raise CacheError(
            dest,
            f"checkpoint {record.uuid} was registered without uploading its bytes, so there is nothing to download",
            hint=f"copy it from {record.source.host}:{record.source.path}, or register it again without --no-upload",
        ).with_python_hint(f"copy it from {record.source.host}:{record.source.path}, or register it again with upload=True")
    if folder.is_symlink():  # planted in a shared cache: writing through it would fill another folder
        raise CacheError(
            folder, f"{folder} is a symbolic link (to {os.readlink(folder)}); anemoi-ckpt never writes through one",
            hint=f"check who made it (ls -l {folder}), remove the link itself (rm {folder}) and run the command again",
        )
    folder.mkdir(parents=True, exist_ok=True)
    entry = CacheEntry(
        uuid=record.uuid,
        filename=dest.name,
        path=str(dest),
        sha256=record.sha256,
        size=record.size,
        catalogue=storage.url,
        blob=record.blob or "",
        fetched_at=dt.datetime.now(dt.timezone.utc),
        fetched_by=str(whoami()),
    )
    if dest.is_symlink():
        dest.unlink()  # never follow a link out of the cache: the file is fetched again in its place
    if dest.exists():
        if is_whole(dest, sha256=record.sha256, size=record.size, progress=progress):
            existing = read_entry(cache, record.uuid)
            if existing is None:
                _write_entry(folder, entry)
                existing = entry
            existing._already_cached = True
            return existing
        # A damaged or tampered copy: fetch it again rather than keep bad bytes.
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    check_space(folder, record.size, have=min(have, record.size), margin=margin)
    if store is not None:  # site-aware: this machine's site first, falling back (anemoi_ckpt_nb.sites.fetch)
        from anemoi_ckpt_nb.sites.fetch import fetch

        fetched = fetch(store, record, dest, progress=progress)
        entry = CacheEntry(**entry.model_dump(), site=fetched.site, source_url=fetched.location.url)
    else:
        storage.download_file(record.blob, dest, sha256=record.sha256, progress=progress)
    _write_entry(folder, entry)
    return entry


def verify_entry(cache: str | Path, ref: str) -> CacheEntry:
    """Check the cached file of checkpoint ``ref`` against its ``cache.json``. Reads only local files.

    Args:
        cache: The cache folder.
        ref: The checkpoint uuid, or a prefix of it naming one cached checkpoint.

    Returns:
        The entry.

    Raises:
        CacheError: nothing (or several) cached under ``ref``, or the file is missing or changed.
    """
    root = Path(cache).expanduser().absolute()
    folder = root / ref
    if not (folder / CACHE_ENTRY).exists():
        matches = sorted(p for p in root.glob(f"{glob.escape(ref)}*") if (p / CACHE_ENTRY).exists()) if root.is_dir() else []
        if len(matches) != 1:
            if matches:
                raise CacheError(root / ref, f"{len(matches)} cached checkpoints start with it", hint="give more characters of the uuid")
            raise CacheError(root / ref, "nothing is cached under it", hint=f"fetch it with: {prefetch_command(ref, cache)}")
        folder = matches[0]
    entry = read_entry(root, folder.name)
    assert entry is not None
    verify_cached(folder / entry.filename, sha256=entry.sha256, size=entry.size, hint=prefetch_command(entry.uuid, cache, entry.catalogue))
    return entry
