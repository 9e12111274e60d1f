"""Temporary files, and how the next run tells those of a killed writer from those still being written.

Every temporary anemoi-ckpt writes before renaming it into place (a folder storage's ``.tmp.*``
next to an object or a site copy, a conversion's ``.<name>.<uuid>.tmp``) is made by :func:`create`
or :func:`create_named`, which hold an ``flock`` on it for as long as the writer has it. The kernel
drops that lock when the process ends, however it ends (``kill -9`` included), so a temporary that
no process holds is dead and may go; one that is held is never touched. This is how ``sqlite`` and
``git`` tell a live lock from a stale one, without guessing from ages or process ids (which do not
cross nodes). It needs ``flock`` to work across the nodes that share the folder, as the folder
storage's compare-and-swap already does (:mod:`.local`); where the filesystem refuses ``flock``,
a temporary counts as dead only once it has not changed for ``min_age`` seconds.

The remover takes the same lock before it unlinks and the writer checks, once it holds its lock,
that its file still has a name (``st_nlink``): if a remover took a new temporary in the instant
between its creation and its lock, the writer makes another one instead of writing into nothing.
Nothing is ever followed through a symlink: a symlink with a temporary's name is removed itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat as stat_mod
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: The prefix of a folder storage's temporaries (``.tmp.<random>``).
PREFIX = ".tmp."
#: The suffix of the other temporaries (``.<name>.<random>.tmp``).
SUFFIX = ".tmp"

_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: How long a temporary on a filesystem without ``flock`` must have been left unchanged to count as
#: dead (a day, as ``rclone cleanup`` waits for multipart uploads).
UNLOCKED_AGE = 24 * 3600.0
#: Errors of a filesystem that does not do ``flock`` (then only the age tells).
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}


def is_temporary_name(name: str) -> bool:
    """True if ``name`` is one of our temporaries' names (``.tmp.*`` or ``.*.tmp``)."""
    return name.startswith(PREFIX) or (name.startswith(".") and name.endswith(SUFFIX) and len(name) > len(SUFFIX) + 1)


class Temporary:
    """A temporary file this process is writing, locked until :meth:`release`.

    ``fd`` is open for writing; closing it (``os.fdopen(...)`` does) keeps the lock, which is held
    on a second descriptor. :meth:`release` drops the lock and removes the name if it is still
    there (after a rename into place it is not).
    """

    def __init__(self, path: Path, fd: int, lock_fd: int, *, dir_fd: int | None = None) -> None:
        self.path = path
        self.fd = fd
        self._lock_fd: int | None = lock_fd
        #: With :func:`create` given a folder descriptor: ours (a copy), the name is relative to it.
        self.dir_fd = dir_fd

    @property
    def name(self) -> str:
        return self.path.name

    def release(self) -> None:
        if self._lock_fd is None:
            return
        try:
            if self.dir_fd is None:
                self.path.unlink(missing_ok=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path.name, dir_fd=self.dir_fd)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None
            if self.dir_fd is not None:
                os.close(self.dir_fd)

    def __enter__(self) -> Temporary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_new(path: Path, fd: int, dir_fd: int | None = None) -> Temporary | None:
    """Lock a file just created; None if a remover unlinked it before the lock was taken."""
    lock_fd = os.dup(fd)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
        if os.fstat(lock_fd).st_nlink == 0:
            os.close(lock_fd)
            os.close(fd)
            return None
    except BaseException:
        os.close(lock_fd)
        raise
    return Temporary(path, fd, lock_fd, dir_fd=None if dir_fd is None else os.dup(dir_fd))


def create(folder: str | os.PathLike, *, prefix: str = PREFIX, suffix: str = "", dir_fd: int | None = None) -> Temporary:
    """A new, locked temporary in ``folder`` under a random name (``<prefix><random><suffix>``).

    Args:
        dir_fd: a descriptor on ``folder`` (:mod:`.nofollow`): the temporary is made and later
            removed relative to it, so a folder swapped for a symlink meanwhile is not followed.
    """
    while True:
        if dir_fd is None:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        else:
            name = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{suffix}")
            try:
                fd = os.open(os.path.basename(name), _CREATE, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue
        held = _lock_new(Path(name), fd, dir_fd)
        if held is not None:
            return held


def create_named(path: str | os.PathLike) -> Temporary:
    """A new, locked temporary named ``path`` (created exclusively: ``FileExistsError`` if it exists)."""
    path = Path(path)
    while True:
        fd = os.open(path, _CREATE, 0o600)
        held = _lock_new(path, fd)
        if held is not None:
            return held


@dataclass(frozen=True)
class Leftover:
    """A temporary that no process holds: what a killed writer left."""

    path: Path
    size: int
    #: Seconds since it last changed.
    age: float
    is_symlink: bool = False


def _probe(path: Path, min_age: float) -> Leftover | None:
    """``path`` as a leftover, or None if it is held, too young to tell, gone or not a file."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    age = max(0.0, time.time() - st.st_mtime)
    if stat_mod.S_ISLNK(st.st_mode):
        return Leftover(path, 0, age, is_symlink=True)  # planted: never ours, never followed
    if not stat_mod.S_ISREG(st.st_mode):
        return None
    try:
        fd = os.open(path, _NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None  # a live writer holds it
    except OSError as error:
        if error.errno not in _NO_LOCKS or age < min_age:
            return None
    finally:
        os.close(fd)
    return Leftover(path, st.st_size, age)


def leftovers(folder: str | os.PathLike, *, recursive: bool = True, min_age: float = UNLOCKED_AGE) -> Iterator[Leftover]:
    """The temporaries under ``folder`` that no process holds (symlinked folders are not entered).

    Args:
        min_age: where the filesystem has no ``flock``, how many seconds a temporary must have been
            left unchanged to count; with locks, an unheld temporary counts at any age.
    """
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in sorted(entries, key=lambda e: e.name):
        if is_temporary_name(entry.name):
            found = _probe(Path(entry.path), min_age)
            if found is not None:
                yield found
        elif recursive and entry.is_dir(follow_symlinks=False):
            yield from leftovers(entry.path, recursive=True, min_age=min_age)


def remove(leftover: Leftover) -> bool:
    """Remove a leftover unless a writer took it since it was found; True if removed."""
    path = leftover.path
    if leftover.is_symlink:
        try:
            if stat_mod.S_ISLNK(os.lstat(path).st_mode):
                os.unlink(path)
                return True
        except FileNotFoundError:
            pass
        return False
    try:
        fd = os.open(path, _NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                return False
        # Unlink the very file we locked: the name could have been taken by another since.
        if os.lstat(path).st_ino != os.fstat(fd).st_ino:
            return False
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def sweep(folder: str | os.PathLike, *, recursive: bool = False, name_prefix: str = "") -> int:
    """Remove what killed writers left in ``folder`` (the next run's tidy-up); the number removed.

    Args:
        name_prefix: only temporaries whose names start so (a conversion's ``.<target name>.``).
    """
    found = (f for f in leftovers(folder, recursive=recursive) if f.path.name.startswith(name_prefix))
    return sum(remove(f) for f in found)
