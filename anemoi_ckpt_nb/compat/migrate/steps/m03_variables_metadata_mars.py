"""m03: ``variables_metadata`` entries with their MARS keys at the top level.

Older datasets described a variable as ``{"param": "t", "levelist": 850, ...}``;
anemoi-datasets now nests the request under ``mars``. anemoi-inference
patches the old form on every read ("Old metadata format detected. Please
update your weights.", ``legacy.py``) by copying the entry into ``mars``;
this step does it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anemoi_ckpt_nb.compat.migrate.base import Step
from anemoi_ckpt_nb.compat.migrate.steps._layout import datasets


def _old_entries(dataset: Mapping[str, Any]) -> list[dict[str, Any]]:
    described = dataset.get("variables_metadata")
    if not isinstance(described, dict):
        return []
    return [e for e in described.values() if isinstance(e, dict) and "mars" not in e and "param" in e]


def _applies(document: Mapping[str, Any]) -> bool:
    return any(_old_entries(d) for d in datasets(document))


def _apply(document: dict[str, Any]) -> dict[str, Any]:
    for dataset in datasets(document):
        for entry in _old_entries(dataset):
            entry["mars"] = dict(entry)
    return document


STEP = Step(
    name="m03_variables_metadata_mars",
    description="nest old top-level MARS keys of variables_metadata under 'mars'",
    applies=_applies,
    apply=_apply,
)
