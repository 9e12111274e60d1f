"""m02: dataset versions from the ecml-tools days, renumbered as anemoi-datasets counts.

When ecml-tools became anemoi-datasets the dataset versions went *back*: a
dataset recorded as 0.1.4, 0.1.7, 0.1.8 or 0.1.9 has the layout anemoi
calls 0.2.0, and a dataset description with neither ``version`` nor
``arguments`` is the first layout, 0.1.0 (anemoi-inference,
``Metadata.from_metadata``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anemoi_ckpt_nb.compat.migrate.base import Step
from anemoi_ckpt_nb.compat.migrate.steps._layout import datasets, major

ECML_TOOLS_VERSIONS = frozenset({"0.1.4", "0.1.7", "0.1.8", "0.1.9"})


def _new_version(dataset: Mapping[str, Any]) -> str | None:
    version = dataset.get("version")
    if version in ECML_TOOLS_VERSIONS:
        return "0.2.0"
    if version is None and "arguments" not in dataset:
        return "0.1.0"
    return None


def _old_datasets(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    # 2.0 files were written long after the renumbering; their datasets are left alone.
    return list(datasets(document)) if (major(document) or 0) < 2 else []


def _applies(document: Mapping[str, Any]) -> bool:
    return any(_new_version(d) for d in _old_datasets(document))


def _apply(document: dict[str, Any]) -> dict[str, Any]:
    for dataset in _old_datasets(document):
        new = _new_version(dataset)
        if new:
            dataset["version"] = new
    return document


STEP = Step(
    name="m02_dataset_version_ecml_tools",
    description="renumber ecml-tools dataset versions (0.1.4-0.1.9 -> 0.2.0; none -> 0.1.0)",
    applies=_applies,
    apply=_apply,
)
