"""Getting things back out of the catalogue: a checkpoint's file and its metadata."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.core.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.core.errors import CatalogueError, ObjectNotFoundError
from anemoi_ckpt_nb.core.schema import CheckpointRecord


def download(
    store: CatalogueStore,
    record: CheckpointRecord,
    dest: str | Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Fetch a checkpoint's file, verified against its sha256.

    An interrupted download resumes from where it stopped.

    Args:
        store: The catalogue.
        record: The checkpoint.
        dest: A file path, or an existing folder to put ``record.filename`` in.
        progress: Called with byte counts.

    Returns:
        The path of the downloaded file.

    Raises:
        CatalogueError: the checkpoint was registered without uploading its file.
        IntegrityError: the bytes do not match; ``dest`` is untouched.
    """
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / record.filename
    if record.blob is None:
        raise CatalogueError(
            f"{record.uuid}: registered without its file (upload=False); it was at "
            f"{record.source.host}:{record.source.path}",
            hint=f"copy it from there, or register it again from that machine with upload: `anemoi-ckpt register {record.source.path}`",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        return store.storage.download_file(record.blob, dest, sha256=record.sha256, progress=progress)
    except ObjectNotFoundError:
        raise CatalogueError(
            f"{record.uuid}: its file {record.blob} is missing from {store.url}",
            hint="the blob was removed outside anemoi-ckpt; register the file again to restore it",
        ) from None


def read_metadata(store: CatalogueStore, record: CheckpointRecord) -> dict[str, Any]:
    """The checkpoint's Anemoi metadata (without supporting arrays), from its metadata blob.

    Raises:
        CatalogueError: the record has no metadata blob, or it is missing.
    """
    if record.metadata_blob is None:
        raise CatalogueError(f"{record.uuid}: no metadata stored for this record")
    try:
        data, _ = store.storage.get(record.metadata_blob)
    except ObjectNotFoundError:
        raise CatalogueError(
            f"{record.uuid}: its metadata {record.metadata_blob} is missing from {store.url}",
            hint="register the file again to restore it",
        ) from None
    return json.loads(data)
