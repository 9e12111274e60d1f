"""Who a checkpoint is: its uuid (the one lineage uses), the embedded uuid, run id, parent, epoch and step, from its metadata.

Filled in on a :class:`~anemoi_ckpt_nb.read.checkpoint.CheckpointFile` by the openers.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any


#: Where embedded metadata comes from (``CheckpointFile.metadata_source``).
EMBEDDED_SOURCES = ("anemoi.json", "ai-models.json")


def fill_identity(ck: Any, pickled: dict | None = None) -> None:
    """uuid, run id and parent from the metadata; a training file's lineage uuid from its pickle.

    anemoi-training >= 0.6 with torch >= 2.6 saves a training file with uuid U1 in
    ``hyper_parameters["metadata"]`` (``pickled``: the uuid of the inference file saved beside it,
    and the ``parent_uuid`` its resumes and forks record), then embeds anemoi.json with a new uuid
    U2. ``uuid`` is U1, the one lineage uses; ``embedded_uuid`` is U2; ``uuids`` holds both.
    """
    metadata = ck.metadata or {}
    ck.embedded_uuid = str_or_none(metadata.get("uuid")) if ck.metadata_source in EMBEDDED_SOURCES else None
    pickled = pickled if isinstance(pickled, dict) else {}
    lineage_uuid = pickled.get("uuid") if isinstance(pickled.get("uuid"), str) else None
    ck.uuid = lineage_uuid or str_or_none(metadata.get("uuid"))
    ck.uuids = [u for u in dict.fromkeys((ck.uuid, ck.embedded_uuid)) if u]
    ck.run_id = str_or_none(metadata.get("run_id"))
    parent = pickled.get("parent_uuid")
    ck.parent_uuid = str_or_none(parent if isinstance(parent, str) else metadata.get("parent_uuid"))
    training = metadata.get("training")
    if isinstance(training, dict):
        ck.epoch = int_or_none(training.get("current_epoch", training.get("epoch")), None)
        ck.global_step = int_or_none(training.get("global_step"), None)


def str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def int_or_none(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value
