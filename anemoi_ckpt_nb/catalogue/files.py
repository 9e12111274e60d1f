"""Getting things back out of the catalogue: a checkpoint's metadata.

Its file comes back through :func:`anemoi_ckpt_nb.sites.fetch.fetch`, which tries every recorded copy.
"""

from __future__ import annotations

import hashlib
from typing import Any

from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.documents import parse_object
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import CatalogueError, ObjectNotFoundError, SchemaError


def read_metadata(store: CatalogueStore, record: CheckpointRecord) -> dict[str, Any]:
    """The checkpoint's Anemoi metadata (without supporting arrays), from its metadata blob.

    Raises:
        CatalogueError: the record has no metadata blob, or it is missing
            (registering the file again restores it).
        SchemaError: the blob is damaged: its bytes do not hash to its key, or it is not
            a JSON object (registering the file again restores it).
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
    where = f"{record.uuid}: its metadata {record.metadata_blob} in {store.url}"
    hint = "register the file again to restore it"
    document = parse_object(data, f"{where} is damaged", hint=hint)
    # The key is the hash of the content: a blob altered into other valid JSON is caught
    # here rather than returned as the checkpoint's metadata.
    if layout.blob_key(hashlib.sha256(data).hexdigest()) != record.metadata_blob:
        raise SchemaError(f"{where} is damaged: its bytes no longer match their sha256", hint=hint)
    return document
