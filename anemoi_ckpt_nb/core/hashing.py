"""Streaming sha256 of files, shared by the reader, convert, storage and catalogue."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def sha256_file(path: str | Path, *, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()
