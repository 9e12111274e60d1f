"""Reaching a key's file under a folder storage without ever following a symlink (issue 18).

A catalogue folder or a site folder is shared: whoever may write there may plant a symlink where
we keep an object or a folder (``<site>/<uuid>`` -> another user's folder, ``blobs/sha256/<hash>``
-> another user's file). Following it would read, write or delete the other user's files with
our rights. So every part of a key is reached from the storage's root with ``openat`` and
``O_NOFOLLOW``: the folders one by one (a descriptor pins each, so swapping one for a link
meanwhile changes nothing), then the object itself. A symlink anywhere on the way is refused
with :class:`~anemoi_ckpt_nb.errors.SymlinkRefusedError`, naming it and its target. The root
itself is whatever the owner configured (it may be a link they made).

:func:`pinned` gives a path that resolves through a held descriptor (``/proc/self/fd/N``) for
code that takes paths (a download's ``.part``, a hashed upload); without ``/proc`` it is the
checked path, and a swap in the instant between the check and the use is not caught.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
from collections.abc import Iterator
from pathlib import Path

from anemoi_ckpt_nb.errors import SymlinkRefusedError
from anemoi_ckpt_nb.storage._keys import check_key

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Open a folder, refusing a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
#: Open an object for reading, refusing a symlink.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC
_PROC_FD = Path("/proc/self/fd")


def refusal(url: str, key: str | None, path: Path, *, where: str | None = None) -> SymlinkRefusedError:
    """The error for a symlink found at ``path``, naming its target and what to do."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    place = f" in {where}" if where else ""
    return SymlinkRefusedError(
        url,
        key,
        f"{path} is a symbolic link (to {target}){place}; anemoi-ckpt never reads, writes or deletes through one",
        hint=f"someone with write access planted it: check who (ls -l {path}), remove the link itself "
        f"(rm {path}; its target is not touched) and run the command again",
    )


def check_link(url: str, key: str | None, dir_fd: int, name: str, path: Path, *, where: str | None = None) -> None:
    """Raise :func:`refusal` if ``name`` in ``dir_fd`` is a symlink (after an ``ELOOP`` or ``ENOTDIR``)."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return
    if stat_mod.S_ISLNK(st.st_mode):
        raise refusal(url, key, path, where=where)


def open_parent(url: str, root: Path, key: str, *, create: bool = False, where: str | None = None) -> int:
    """A descriptor on the folder that holds ``key``'s last part, reached without following a link.

    Args:
        create: make missing folders (and the root) on the way.

    Raises:
        SymlinkRefusedError: a folder on the way is a symlink.
        FileNotFoundError: a folder is missing (``create=False``).
        NotADirectoryError: a part on the way is a file.
    """
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        parts = key.split("/")[:-1]
        for i, part in enumerate(parts):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                child = _open_dir(url, key, fd, part, root.joinpath(*parts[: i + 1]), where)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    check_link(url, key, fd, part, root.joinpath(*parts[: i + 1]), where=where)
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_dir(url: str, key: str, fd: int, part: str, path: Path, where: str | None) -> int:
    try:
        return os.open(part, DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            check_link(url, key, fd, part, path, where=where)
        raise


def open_object(url: str, dir_fd: int, name: str, path: Path, *, key: str, where: str | None = None) -> int:
    """A read-only descriptor on ``name`` in ``dir_fd``, refusing a symlink.

    Raises:
        SymlinkRefusedError: it is a symlink.
        FileNotFoundError: it does not exist.
    """
    try:
        return os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # ENOTDIR: O_NOFOLLOW on some systems
            check_link(url, key, dir_fd, name, path, where=where)
        raise


def pinned(fd: int, fallback: Path) -> Path:
    """A path that resolves to what ``fd`` holds for as long as it is open (Linux ``/proc``), else ``fallback``."""
    proc = _PROC_FD / str(fd)
    return proc if _PROC_FD.is_dir() else fallback


@contextlib.contextmanager
def held(fd: int) -> Iterator[int]:
    """Close ``fd`` on leaving."""
    try:
        yield fd
    finally:
        os.close(fd)


#: What an entry of a listing may have become by the time it is opened: gone, a link, a folder.
_GONE = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EISDIR})


def walk_files(folder: int, base: str, prefix: str) -> Iterator[tuple[str, int]]:
    """``(key, descriptor)`` of every file under ``folder`` whose key starts with ``prefix``, in key order.

    Dotted names and symlinks are skipped (a planted link is not an object: never followed,
    never listed); folders are entered by descriptor. The caller closes each descriptor.
    """
    items = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or entry.is_symlink():
            continue
        key = base + entry.name
        if entry.is_dir(follow_symlinks=False):
            # "a/" sorts where every "a/..." key does, keeping key order overall.
            folder_key = key + "/"
            if folder_key.startswith(prefix) or prefix.startswith(folder_key):
                items.append((folder_key, True, entry.name))
        elif key.startswith(prefix):
            items.append((key, False, entry.name))
    for key, is_dir, name in sorted(items):
        try:
            fd = os.open(name, DIR_FLAGS if is_dir else READ_FLAGS, dir_fd=folder)
        except OSError as exc:
            if exc.errno in _GONE:
                continue  # deleted, or swapped for a link, while we listed
            raise
        if is_dir:
            with held(fd):
                yield from walk_files(fd, key, prefix)
        else:
            yield key, fd


class NoFollowPaths:
    """The folder-storage methods that reach a key without following a link (mixed into ``LocalStorage``)."""

    url: str
    root: Path
    role: str

    def _parent(self, key: str, *, create: bool = False) -> int:
        """A descriptor on the folder holding ``key``, reached without following a link (:mod:`.nofollow`)."""
        return open_parent(self.url, self.root, check_key(self.url, key), create=create, where=self.role)

    def _refuse_link(self, dir_fd: int, key: str) -> None:
        """Raise if the object's own name is a planted symlink (a write would hide it, not follow it)."""
        check_link(self.url, key, dir_fd, key.rpartition("/")[2], self._path(key), where=self.role)

    @staticmethod
    def _sync(dir_fd: int) -> None:
        """Make a rename in the folder durable; some filesystems refuse, which is fine."""
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)

    @contextlib.contextmanager
    def pinned_path(self, key: str, *, create_folder: bool = False) -> Iterator[Path]:
        """A path to ``key`` through a held descriptor on its folder, for code that takes paths.

        Its folders are reached without following a link (``/proc/self/fd/N/<name>`` on Linux;
        elsewhere the checked path itself). Used to write a site copy by a download.

        Raises:
            SymlinkRefusedError: a folder on the way is a planted symlink.
        """
        with self._errors(key):
            dir_fd = self._parent(key, create=create_folder)
            try:
                self._refuse_link(dir_fd, key)
            except BaseException:
                os.close(dir_fd)
                raise
        with held(dir_fd):
            yield pinned(dir_fd, self._path(key).parent) / key.rpartition("/")[2]

    @contextlib.contextmanager
    def opened_path(self, key: str) -> Iterator[Path]:
        """A path to the object ``key`` through a held descriptor on it (never through a link), for reading.

        Raises:
            ObjectNotFoundError: no such object.
            SymlinkRefusedError: the object or a folder on the way is a planted symlink.
        """
        with self._errors(key):
            fd = self._open_object(key)
        with held(fd):
            yield pinned(fd, self._path(key))
