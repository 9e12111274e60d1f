"""m01: the oldest files keep ``dataset`` as a list of zarr attributes, one per source.

anemoi-inference reads them through its ``list_to_dict`` patch
(``checkpoint/metadata/patch.py``): each entry is paired with its
``config.dataloader.training.dataset`` spec, the spec's ``drop``/``select``/
``rename`` is applied to the entry's variables, and the results are joined
into one dataset description of version ``0.2.0``. This step does the same,
and also puts the joined ``variables`` at the top of the description, where
every later reader looks for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anemoi_ckpt_nb.compat.migrate.base import Step


def _applies(document: Mapping[str, Any]) -> bool:
    return isinstance(document.get("dataset"), list)


def _zarr(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {"action": "zarr", "attrs": dict(attrs), "variables": list(attrs.get("variables") or [])}


def _patch(spec: Any, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """One source after its spec's drop/select/rename, as anemoi-inference's ``patch``."""
    forward = _zarr(attrs)
    if not isinstance(spec, Mapping):  # a bare dataset name: nothing to apply
        return forward
    variables = forward["variables"]
    if "drop" in spec:
        return {"action": "drop", "drop": spec["drop"], "forward": forward,
                "variables": [v for v in variables if v not in spec["drop"]]}
    if "select" in spec and "rename" not in spec:
        return {"action": "select", "select": spec["select"], "forward": forward,
                "variables": [v for v in variables if v in spec["select"]]}
    if "rename" in spec:
        select = spec.get("select")
        kept = [v for v in variables if select is None or v in select]
        return {"action": "rename", "rename": spec["rename"], "forward": forward,
                "variables": [spec["rename"].get(v, v) for v in kept]}
    return forward


def _apply(document: dict[str, Any]) -> dict[str, Any]:
    sources = document["dataset"]
    arguments = ((document.get("config") or {}).get("dataloader") or {}).get("training") or {}
    specs = arguments.get("dataset") if isinstance(arguments, Mapping) else None
    if not (isinstance(specs, list) and len(specs) == len(sources)):
        specs = [None] * len(sources)
    patched = [_patch(spec, attrs if isinstance(attrs, Mapping) else {}) for spec, attrs in zip(specs, sources)]
    variables: list[str] = []
    for source in patched:
        variables += [v for v in source["variables"] if v not in variables]
    document["dataset"] = {
        "version": "0.2.0",
        "arguments": dict(arguments) if isinstance(arguments, Mapping) else {},
        "specific": {"action": "join", "datasets": patched, "variables": variables},
        "variables": variables,
    }
    return document


STEP = Step(
    name="m01_dataset_list_to_dict",
    description="join the per-source dataset list of the oldest files into one dataset description",
    applies=_applies,
    apply=_apply,
)
