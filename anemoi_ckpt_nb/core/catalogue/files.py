"""Getting things back out of the catalogue: a checkpoint's metadata.

Its file comes back through :func:`anemoi_ckpt_nb.core.sites.fetch`, which tries every recorded copy.
"""

from __future__ import annotations

import json
from typing import Any

from anemoi_ckpt_nb.core.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.core.errors import CatalogueError, ObjectNotFoundError
from anemoi_ckpt_nb.core.schema import CheckpointRecord


def read_metadata(store: CatalogueStore, record: CheckpointRecord) -> dict[str, Any]:
    """The checkpoint's Anemoi metadata (without supporting arrays), from its metadata blob.

    Raises:
        CatalogueError: the record has no metadata blob, or it is missing
            (registering the file again restores it).
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
