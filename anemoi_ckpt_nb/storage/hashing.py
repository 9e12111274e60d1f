"""Streaming sha256 of files, shared by the reader, convert, storage and catalogue.

Hashing a training checkpoint is the slowest thing most commands do (2.8 GB
takes 1.5 to 2 s of one core, and as long again to read from disk), and the
same file is hashed again and again: registered, converted to two formats,
upgraded. So the sha256 of a file is remembered in an extended attribute of
the file itself, ``user.anemoi_ckpt.sha256 = "SIZE:MTIME_NS:SHA256"``: it
lives and dies with the inode, it follows the file through a rename, and it is
believed only while the file's size and modification time (to the nanosecond)
are still those it was computed for. Any write changes them; the risk left is a
tool that rewrites a file with the same size and then sets its old
modification time back, which is why downloads and caches that must *prove*
their bytes (:mod:`anemoi_ckpt_nb.runs.cache`) always re-read with
:func:`sha256_file`.

What the cache is trusted for: naming a file's content (the sha256 a record
or a conversion's ``converted_from`` states, the key a blob goes to), and
finding the registered file still in place (``Checkpoint.local_path``). What
it is never trusted for: the bytes a storage keeps under a content address.
An upload hashes what it sends and is refused unless that is the sha256 it is
stored under (``upload_file`` of every backend), so a record that lies (the
file rewritten with the same size and its old mtime put back; written again
within the file system's timestamp granularity while it was hashed, which
:func:`record_sha256`'s before/after check cannot see; or set by whoever owns
the file, as the attribute is theirs to write) is refused there, instead of
other bytes being stored where every user of the catalogue finds them under
that hash. Trusting it on an unchanged ``stat`` would save an upload about
0.6 s of CPU per GB; it was measured and not done (docs/storage.md, "What
checks the bytes").

Recording is best effort and never an error: a file system without extended
attributes, or a file the user may not write (someone else's checkpoint), is
simply hashed again next time. Setting the attribute changes the file's ctime,
not its bytes or mtime. ``ANEMOI_CKPT_HASH_CACHE=off`` turns the cache off for
users' files (neither read nor written); the local catalogue storage keeps
using it for the files it owns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

CHUNK = 8 * 1024 * 1024

#: The extended attribute that remembers a file's sha256.
XATTR = "user.anemoi_ckpt.sha256"
#: The environment variable that turns the cache off for users' files.
CACHE_ENV = "ANEMOI_CKPT_HASH_CACHE"

_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str | Path, *, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks so memory stays flat; never cached."""
    with open(path, "rb") as f:
        return read_sha256(f.fileno(), progress)


def read_sha256(fd: int, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of the open file ``fd``, read from its start in 8 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(CHUNK))
    offset = 0
    while length := os.preadv(fd, [view], offset):
        digest.update(view[:length])
        offset += length
        if progress is not None:
            progress(length)
    return digest.hexdigest()


def cache_enabled() -> bool:
    """Whether users' files may have their sha256 read from and written to the cache."""
    return os.environ.get(CACHE_ENV, "on").strip().lower() not in ("0", "off", "no", "false")


def cached_sha256(fd: int, st: os.stat_result | None = None) -> str | None:
    """The sha256 remembered for the open file ``fd``, if it still describes the file.

    Args:
        fd: an open descriptor of the file (any mode).
        st: its ``os.fstat``, if the caller has it already.
    """
    try:
        size, mtime, sha = os.getxattr(fd, XATTR).decode("ascii").split(":")
        st = st if st is not None else os.fstat(fd)
        if int(size) == st.st_size and int(mtime) == st.st_mtime_ns and _SHA256.fullmatch(sha):
            return sha
    except (AttributeError, OSError, ValueError, UnicodeDecodeError):  # none, unreadable or not ours
        pass
    return None


def record_sha256(fd: int, sha: str, hashed: os.stat_result | None = None) -> bool:
    """Remember ``sha`` as the sha256 of the open file ``fd``; True if it was recorded.

    Args:
        fd: an open descriptor of the file (any mode; the user needs write
            permission on the file for the attribute to be set).
        sha: its hex sha256.
        hashed: the file's ``os.fstat`` from before it was read. When given,
            nothing is recorded if the file has changed since (a writer was
            busy with it: the hash may describe no version of the file).
    """
    with contextlib.suppress(AttributeError, OSError):  # no xattrs here, or not our file to mark
        st = os.fstat(fd)
        if hashed is not None and (st.st_size, st.st_mtime_ns) != (hashed.st_size, hashed.st_mtime_ns):
            return False
        os.setxattr(fd, XATTR, f"{st.st_size}:{st.st_mtime_ns}:{sha}".encode("ascii"))
        return True
    return False


def sha256_of(path: str | Path, *, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a user's file, from the cache when it is valid, else read and remembered.

    Args:
        path: the file.
        progress: called with byte counts while reading; on a cache hit, once
            with the file's size, so that progress totals stay right.

    Raises:
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as f:
        return sha256_fd(f.fileno(), progress=progress, remember=cache_enabled())


def sha256_fd(fd: int, *, progress: Callable[[int], None] | None = None, remember: bool = True) -> str:
    """Hex sha256 of the open file ``fd``: the remembered one while valid, else read and remembered.

    Args:
        fd: an open descriptor of the file (any mode).
        progress: as for :func:`sha256_of`.
        remember: use the cache at all (False: read, and record nothing).

    Raises:
        OSError: the file cannot be read.
    """
    st = os.fstat(fd)
    if remember and (sha := cached_sha256(fd, st)) is not None:
        if progress is not None:
            progress(st.st_size)
        return sha
    sha = read_sha256(fd, progress)
    if remember:
        record_sha256(fd, sha, st)
    return sha
