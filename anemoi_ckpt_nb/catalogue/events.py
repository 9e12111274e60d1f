"""The events the catalogue publishes to its index: a record put, its tags changed, a record deleted (copies: :mod:`.copies`).

Each writer (register, tags, clean, the sites) makes its events here and hands them to
:meth:`CatalogueStore.publish <anemoi_ckpt_nb.catalogue.store.CatalogueStore.publish>`; :mod:`.index` applies them.
"""

from __future__ import annotations

from typing import Any

from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, IndexEntry, TagState

Entry = dict[str, Any]


Event = dict[str, Any]


def entry_of(record: CheckpointRecord, tags: TagState | None = None) -> Entry:
    """The index entry of a record (with its tags, if known), as plain JSON data."""
    entry = IndexEntry(
        uuid=record.uuid,
        name=record.name,
        kind=record.kind,
        format=record.format,
        run_id=record.run_id,
        parents=record.parents,
        epoch=record.epoch,
        global_step=record.global_step,
        sha256=record.sha256,
        size=record.size,
        blob=record.blob,
        metadata_blob=record.metadata_blob,
        filename=record.filename,
        dataset=record.dataset,
        registered_at=generation_of(record),
        registered_by=str(record.registered_by),
    ).model_dump(mode="json")
    if tags is not None and tags.generation == entry["registered_at"]:
        entry["tags"] = list(tags.tags)
        entry["tags_revision"] = tags.revision
    return entry


def generation_of(record: CheckpointRecord) -> str:
    """The text that tells apart two registrations of the same uuid."""
    return record.registered_at.isoformat()


def put_event(record: CheckpointRecord, tags: TagState | None = None) -> Event:
    return {"op": "put", "entry": entry_of(record, tags)}


def tags_event(state: TagState) -> Event:
    return {
        "op": "tags",
        "uuid": state.uuid,
        "generation": state.generation,
        "revision": state.revision,
        "tags": list(state.tags),
    }


def delete_event(uuid: str, generation: str) -> Event:
    return {"op": "delete", "uuid": uuid, "generation": generation}
