"""Parts shared by every version of the Anemoi checkpoint metadata.

The metadata is written by anemoi-training (``AnemoiTrainer.metadata`` plus
what the ``AnemoiCheckpoint`` callback adds on save) and read by
anemoi-inference. Every model here allows extra keys, because each release
adds some and a reader must not reject a newer file for that; the keys that
code relies on (variables, index lists, version strings) are typed strictly.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Permissive(BaseModel):
    """Base of the metadata models: unknown keys are kept, never rejected."""

    model_config = ConfigDict(extra="allow")


class TensorIndex(Permissive):
    """One ``todict()`` of anemoi-models' ``InputTensorIndex``/``OutputTensorIndex``.

    Positions in the tensor: ``full`` is every position used, the others the
    subsets by variable role.
    """

    full: list[int]
    forcing: list[int] = Field(default_factory=list)
    diagnostic: list[int] = Field(default_factory=list)
    prognostic: list[int] = Field(default_factory=list)


class IndexPair(Permissive):
    """Input and output indices of one side (data or model)."""

    input: TensorIndex
    output: TensorIndex


class DataIndices(Permissive):
    """``IndexCollection.todict()``: which dataset variable feeds which tensor position."""

    data: IndexPair
    model: IndexPair


class ModuleVersion(Permissive):
    """A ``module_versions`` entry as anemoi-utils 0.5 writes it (older ones wrote a bare string)."""

    version: str


class ProvenanceTraining(Permissive):
    """``anemoi.utils.provenance.gather_provenance_info()`` of the training environment."""

    python: str | None = None
    module_versions: dict[str, ModuleVersion | str] = Field(default_factory=dict)
    git_versions: dict[str, Any] = Field(default_factory=dict)
    time: str | None = None


class DatasetMetadata(Permissive):
    """The ``metadata()`` of the anemoi-datasets dataset one model was trained on."""

    variables: list[str] = Field(min_length=1)
    shape: list[int] | None = None
    version: str | None = None
    arguments: dict[str, Any] | None = None
    specific: dict[str, Any] | None = None
    frequency: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    variables_metadata: dict[str, dict[str, Any]] | None = None
    data_request: dict[str, Any] | None = None


class SupportingArrayPath(Permissive):
    """Where ``save_metadata`` put one supporting array in the zip, and its shape and dtype."""

    path: str
    shape: list[int]
    dtype: str


class ModelSummary(Permissive):
    """``metadata["model"]`` as the checkpoint callback fills it."""

    model: str | None = None
    trainable_parameters: int | None = None
    total_parameters: int | None = None


#: Keys of the metadata that every version may carry and that the catalogue reads.
LINEAGE_FIELDS = ("uuid", "run_id", "parent_uuid", "fork_run_id")


class _Lineage(Permissive):
    """Identity and lineage keys, common to the 1.x and 2.0 layouts."""

    seed: int | None = None
    #: The seed every rank derives its own from (anemoi-training >= 0.6, ``ANEMOI_BASE_SEED``).
    base_seed: int | None = None
    run_id: str | None = None
    uuid: str | None = None
    parent_uuid: str | None = None
    fork_run_id: str | None = None
    timestamp: str | None = None
    provenance_training: ProvenanceTraining | None = None
    model: ModelSummary | None = None
    training: dict[str, Any] | None = None
    tracker: dict[str, Any] | None = None
