"""A local (or shared POSIX) folder as storage: the embedded default.

Objects are plain files under the root, so a catalogue stays browseable.
The contract's guarantees come from the filesystem:

* every write goes to a temporary file in the same folder, is fsynced, then
  becomes visible in one step, so readers never see a partial object;
* create-only gives that temporary its name only if the name is free, by the
  first method the filesystem supports (:mod:`.createonly`: a hard link,
  ``renameat2(RENAME_NOREPLACE)``, or a check under the key's lock);
* compare-and-swap, plain overwrites and deletes take an exclusive ``flock``
  on a lock file chosen by the key's hash, then ``os.replace``. Lock files
  live under ``<root>/.locks/``; temporaries are ``.tmp.*`` next to their
  target. Listings skip dotted names;
* a symlink is never followed below the root (:mod:`.nofollow`): every folder of a key and
  the object itself are opened relative to their parent with ``O_NOFOLLOW``, and a planted
  link is refused with :class:`~anemoi_ckpt_nb.errors.SymlinkRefusedError` (listings skip it).

The etag is the sha256 of the content (as S3's ETag is an MD5 of it), cached
in an extended attribute with the size and mtime it belongs to, so ``stat``
and ``list`` do not re-read large files. It is not derived from inode and
mtime because a freed inode is reused at once and mtimes are coarse, which
would let two different writes share an etag.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat as stat_mod
from collections.abc import Iterator, Sequence
from pathlib import Path

from anemoi_ckpt_nb.errors import (
    ConflictError,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageAccessError,
    StorageError,
    StorageURLError,
)
from anemoi_ckpt_nb.storage.hashing import cached_sha256, record_sha256, sha256_fd
from anemoi_ckpt_nb.storage._keys import check_key
from anemoi_ckpt_nb.storage._transfer import (
    CHUNK,
    copy_hashed,
    download_resumable,
    upload_mismatch,
)
from anemoi_ckpt_nb.storage import nofollow, temporaries
from anemoi_ckpt_nb.storage.base import ObjectInfo, Orphan, ProgressCallback, Storage
from anemoi_ckpt_nb.storage.temporaries import Temporary
from anemoi_ckpt_nb.storage.createonly import (
    LOCK_HINT,
    CREATE_ONLY_METHODS,
    CreateOnlyUnsupported,
    acquire_lock,
    create_only,
    rename_noreplace,
)

__all__ = ["CREATE_ONLY_METHODS", "CreateOnlyUnsupported", "LocalStorage", "rename_noreplace"]


def _etag_fd(fd: int) -> str:
    # The objects are ours: their sha256 is always remembered (ANEMOI_CKPT_HASH_CACHE is for users' files).
    return sha256_fd(fd)


class LocalStorage(nofollow.NoFollowPaths, Storage):
    """Objects as files under ``root``; safe with several threads and processes.

    Args:
        root: The folder; created on the first write.
        create_only_methods: The create-only methods to try, in order, from
            :data:`CREATE_ONLY_METHODS` (the default: all of them). Restrict it to
            force one, e.g. ``("lock",)`` where the others misbehave.
        role: What the folder is to a catalogue (``"site 'hpc'"``), named in the
            error about a planted symlink.

    Raises:
        StorageURLError: an unknown create-only method.
    """

    def __init__(
        self, root: str | Path, *, create_only_methods: Sequence[str] | None = None, role: str | None = None
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = self.root.as_uri()
        self.role = role or f"the folder {self.root}"
        methods = CREATE_ONLY_METHODS if create_only_methods is None else create_only_methods
        self.create_only_methods = tuple(methods)
        unknown = [m for m in self.create_only_methods if m not in CREATE_ONLY_METHODS]
        if unknown or not self.create_only_methods:
            what = f"unknown create-only methods {unknown}" if unknown else "no create-only method"
            raise StorageURLError(
                self.url, what, hint=f"choose among {', '.join(CREATE_ONLY_METHODS)}"
            )

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # --- helpers ------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / check_key(self.url, key)

    @contextlib.contextmanager
    def _errors(self, key: str | None) -> Iterator[None]:
        """Turn OS errors into the storage errors of the contract."""
        try:
            yield
        except StorageError:
            raise
        except PermissionError as exc:
            raise StorageAccessError(
                self.url,
                key,
                f"permission denied: {exc.filename or self.root}",
                hint=f"check the permissions of {self.root}",
            ) from None
        except (NotADirectoryError, FileExistsError) as exc:
            raise InvalidKeyError(
                self.url, key, f"a parent of this key is an object, not a folder ({exc.filename})"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP and exc.filename:  # a lock file's folder planted as a link
                raise nofollow.refusal(self.url, key, Path(os.fsdecode(exc.filename)), where=self.role) from None
            if exc.errno == errno.ENOSPC:
                raise StorageError(
                    self.url, key, "no space left", hint=f"free space under {self.root}"
                ) from None
            raise StorageError(self.url, key, f"{exc.strerror or exc} ({exc.filename})") from None

    def _acquire(self, key: str) -> int:
        """Take the exclusive lock of ``key``; closing the returned fd releases it."""
        return acquire_lock(self.root, key)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        """Exclusive lock for writers of ``key``, across threads and processes."""
        try:
            fd = self._acquire(key)
        except CreateOnlyUnsupported as exc:
            raise StorageError(
                self.url, key, f"cannot lock under {self.root}: {exc}", hint=LOCK_HINT
            ) from None
        try:
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _create_only(self, key: str, tmp: Path, path: Path) -> None:
        """Give ``tmp`` the name ``path`` only if no object has it yet (:func:`.createonly.create_only`).

        Raises:
            ConflictError: the name exists.
            StorageError: the filesystem supports none of the create-only methods.
        """
        create_only(self.url, self.root, self.create_only_methods, key, tmp, path)

    def _write_temp(self, dir_fd: int, path: Path, data: bytes) -> tuple[Temporary, str]:
        """Write ``data`` whole to a fsynced ``.tmp.*`` next to ``path`` (in ``dir_fd``), locked while we hold it."""
        temp = temporaries.create(path.parent, dir_fd=dir_fd)
        try:
            with os.fdopen(temp.fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                sha = hashlib.sha256(data).hexdigest()
                record_sha256(f.fileno(), sha)
        except BaseException:
            temp.release()
            raise
        return temp, sha

    def _open_object(self, key: str, dir_fd: int | None = None) -> int:
        """A read-only fd on the object's current file, never through a symlink (``dir_fd``: its folder's)."""
        path = self._path(key)
        try:
            with nofollow.held(self._parent(key) if dir_fd is None else os.dup(dir_fd)) as folder:
                fd = nofollow.open_object(self.url, folder, key.rpartition("/")[2], path, key=key, where=self.role)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(self.url, key, "no such object") from None
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ObjectNotFoundError(self.url, key, "no such object (it is a folder)")
        return fd

    # --- the contract -------------------------------------------------------------

    def get(self, key: str) -> tuple[bytes, str]:
        with self._errors(key):
            fd = self._open_object(key)
            with os.fdopen(fd, "rb") as f:
                data = f.read()
        return data, hashlib.sha256(data).hexdigest()

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        path = self._path(key)
        with self._errors(key), nofollow.held(self._parent(key, create=True)) as dir_fd:
            temp, sha = self._write_temp(dir_fd, path, bytes(data))
            try:
                if if_absent:
                    create_only(self.url, self.root, self.create_only_methods, key, temp.path, path, dir_fd=dir_fd)
                else:
                    with self._lock(key):
                        self._refuse_link(dir_fd, key)
                        os.replace(temp.name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                self._sync(dir_fd)
            finally:
                temp.release()
        return sha

    def replace(self, key: str, data: bytes, *, etag: str) -> str:
        path = self._path(key)
        with self._errors(key), nofollow.held(self._parent(key, create=True)) as dir_fd:
            temp, sha = self._write_temp(dir_fd, path, bytes(data))
            try:
                with self._lock(key):
                    try:
                        fd = self._open_object(key, dir_fd)
                    except ObjectNotFoundError:
                        raise ConflictError(self.url, key, "vanished since it was read") from None
                    try:
                        current = _etag_fd(fd)
                    finally:
                        os.close(fd)
                    if current != etag:
                        raise ConflictError(self.url, key, "changed since it was read")
                    os.replace(temp.name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                self._sync(dir_fd)
            finally:
                temp.release()
        return sha

    def stat(self, key: str) -> ObjectInfo:
        with self._errors(key):
            fd = self._open_object(key)
            try:
                return ObjectInfo(key=key, size=os.fstat(fd).st_size, etag=_etag_fd(fd))
            finally:
                os.close(fd)

    def exists(self, key: str) -> bool:
        with self._errors(key):
            try:
                os.close(self._open_object(key))
            except ObjectNotFoundError:
                return False
        return True

    def delete(self, key: str) -> None:
        name = self._path(key).name
        with self._errors(key), self._lock(key):
            try:
                dir_fd = self._parent(key)
            except (FileNotFoundError, NotADirectoryError):
                return
            with nofollow.held(dir_fd):
                try:
                    st = os.lstat(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    return
                if stat_mod.S_ISLNK(st.st_mode):  # unlinking would be safe, but someone planted it: say so
                    raise nofollow.refusal(self.url, key, self._path(key), where=self.role)
                if stat_mod.S_ISREG(st.st_mode):
                    os.unlink(name, dir_fd=dir_fd)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        head, _, _ = prefix.rpartition("/")
        if head:
            try:
                check_key(self.url, head)
            except InvalidKeyError:
                return  # no valid key starts so; and "../" must not walk outside the root
        try:
            folder = self._parent(f"{head}/x" if head else "x")
        except (FileNotFoundError, NotADirectoryError):
            return
        with nofollow.held(folder):
            yield from self._walk(folder, f"{head}/" if head else "", prefix)

    def _walk(self, folder: int, base: str, prefix: str) -> Iterator[ObjectInfo]:
        for key, fd in nofollow.walk_files(folder, base, prefix):
            try:
                st = os.fstat(fd)
                if stat_mod.S_ISREG(st.st_mode):
                    yield ObjectInfo(key=key, size=st.st_size, etag=_etag_fd(fd), modified=st.st_mtime)
            finally:
                os.close(fd)

    def orphans(self, *, min_age: float) -> Iterator[Orphan]:
        for found in temporaries.leftovers(self.root, min_age=min_age):
            kind = "planted symlink" if found.is_symlink else "temporary file"
            yield Orphan(url=found.path.as_uri(), kind=kind, size=found.size, age=found.age, handle=found)

    def remove_orphan(self, orphan: Orphan) -> bool:
        found = orphan.handle
        if not isinstance(found, temporaries.Leftover) or not found.path.is_relative_to(self.root):
            return False
        return temporaries.remove(found)

    def upload_file(
        self,
        key: str,
        path: str | Path,
        *,
        sha256: str,
        progress: ProgressCallback | None = None,
    ) -> ObjectInfo:
        target = self._path(key)
        with open(path, "rb") as source, self._errors(key):
            if (known := self._known(key)) is not None and known.etag == sha256:
                return known  # content-addressed: already stored and verified
            dir_fd = self._parent(key, create=True)
        with self._errors(key), nofollow.held(dir_fd), open(path, "rb") as source:
            # What a killed upload left here (a blob's folder, a site copy's) goes first.
            temporaries.sweep(nofollow.pinned(dir_fd, target.parent))
            temp = temporaries.create(target.parent, dir_fd=dir_fd)
            try:
                with os.fdopen(temp.fd, "wb") as out:
                    got, size = copy_hashed(source, out, progress=progress)
                    out.flush()
                    os.fsync(out.fileno())
                    if got != sha256:
                        raise upload_mismatch(self.url, key, path, got, sha256)
                    record_sha256(out.fileno(), got)
                with self._lock(key):
                    self._refuse_link(dir_fd, key)
                    os.replace(temp.name, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                self._sync(dir_fd)
            finally:
                temp.release()
        return ObjectInfo(key=key, size=size, etag=sha256)

    def _known(self, key: str) -> ObjectInfo | None:
        """The object's info if its hash is cached (no re-reading), else None."""
        try:
            fd = self._open_object(key)
        except ObjectNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            sha = cached_sha256(fd, st)
            return None if sha is None else ObjectInfo(key=key, size=st.st_size, etag=sha)
        finally:
            os.close(fd)

    def download_file(
        self,
        key: str,
        dest: str | Path,
        *,
        sha256: str,
        progress: ProgressCallback | None = None,
    ) -> Path:
        with self._errors(key):
            fd = self._open_object(key)
        # Read one inode throughout, even if the key is replaced meanwhile.
        with os.fdopen(fd, "rb") as source:

            def read_from(offset: int) -> Iterator[bytes]:
                source.seek(offset)
                while chunk := source.read(CHUNK):
                    yield chunk

            return download_resumable(
                url=self.url,
                key=key,
                dest=dest,
                sha256=sha256,
                size=os.fstat(fd).st_size,
                read_from=read_from,
                progress=progress,
            )
