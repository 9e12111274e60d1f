"""Creating a name only if it is free, on a POSIX folder, and the per-key locks that make it safe.

A finished temporary file gets its name by the first of these the filesystem
supports (:data:`CREATE_ONLY_METHODS`):

1. ``"link"``: ``os.link``, which fails atomically when the name exists (the
   ``O_EXCL`` of a finished file);
2. ``"renameat2"``: Linux ``renameat2(RENAME_NOREPLACE)`` through libc
   (glibc >= 2.28), equally atomic, for filesystems that refuse hard links
   (some FUSE and object-store mounts, CIFS, some GPFS or Lustre setups);
3. ``"lock"``: under the key's ``flock`` (:func:`acquire_lock`), check that the
   name is free, then ``os.replace``. Only safe among writers that take the same
   locks (every anemoi-ckpt process does) and where ``flock`` works across
   nodes (NFS with lockd, Lustre mounted ``-o flock``, GPFS).

A method the filesystem refuses is remembered per device for the process, so it
is not tried again on every write; if all are refused, the error names the
folder and the reasons. Lock files live under ``<root>/.locks/``, one of
:data:`_LOCK_STRIPES` chosen by the key's hash.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from anemoi_ckpt_nb.errors import ConflictError, StorageError

_LOCK_STRIPES = 256

#: Ways to create a name only if it is free, in the order tried (module docstring).
CREATE_ONLY_METHODS: tuple[str, ...] = ("link", "renameat2", "lock")

# os.link errors meaning "this filesystem does not do hard links", not "the name exists".
_LINK_REFUSED = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV, errno.ENOSYS}
)
# renameat2 errors meaning "no RENAME_NOREPLACE here" (old kernel, NFS, some FUSE).
_RENAMEAT2_REFUSED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})
# flock errors meaning "no locks on this filesystem" (NFS without lockd, some FUSE).
_FLOCK_REFUSED = frozenset(
    {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1

LOCK_HINT = (
    "mount the filesystem with working locks (NFS with lockd, Lustre with -o flock), "
    "or put the catalogue on a local disk or an s3:// bucket"
)

# (st_dev, method) -> why the filesystem refused it, for this process; a refusal is a
# property of the filesystem, so a failing os.link is not retried on every write.
_REFUSED: dict[tuple[int, str], str] = {}


class CreateOnlyUnsupported(Exception):
    """The filesystem does not support a create-only method; the message says why."""


def _refusal(what: str, exc: OSError) -> CreateOnlyUnsupported:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return CreateOnlyUnsupported(f"{what} refused ({name}: {exc.strerror or exc})")


@functools.cache
def _libc_renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2``, or None where libc has none (not Linux, glibc < 2.28)."""
    import ctypes  # only needed on filesystems without hard links

    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


def rename_noreplace(source: Path, target: Path, *, dir_fd: int | None = None) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists, atomically (Linux ``renameat2``).

    With ``dir_fd``, both are names in that folder (:mod:`.nofollow`).

    Raises:
        FileExistsError: ``target`` exists.
        CreateOnlyUnsupported: the system or the file system has no ``RENAME_NOREPLACE``.
    """
    func = _libc_renameat2()
    if func is None:
        raise CreateOnlyUnsupported("renameat2 is not in this system's C library")
    import ctypes

    at = _AT_FDCWD if dir_fd is None else dir_fd
    if dir_fd is not None:
        source, target = Path(source.name), Path(target.name)
    if func(at, os.fsencode(source), at, os.fsencode(target), _RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        exc = OSError(code, os.strerror(code), str(target))  # EEXIST -> FileExistsError
        if code in _RENAMEAT2_REFUSED:
            raise _refusal("renameat2(RENAME_NOREPLACE)", exc)
        raise exc


def acquire_lock(root: Path, key: str) -> int:
    """Take the exclusive lock of ``key`` under ``root``; closing the returned fd releases it.

    Raises:
        CreateOnlyUnsupported: the filesystem has no ``flock``.
    """
    folder = root / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    stripe = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % _LOCK_STRIPES
    # Never through a planted symlink (ELOOP, a typed error in LocalStorage): it would create files elsewhere.
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = os.open(f"{stripe:03d}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666, dir_fd=folder_fd)
    finally:
        os.close(folder_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _FLOCK_REFUSED:
            raise _refusal("flock", exc) from None
        raise
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_only(
    url: str, root: Path, methods: Sequence[str], key: str, tmp: Path, path: Path, *, dir_fd: int | None = None
) -> None:
    """Give ``tmp`` the name ``path`` only if no object has it yet, by the first of ``methods`` the filesystem takes.

    With ``dir_fd`` (a descriptor on their folder, :mod:`.nofollow`), both are taken relative to it.

    Raises:
        ConflictError: the name exists.
        StorageError: the filesystem supports none of the create-only methods.
    """
    device = os.stat(path.parent).st_dev if dir_fd is None else os.fstat(dir_fd).st_dev
    reasons = []
    for method in methods:
        reason = _REFUSED.get((device, method))
        if reason is None:
            try:
                _create_by(method, root, key, tmp, path, dir_fd)
                return
            except FileExistsError:
                raise ConflictError(
                    url, key, "already exists; create-only write refused"
                ) from None
            except CreateOnlyUnsupported as exc:
                reason = str(exc)
                if method != "lock":  # a lock refusal may be passing (lockd restarting)
                    _REFUSED[device, method] = reason
        reasons.append(f"{method}: {reason}")
    raise StorageError(
        url,
        key,
        f"cannot create objects safely under {root}: its filesystem supports none "
        f"of the create-only methods tried ({'; '.join(reasons)})",
        hint="put the catalogue on a filesystem with hard links, renameat2 or flock; "
        + LOCK_HINT,
    )


def _create_by(method: str, root: Path, key: str, tmp: Path, path: Path, dir_fd: int | None) -> None:
    """One create-only method: FileExistsError if the name is taken, CreateOnlyUnsupported
    if the filesystem refuses the method."""
    at = {} if dir_fd is None else {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}
    source, target = (tmp, path) if dir_fd is None else (tmp.name, path.name)
    if method == "link":
        try:
            os.link(source, target, **at, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno in _LINK_REFUSED:
                raise _refusal("hard link", exc) from None
            raise
    elif method == "renameat2":
        rename_noreplace(tmp, path, dir_fd=dir_fd)
    else:
        # Safe only against writers taking the same lock: put, replace, delete and
        # upload_file of LocalStorage all do, and the name is checked and taken while holding it.
        fd = acquire_lock(root, key)
        try:
            try:
                os.stat(target, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                os.replace(source, target, **at)
            else:
                raise FileExistsError(errno.EEXIST, "exists", str(path))
        finally:
            os.close(fd)
