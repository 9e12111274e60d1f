"""m05: legacy metadata with no ``version`` that already has the 1.0 content becomes 1.0.

Files from before anemoi-training set ``"version": "1.0"`` (anemoi-inference
reads them as ``0.0.0``) can hold everything 1.0 requires: a dataset
description with ``variables`` and the ``data_indices`` of the
``IndexCollection``. Those only lack the version key. Files without
``data_indices`` cannot be brought forward, because the index lists cannot be
recomputed from the metadata alone; ``validate`` reports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anemoi_ckpt_nb.compat.migrate.base import Step
from anemoi_ckpt_nb.compat.migrate.steps._layout import has_single_dataset_content, major


def _applies(document: Mapping[str, Any]) -> bool:
    return major(document) == 0 and has_single_dataset_content(document)


def _apply(document: dict[str, Any]) -> dict[str, Any]:
    document["version"] = "1.0"
    return document


STEP = Step(
    name="m05_legacy_to_v1",
    description="mark legacy metadata that has a dataset and data_indices as version 1.0",
    applies=_applies,
    apply=_apply,
)
