"""Metadata version 2.0: several datasets per model.

Written by anemoi-core's training since the move to multiple datasets
(``AnemoiTrainer.metadata`` with ``"version": "2.0"`` and
``AnemoiDatasetsDataModule.fill_metadata``): ``dataset`` and ``data_indices``
are keyed by dataset name, ``metadata_inference`` holds ``dataset_names`` and,
per dataset, the variable names of each tensor position (``data_indices``),
the variable roles (``variable_types``) and the time steps (``timesteps``).
The supporting arrays are nested per dataset, so ``supporting_arrays_paths``
is too. A single-dataset model has the one dataset ``"data"``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from anemoi_ckpt_nb.compat.anemoi_metadata.common import (
    DataIndices,
    DatasetMetadata,
    Permissive,
    SupportingArrayPath,
    _Lineage,
)


class NameToIndex(Permissive):
    """Variable name -> position in the model's input and output tensors."""

    input: dict[str, int]
    output: dict[str, int]


class VariableTypes(Permissive):
    """Variable names by role, as ``fill_metadata`` lists them."""

    forcing: list[str] = Field(default_factory=list)
    target: list[str] = Field(default_factory=list)
    prognostic: list[str] = Field(default_factory=list)
    diagnostic: list[str] = Field(default_factory=list)


class DatasetInference(Permissive):
    """``metadata_inference[<dataset>]``: what inference needs to build the input tensor."""

    data_indices: NameToIndex
    variable_types: VariableTypes
    timesteps: dict[str, Any] = Field(default_factory=dict)


class MetadataInference(Permissive):
    """``metadata_inference``: the dataset names plus one :class:`DatasetInference` per dataset."""

    dataset_names: list[str] = Field(min_length=1)
    seed: int | None = None
    base_seed: int | None = None
    run_id: str | None = None
    task: Any = None

    @model_validator(mode="after")
    def _each_dataset_described(self) -> MetadataInference:
        extra = self.__pydantic_extra__ or {}
        for name in self.dataset_names:
            if name not in extra:
                raise ValueError(f"metadata_inference has no entry for dataset {name!r}")
            extra[name] = DatasetInference.model_validate(extra[name])
        return self


class MetadataV2(_Lineage):
    """Multi-dataset Anemoi checkpoint metadata (the current layout)."""

    version: str = Field(pattern=r"^2(\.\d+)*$")
    config: dict[str, Any]
    #: The training task's name (``"forecaster"``), written by anemoi-training's task.
    task: str | None = None
    dataset: dict[str, DatasetMetadata] = Field(min_length=1)
    data_indices: dict[str, DataIndices] = Field(min_length=1)
    metadata_inference: MetadataInference
    supporting_arrays_paths: dict[str, dict[str, SupportingArrayPath]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _datasets_agree(self) -> MetadataV2:
        names = set(self.dataset)
        if set(self.data_indices) != names:
            raise ValueError(
                f"data_indices datasets {sorted(self.data_indices)} differ from dataset {sorted(names)}"
            )
        unknown = set(self.metadata_inference.dataset_names) - names
        if unknown:
            raise ValueError(f"metadata_inference names datasets {sorted(unknown)} absent from dataset")
        stray = set(self.supporting_arrays_paths) - names
        if stray:
            raise ValueError(f"supporting_arrays_paths has datasets {sorted(stray)} absent from dataset")
        return self
