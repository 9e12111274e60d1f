"""m06: version 1.x (one dataset) to 2.0 (datasets keyed by name).

anemoi-core moved to multiple datasets with metadata ``"version": "2.0"``
(``AnemoiTrainer.metadata``, ``AnemoiDatasetsDataModule.fill_metadata``) and
migrated old training checkpoints by putting everything under the one
dataset name ``"data"`` (anemoi-models migration
``1767108147_move_to_multiple_datasets``). This step does the same to the
metadata:

* ``dataset`` and ``data_indices`` go under the dataset name;
* ``supporting_arrays_paths`` too (the ``path`` values still point at the
  entries of the file read; ``upgrade`` rewrites the file and the paths);
* ``metadata_inference`` gets ``dataset_names`` and, for the dataset, what
  ``fill_metadata`` records: the variable name of each input and output
  tensor position (from ``dataset.variables`` and the index lists, as
  anemoi-inference's ``variable_to_input_tensor_index`` computes them), the
  variable roles, and the time step. Entries already present are kept.

The dataset name is the one a 1.x ``metadata_inference.dataset_names`` gives,
else ``"data"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anemoi_ckpt_nb.errors import SchemaError
from anemoi_ckpt_nb.compat.migrate.base import Step
from anemoi_ckpt_nb.compat.migrate.steps._layout import has_single_dataset_content, major

DEFAULT_DATASET = "data"
NAME = "m06_single_to_multi_dataset"


def _applies(document: Mapping[str, Any]) -> bool:
    # Without the 1.0 content the layout cannot be derived; validate reports what is missing.
    return major(document) == 1 and has_single_dataset_content(document)


def _positions(variables: list[str], data: list[int], model: list[int], where: str) -> dict[str, int]:
    if len(data) != len(model):
        raise SchemaError(
            f"{NAME}: data_indices {where}: data has {len(data)} positions, model has {len(model)}",
            hint="the metadata is inconsistent; check it with `anemoi-ckpt validate PATH`",
        )
    out_of_range = [i for i in data if not 0 <= i < len(variables)]
    if out_of_range:
        raise SchemaError(f"{NAME}: data_indices {where} refers to variables {out_of_range} beyond the {len(variables)} of the dataset")
    return {variables[d]: m for d, m in zip(data, model)}


def _inference_entry(document: Mapping[str, Any]) -> dict[str, Any]:
    """What ``fill_metadata`` records for one dataset, derived from 1.x keys."""
    variables = document["dataset"]["variables"]
    indices = document["data_indices"]
    data, model = indices["data"], indices["model"]
    config_data = (document.get("config") or {}).get("data") or {}

    def names(positions: list[int]) -> list[str]:
        return [variables[i] for i in positions if 0 <= i < len(variables)]

    entry: dict[str, Any] = {
        "data_indices": {
            "input": _positions(variables, data["input"]["full"], model["input"]["full"], "input"),
            "output": _positions(variables, data["output"]["full"], model["output"]["full"], "output"),
        },
        "variable_types": {
            "forcing": names(data["input"].get("forcing", [])),
            "target": list(config_data.get("target") or []),
            "prognostic": names(data["input"].get("prognostic", [])),
            "diagnostic": names(data["input"].get("diagnostic", [])),
        },
        "timesteps": {},
    }
    timestep = config_data.get("timestep") or config_data.get("frequency")
    if timestep is not None:
        entry["timesteps"]["timestep"] = timestep
    return entry


def _apply(document: dict[str, Any]) -> dict[str, Any]:
    inference = dict(document.get("metadata_inference") or {})
    declared = inference.get("dataset_names")
    name = declared[0] if isinstance(declared, list) and len(declared) == 1 else DEFAULT_DATASET

    derived = _inference_entry(document)
    entry = dict(inference.get(name) or {})
    entry.setdefault("data_indices", derived["data_indices"])
    entry.setdefault("variable_types", derived["variable_types"])
    entry["timesteps"] = {**derived["timesteps"], **(entry.get("timesteps") or {})}

    inference["dataset_names"] = [name]
    inference[name] = entry
    for key in ("seed", "run_id"):
        if key in document:
            inference.setdefault(key, document[key])
    inference.setdefault("task", None)

    document["version"] = "2.0"
    document["dataset"] = {name: document["dataset"]}
    document["data_indices"] = {name: document["data_indices"]}
    document["metadata_inference"] = inference
    if document.get("supporting_arrays_paths"):
        document["supporting_arrays_paths"] = {name: document["supporting_arrays_paths"]}
    return document


STEP = Step(
    name=NAME,
    description="move the one dataset of 1.x metadata under its name, as metadata 2.0 lays datasets out",
    applies=_applies,
    apply=_apply,
)
