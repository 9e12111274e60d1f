"""Legacy metadata ("0.0"): checkpoints written before anemoi-training set a ``version``.

These come from the aifs-mono era and the first anemoi releases. anemoi-inference
treats a missing ``version`` as ``0.0.0`` (``checkpoint/metadata/__init__.py``).
The ``dataset`` may still be a *list* of per-source zarr attributes (anemoi-inference's
``list_to_dict`` patch turns it into one dict), ``data_indices`` may be absent, and
``module_versions`` are bare strings.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from anemoi_ckpt_nb.compat.anemoi_metadata.common import DataIndices, Permissive, ProvenanceTraining


class MetadataV0(Permissive):
    """Anemoi checkpoint metadata without a ``version`` key (or a ``0.x`` one)."""

    version: str | None = Field(default=None, pattern=r"^0(\.|$)")
    config: dict[str, Any]
    dataset: dict[str, Any] | list[dict[str, Any]]
    data_indices: DataIndices | None = None
    provenance_training: ProvenanceTraining | None = None
