"""Checks on a local disk before and after a large download: is there room, is the file whole;
and what a destination the user typed means (a folder or a file name).

Shared by the run cache (prefetch) and site transfers (replicate to a file system).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from anemoi_ckpt_nb.errors import InsufficientSpaceError
from anemoi_ckpt_nb.storage.hashing import sha256_file

#: Space left free after a download, beyond the file itself: 5% of it, at least 64 MiB.
MIN_MARGIN = 64 * 1024 * 1024
MARGIN_FRACTION = 0.05


def required_space(size: int, *, have: int = 0, margin: int | None = None) -> int:
    """Bytes that must be free to finish a download of ``size`` bytes of which ``have`` are there."""
    if margin is None:
        margin = max(MIN_MARGIN, int(size * MARGIN_FRACTION))
    return max(0, size - have) + margin


def check_space(folder: Path, size: int, *, have: int = 0, margin: int | None = None, hint: str | None = None) -> None:
    """Refuse a download that would fill the disk.

    Raises:
        InsufficientSpaceError: ``shutil.disk_usage(folder).free`` is below
            what the file (minus ``have`` bytes already there) and the margin need.
    """
    needed = required_space(size, have=have, margin=margin)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InsufficientSpaceError(
            folder, needed, free, hint=hint or "free some space or choose another --cache on a larger file system"
        )


def is_whole(path: Path, *, sha256: str, size: int, progress: Callable[[int], None] | None = None) -> bool:
    """Whether ``path`` is a file of ``size`` bytes hashing to ``sha256`` (the size is checked first, cheaply)."""
    return path.is_file() and path.stat().st_size == size and sha256_file(path, progress=progress) == sha256


def names_a_folder(dest: str | os.PathLike) -> bool:
    """True when ``dest`` is an existing folder, or ends with a slash: a folder, as with
    ``cp`` and ``aws s3 cp`` (``download ID here/`` puts the file in ``here/``, created if missing)."""
    text = os.fspath(dest)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def file_in(dest: str | os.PathLike, filename: str) -> Path:
    """Where a file named ``filename`` goes for the destination ``dest`` the user gave: inside it
    when it names a folder (see :func:`names_a_folder`), else ``dest`` itself."""
    return Path(dest) / Path(filename).name if names_a_folder(dest) else Path(dest)
