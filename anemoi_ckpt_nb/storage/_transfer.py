"""Resumable, verified downloads and hashed copies shared by the backends.

A download appends to ``<dest>.part``, which therefore always holds a prefix
of the object: an interrupted transfer continues from its size. Only bytes
that hash to the expected sha256 are renamed to ``dest``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from anemoi_ckpt_nb.errors import IntegrityError
from anemoi_ckpt_nb.storage.base import ProgressCallback

CHUNK = 8 * 1024 * 1024

#: Yields the object's bytes from the given offset to its end, in order.
ReadFrom = Callable[[int], Iterator[bytes]]


def part_path(dest: str | Path) -> Path:
    """The temporary name a download of ``dest`` is written to."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; some filesystems refuse, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def upload_mismatch(
    url: str, key: str, path: str | Path, got: str, expected: str
) -> IntegrityError:
    """The error for a file that does not hash to what the caller said it would."""
    return IntegrityError(
        url,
        key,
        f"{path} hashes to {got}, expected {expected}; nothing stored",
        hint="the file changed since its hash was computed",
    )


def copy_hashed(
    source: BinaryIO, target: BinaryIO, *, progress: ProgressCallback | None = None
) -> tuple[str, int]:
    """Copy ``source`` to ``target`` in chunks; return ``(sha256, size)`` of what was copied."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK):
        target.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return digest.hexdigest(), size


def _open_part(part: Path) -> BinaryIO:
    """Open ``part`` for appending with an exclusive lock.

    Two downloads of the same ``dest`` must not interleave appends. The lock
    is taken on the open file, so after waiting we check that the path still
    names that file: the other download may have renamed it into place.
    """
    while True:
        try:
            # Never through a symlink: one planted at <dest>.part would make us append the
            # checkpoint to whatever file it points at (docs/threat-model.md).
            fd = os.open(part, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            part.unlink()  # removes the link itself, never its target
            continue
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IsADirectoryError(errno.EISDIR, "not a regular file", str(part))
        f = os.fdopen(fd, "ab")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            if os.stat(part).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()


def _hash_prefix(f: BinaryIO, part: Path, size: int) -> tuple[hashlib._Hash, int]:
    """Hash what an earlier attempt left in ``part``; drop it if it cannot be a prefix."""
    digest = hashlib.sha256()
    have = os.fstat(f.fileno()).st_size
    if have > size:
        f.truncate(0)
        return digest, 0
    offset = 0
    while chunk := os.pread(f.fileno(), CHUNK, offset):  # the file we hold, not whatever the name means now
        digest.update(chunk)
        offset += len(chunk)
    return digest, have


def download_resumable(
    *,
    url: str,
    key: str,
    dest: str | Path,
    sha256: str,
    size: int,
    read_from: ReadFrom,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch an object of ``size`` bytes to ``dest`` through ``<dest>.part``.

    Args:
        url: Storage URL, for error messages.
        key: Key of the object, for error messages.
        dest: Final path; only written by an atomic rename of verified bytes.
        sha256: Expected hex sha256 of the whole object.
        size: Size of the object in bytes.
        read_from: Yields the object's bytes from an offset to its end.
        progress: Called with the number of bytes fetched (a resumed prefix
            is not fetched again, so it is not counted).

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        IntegrityError: the bytes do not hash to ``sha256`` even when fetched
            from the start; ``dest`` is untouched and the temporary removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    got = ""
    for _attempt in range(2):
        with _open_part(part) as f:
            digest, offset = _hash_prefix(f, part, size)
            for chunk in read_from(offset) if offset < size else ():
                f.write(chunk)
                digest.update(chunk)
                if progress is not None:
                    progress(len(chunk))
            f.flush()
            os.fsync(f.fileno())
            got = digest.hexdigest()
            if got == sha256:
                os.replace(part, dest)
                fsync_dir(dest.parent)
                return dest
            part.unlink()
        if offset == 0:
            break
        # The kept prefix may come from another object: retry once from scratch.
    raise IntegrityError(
        url,
        key,
        f"downloaded bytes hash to {got}, expected {sha256}; {dest} was not written",
        hint="the stored object is damaged or the expected hash is wrong",
    )
