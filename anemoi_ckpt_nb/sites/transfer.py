"""Replicate a checkpoint to another site, and re-verify its copies.

How bytes move, from the cheapest way that applies:

* **server-side copy** when source and destination are S3 storages on the
  same endpoint with the same profile: ``CopyObject`` (``UploadPartCopy``
  parts above 5 GiB); the bytes never leave the server;
* **uploaded** when the source is a file this machine sees (a file-system
  site, or the original file): the destination verifies the sha256 while
  writing (a folder: temporary file, fsync, rename; S3: a multipart upload
  that only completes when the hash matches);
* **streamed** otherwise: into a file-system site, a resumable verified
  download straight to its place (``<file>.part``, then rename); into another
  S3 endpoint, through a resumable staging file on this machine
  (``<staging>/<sha256>``), then a verified upload.

An interrupted replication is resumed by running it again: a partial
download continues from its ``.part`` file, and a copy that was completed but
not yet recorded is recognised (S3: size and the ``sha256`` metadata written
with it; a folder: size and sha256) instead of being made again. Only then is
the location added to ``locations/<uuid>.json``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from anemoi_ckpt_nb.errors import (
    CkptError,
    IntegrityError,
    NoReachableCopyError,
    ObjectNotFoundError,
    SiteError,
)
from anemoi_ckpt_nb.sites import locations as _loc
from anemoi_ckpt_nb.sites.fetch import describe_error, open_location, order
from anemoi_ckpt_nb.sites.registry import CatalogueSite, get_site, open_site_storage
from anemoi_ckpt_nb.storage import copy as _copy

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore
    from anemoi_ckpt_nb.storage.base import Storage

Method = Literal["server-side-copy", "uploaded", "streamed", "found", "already-there"]


@dataclass(frozen=True)
class ReplicateResult:
    """What :func:`replicate` did."""

    location: _loc.Location
    #: ``server-side-copy``, ``uploaded``, ``streamed``; ``found`` (a complete copy was
    #: already there, now recorded) or ``already-there`` (recorded and present: nothing done).
    method: Method
    #: The site copied from (``original file`` for the registered file itself); None if nothing was copied.
    source: str | None
    attempts: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        if self.method == "already-there":
            return f"already at site {self.location.site} ({self.location.url})"
        if self.method == "found":
            return f"found a complete copy at site {self.location.site} ({self.location.url}); recorded it"
        text = f"copied to site {self.location.site} ({self.location.url}): {self.method} from {self.source}"
        if self.attempts:
            text += "; skipped " + "; ".join(f"{s}: {why}" for s, why in self.attempts)
        return text


@dataclass(frozen=True)
class VerifyResult:
    """The check of one copy."""

    location: _loc.Location
    #: ``ok``, ``missing``, ``mismatch``, ``unreachable`` (nothing recorded) or ``unknown-site``.
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def replica_key(record: CheckpointRecord) -> str:
    """Where a site keeps a checkpoint: ``<uuid>/<file name>`` under its prefix."""
    return _loc.replica_key(record)


def location_url(storage: Storage, key: str) -> str:
    root = _copy.local_root(storage)
    if root is not None:
        return str(Path(root) / key)
    return f"{storage.url.rstrip('/')}/{key}"


def holds(storage: Storage, key: str, record: CheckpointRecord) -> bool:
    """Whether ``key`` holds the checkpoint's bytes, cheaply: size, then the sha256 the
    storage knows (a folder's or memory's etag; the metadata our S3 writes carry).

    Raises:
        StorageUnreachableError, OfflineError: the storage cannot be asked.
    """
    try:
        info = storage.stat(key)
    except ObjectNotFoundError:
        return False
    if info.size != record.size:
        return False
    if info.etag == record.sha256:
        return True
    return _copy.declared_sha256(storage, key) == record.sha256


def _staging_dir(staging: str | os.PathLike | None) -> Path:
    if staging is not None:
        return Path(staging).expanduser()
    from anemoi_ckpt_nb import settings

    return settings.staging_dir()


def _copy_from(
    source: Storage,
    source_key: str,
    dest: Storage,
    dest_key: str,
    record: CheckpointRecord,
    *,
    staging: Path,
    progress: Callable[[int], None] | None,
    max_single_copy: int,
) -> Method:
    from anemoi_ckpt_nb.storage.disk import check_space, is_whole

    if _copy.same_s3_endpoint(source, dest):
        _copy.server_side_copy(
            source, source_key, dest, dest_key, sha256=record.sha256, size=record.size,
            max_single_copy=max_single_copy, progress=progress,
        )
        return "server-side-copy"
    if _copy.local_root(source) is not None:
        # Read through a descriptor held on the object itself: a planted symlink is refused, never followed.
        with source.opened_path(source_key) as path:
            dest.upload_file(dest_key, path, sha256=record.sha256, progress=progress)
        return "uploaded"
    dest_root = _copy.local_root(dest)
    if dest_root is not None:
        # Written in the folder reached without following a symlink (<site>/<uuid> planted as one).
        with dest.pinned_path(dest_key, create_folder=True) as target:
            check_space(target.parent, record.size, hint=f"free space under {dest_root}")
            source.download_file(source_key, target, sha256=record.sha256, progress=progress)
        return "streamed"
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / record.sha256
    # A whole staging file is left when an earlier upload failed: upload it rather than fetch it again.
    if not is_whole(staged, sha256=record.sha256, size=record.size):
        check_space(staging, record.size, hint="free space there or pass another staging folder (--staging DIR)")
        source.download_file(source_key, staged, sha256=record.sha256, progress=progress)
    dest.upload_file(dest_key, staged, sha256=record.sha256, progress=progress)
    staged.unlink(missing_ok=True)
    return "streamed"


def _original_file(record: CheckpointRecord) -> Path | None:
    """The registered file itself, if it is on this machine with the registered size."""
    path = Path(record.source.path)
    if record.source.host == socket.gethostname() and path.is_file() and path.stat().st_size == record.size:
        return path
    return None


def replicate(
    store: CatalogueStore,
    record: CheckpointRecord,
    site: str,
    *,
    verify: bool = False,
    staging: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
    max_single_copy: int = _copy.MAX_SINGLE_COPY,
) -> ReplicateResult:
    """Copy a checkpoint to a site, verified, and record the new location.

    Args:
        store: The catalogue.
        record: The checkpoint.
        site: The destination: a site of ``catalogue.json``, or the catalogue's
            own site (to restore its blob from another copy).
        verify: After a server-side copy, also stream the copy and hash it
            (the other methods always verify the sha256).
        staging: Folder for the resumable staging file of a copy between two
            S3 endpoints (default: the user cache, ``.../anemoi-ckpt/staging``).
        progress: Called with bytes transferred.
        max_single_copy: Largest object copied with one ``CopyObject``; larger
            ones are copied in parts (S3 allows 5 GiB).

    Returns:
        The location and how it was made.

    Raises:
        UnknownSiteError: no such site.
        NoReachableCopyError: no copy could be read; each attempt is named.
        IntegrityError: the copy did not verify (it is deleted).
        InsufficientSpaceError: no room for the staging file or the file-system copy.
    """
    from anemoi_ckpt_nb.catalogue import layout

    target = get_site(store, site)
    dest = open_site_storage(target, store)
    if isinstance(target, CatalogueSite):
        kind: _loc.LocationKind = "catalogue-blob"
        key = record.blob or layout.blob_key(record.sha256)
    else:
        kind, key = target.kind, replica_key(record)
    state, _ = _loc.read_state(store, record)
    existing = state.at(target.name)
    present = holds(dest, key, record)
    if present and existing is not None and existing.ok and existing.key == key:
        return ReplicateResult(existing, "already-there", None)
    attempts: list[tuple[str, str]] = []
    source_name: str | None = None
    method: Method
    if present:
        method = "found"
    else:
        sources = [loc for loc in order(store, state.locations) if loc.site != target.name]
        # Same-endpoint S3 copies first: the server then does the work.
        sources.sort(key=lambda loc: not _same_endpoint(store, loc, dest))
        for location in sources:
            try:
                storage, source_key = open_location(store, location, record)
                method = _copy_from(
                    storage, source_key, dest, key, record,
                    staging=_staging_dir(staging), progress=progress, max_single_copy=max_single_copy,
                )
            except (CkptError, OSError) as error:
                if isinstance(error, IntegrityError) and getattr(error, "url", None) == dest.url:
                    raise
                attempts.append((location.site, describe_error(error)))
                continue
            source_name = location.site
            break
        else:
            original = _original_file(record)
            if original is None:
                raise NoReachableCopyError(
                    record.uuid, attempts,
                    hint="check the copies with `anemoi-ckpt locations ID --verify`, or replicate from the machine that has the file",
                )
            dest.upload_file(key, original, sha256=record.sha256, progress=progress)
            method, source_name = "uploaded", "original file"
    now = _loc.now()
    if verify and method in ("server-side-copy", "found") and not _hash_matches(dest, key, record):
        dest.delete(key)
        raise IntegrityError(dest.url, key, f"the copy does not hash to {record.sha256}; it was deleted", hint="retry the replication")
    location = _loc.Location(
        site=target.name,
        kind=kind,
        key=key,
        url=location_url(dest, key),
        sha256=record.sha256,
        size=record.size,
        added_at=now,
        added_by=_whoami(),
        method=method,
        verified_at=now,
        checked_at=now,
    )
    _loc.add_location(store, record, location)
    return ReplicateResult(location, method, source_name, attempts)


def _whoami():
    from anemoi_ckpt_nb.catalogue.layout import whoami

    return whoami()


def _same_endpoint(store: CatalogueStore, location: _loc.Location, dest: Storage) -> bool:
    try:
        storage, _ = open_location(store, location)
    except CkptError:
        return False
    return _copy.same_s3_endpoint(storage, dest)


def _hash_matches(storage: Storage, key: str, record: CheckpointRecord) -> bool:
    sha, size = _copy.hash_object(storage, key)
    return sha == record.sha256 and size == record.size


def verify(
    store: CatalogueStore,
    record: CheckpointRecord,
    *,
    sites: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[VerifyResult]:
    """Re-hash every copy (or those at ``sites``) and record the outcome.

    Each copy is read as a stream and hashed (S3: parallel ranged reads; a
    folder: the file). A copy that hashes right gets a new ``verified_at``; a
    missing or different one gets a ``problem``; an unreachable one is
    reported and left as it was.

    Args:
        store: The catalogue.
        record: The checkpoint.
        sites: Only these sites (default: all).
        progress: Called with bytes read.

    Returns:
        One result per copy checked, in the order of the locations.
    """
    results: list[VerifyResult] = []
    for location in _loc.list_locations(store, record):
        if sites is not None and location.site not in sites:
            continue
        try:
            storage, key = open_location(store, location, record)
        except SiteError as error:
            results.append(VerifyResult(location, "unknown-site", error.message))
            continue
        try:
            sha, size = _copy.hash_object(storage, key, progress=progress)
        except ObjectNotFoundError:
            results.append(VerifyResult(location, "missing", "no object there"))
            continue
        except (CkptError, OSError) as error:
            results.append(VerifyResult(location, "unreachable", describe_error(error)))
            continue
        if sha != record.sha256 or size != record.size:
            detail = f"{size:,} bytes with sha256 {sha}, expected {record.size:,} bytes with {record.sha256}"
            results.append(VerifyResult(location, "mismatch", detail))
        else:
            results.append(VerifyResult(location, "ok", f"{size:,} bytes, sha256 verified"))
    _record(store, record, results)
    return results


def _record(store: CatalogueStore, record: CheckpointRecord, results: list[VerifyResult]) -> None:
    checked = [r for r in results if r.status in ("ok", "missing", "mismatch")]
    if not checked:
        return
    now = _loc.now()

    def change(state: _loc.LocationsState) -> list[_loc.LocationEvent]:
        events = []
        for result in checked:
            current = state.at(result.location.site)
            if current is None or current.key != result.location.key:
                continue  # removed or replaced meanwhile
            current.checked_at = now
            if result.ok:
                current.verified_at, current.problem = now, None
                events.append(_loc.event("verify", current.site, "sha256 verified"))
            else:
                current.problem = "missing" if result.status == "missing" else f"sha256 mismatch: {result.detail}"
                events.append(_loc.event("problem", current.site, current.problem))
        return events

    _loc.update(store, record, change)
