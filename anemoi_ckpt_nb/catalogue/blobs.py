"""The bytes of a registration: the file's content-addressed blob, its metadata blob, the record already
filed for it, and putting back blobs removed or damaged outside anemoi-ckpt.
"""

from __future__ import annotations

from collections.abc import Callable

from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.records import FileFacts, metadata_document
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import ConflictError, ObjectNotFoundError, UuidClashError


def upload_blob(store: CatalogueStore, facts: FileFacts, progress: Callable[[int], None] | None) -> str:
    """Store the file under its content-addressed key; return the key.

    An object already under the key is not trusted for having the right size:
    a crashed or foreign writer, or bit rot, can leave other bytes of that
    size. ``upload_file`` itself skips the transfer only when the backend
    knows the stored object hashes to ``facts.sha256`` (memory: its content;
    local: the sha256 cached when it was written; S3: the sha256 our uploads
    record in the object's metadata) and otherwise writes the file again,
    verified, so what the record will name is these very bytes.
    """
    key = layout.blob_key(facts.sha256)
    store.storage.upload_file(key, facts.path, sha256=facts.sha256, progress=progress)
    return key


def _metadata_blob(facts: FileFacts) -> tuple[str, bytes]:
    """Key and bytes of the file's metadata blob."""
    import hashlib

    document = metadata_document(facts.metadata)
    return layout.blob_key(hashlib.sha256(document).hexdigest()), document


def store_metadata(store: CatalogueStore, facts: FileFacts) -> str:
    key, document = _metadata_blob(facts)
    try:
        store.storage.put(key, document, if_absent=True)
    except ConflictError:
        pass  # content-addressed: what is there is these very bytes
    return key


def existing_record(store: CatalogueStore, facts: FileFacts) -> CheckpointRecord | None:
    """The record already registered for this file, or None; raise if the uuid names other bytes.

    Earlier releases filed a current training file under its embedded uuid: a record of
    these very bytes under one of the file's other uuids is this file's record.
    """
    record = store.read_record(facts.uuid)
    if record is None:
        for other in facts.other_uuids:
            earlier = store.read_record(other)
            if earlier is not None and earlier.sha256 == facts.sha256:
                return earlier
        return None
    if record.sha256 != facts.sha256:
        raise UuidClashError(
            facts.uuid,
            f"{facts.path}: uuid {facts.uuid} is already registered for another file "
            f"({record.filename}, sha256 {record.sha256[:12]}..., this file {facts.sha256[:12]}...)",
            hint=f"a checkpoint uuid names one file; compare with `anemoi-ckpt show {facts.uuid}`. "
            "A modified copy needs a new uuid (save it again with anemoi-training or convert it)",
        )
    return record


def restore_blobs(
    store: CatalogueStore, record: CheckpointRecord, facts: FileFacts, *, upload: bool, progress: Callable[[int], None] | None
) -> None:
    """Put back the blobs of an existing record that were removed or damaged outside anemoi-ckpt.

    Registering the file again is the advertised repair for a missing file or metadata blob,
    and for a damaged metadata blob (its bytes no longer hash to its content-addressed key).
    """
    import hashlib

    if upload and record.blob is not None and not store.storage.exists(record.blob):
        upload_blob(store, facts, progress)
    if record.metadata_blob is None:
        return
    key, document = _metadata_blob(facts)
    # Only the very bytes the record names: another reader release may render them otherwise.
    if key != record.metadata_blob:
        return
    try:
        stored, _ = store.storage.get(key)
    except ObjectNotFoundError:
        store_metadata(store, facts)
        return
    if layout.blob_key(hashlib.sha256(stored).hexdigest()) != key:
        store.storage.put(key, document)
