"""m04: ``provenance_training.module_versions`` entries as ``{"version": ...}``.

anemoi-utils up to 0.4 recorded ``{"anemoi.models": "0.3.1"}``; since 0.5
``gather_provenance_info`` records ``{"anemoi.models": {"version": "0.3.1"}}``
(plus ``source`` for packages installed from git). anemoi-inference's
``validate_environment`` accepts both; this step writes the current form, so
code reading the metadata has one shape to handle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anemoi_ckpt_nb.compat.migrate.base import Step
from anemoi_ckpt_nb.compat.migrate.steps._layout import provenance


def _versions(document: Mapping[str, Any]) -> dict[str, Any]:
    found = (provenance(document) or {}).get("module_versions")
    return found if isinstance(found, dict) else {}


def _applies(document: Mapping[str, Any]) -> bool:
    return any(isinstance(v, str) for v in _versions(document).values())


def _apply(document: dict[str, Any]) -> dict[str, Any]:
    versions = _versions(document)
    for name, value in versions.items():
        if isinstance(value, str):
            versions[name] = {"version": value}
    return document


STEP = Step(
    name="m04_module_versions_as_dicts",
    description="record provenance module versions as {'version': ...} like anemoi-utils 0.5",
    applies=_applies,
    apply=_apply,
)
