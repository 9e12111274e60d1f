"""Metadata version 1.x: one dataset per model.

Written by anemoi-training 0.1 to 0.x (``AnemoiTrainer.metadata``: ``version``
``"1.0"``, ``config``, ``seed``, ``run_id``, ``dataset``, ``data_indices``,
``provenance_training``, ``timestamp``), completed on save by the checkpoint
callback (``uuid``, ``model``, ``tracker``, ``training``) and by anemoi-utils
(``supporting_arrays_paths``). Later 1.x files add ``metadata_inference``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from anemoi_ckpt_nb.compat.anemoi_metadata.common import (
    DataIndices,
    DatasetMetadata,
    SupportingArrayPath,
    _Lineage,
)


class MetadataV1(_Lineage):
    """Single-dataset Anemoi checkpoint metadata."""

    version: str = Field(pattern=r"^1(\.\d+)*$")
    config: dict[str, Any]
    dataset: DatasetMetadata
    data_indices: DataIndices
    metadata_inference: dict[str, Any] | None = None
    supporting_arrays_paths: dict[str, SupportingArrayPath] = Field(default_factory=dict)
