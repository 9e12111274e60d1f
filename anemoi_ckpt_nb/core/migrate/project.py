"""Register the project's stored documents (from :mod:`anemoi_ckpt_nb.core.schema`) as migration kinds.

Each model of ``schema.STORED_MODELS`` becomes a kind named by its file stem
without the ``catalogue-`` prefix (``"record"``, ``"tags"``, ``"descriptor"``,
``"index-delta"``, ``"index-snapshot"``), with the current version taken from
the default of its ``schema_version`` field. Steps for these kinds live in
``steps/`` beside the metadata steps and are registered in :data:`PROJECT_STEPS`.
"""

from __future__ import annotations

from anemoi_ckpt_nb.core.migrate.base import Step

#: ``(kind, from_version, step)`` for every step of our own documents, oldest first.
#: Empty while every stored document is at its first version.
PROJECT_STEPS: tuple[tuple[str, int, Step], ...] = ()

PREFIX = "catalogue-"


def kind_of(stem: str) -> str:
    """The migration kind of a stored model's schema file stem."""
    return stem[len(PREFIX):] if stem.startswith(PREFIX) else stem


def register_project_kinds() -> None:
    """Register every stored model of ``core.schema`` and the steps in :data:`PROJECT_STEPS`."""
    from anemoi_ckpt_nb.core.migrate.documents import register_document_kind, register_document_step
    from anemoi_ckpt_nb.core.schema import STORED_MODELS

    for stem, model in STORED_MODELS.items():
        field = model.model_fields.get("schema_version")
        if field is not None and isinstance(field.default, int):
            register_document_kind(kind_of(stem), current_version=field.default)
    for kind, from_version, step in PROJECT_STEPS:
        register_document_step(kind, from_version=from_version, step=step)
