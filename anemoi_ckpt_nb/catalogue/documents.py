"""Parse the project's stored JSON documents (records, tags, locations, ...) into their models.

One place for what every reader of a stored document must do: refuse bytes
that are not a JSON object, bring an older ``schema_version`` up to date with
the registered migrations, refuse a newer one, and validate, each failure a
:class:`SchemaError` naming the object.

The catalogue's documents are registered as migration kinds here, on import:
each model of :data:`~anemoi_ckpt_nb.catalogue.schema.STORED_MODELS` becomes a
kind named by its file stem without the ``catalogue-`` prefix (``"record"``,
``"tags"``, ``"descriptor"``, ...), its current version the default of its
``schema_version`` field; steps for these kinds are listed in :data:`PROJECT_STEPS`.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from anemoi_ckpt_nb.catalogue.schema import STORED_MODELS
from anemoi_ckpt_nb.compat.migrate.base import Step
from anemoi_ckpt_nb.compat.migrate.documents import (
    migrate_document,
    register_document_kind,
    register_document_step,
)
from anemoi_ckpt_nb.errors import SchemaError

M = TypeVar("M", bound=BaseModel)

#: ``(kind, from_version, step)`` for every step of our own documents, oldest first.
#: Empty while every stored document is at its first version.
PROJECT_STEPS: tuple[tuple[str, int, Step], ...] = ()

PREFIX = "catalogue-"

#: The hint of a damaged document when the caller has no better one.
RESTORE_HINT = "the object was damaged; restore it from a backup"


def parse_object(data: bytes, where: str, *, expected: str = "an object", hint: str = RESTORE_HINT) -> dict:
    """Parse bytes that must hold one JSON object.

    Args:
        data: The stored bytes.
        where: What they are (URL, path), at the start of the error message.
        expected: What the object is, for the message (``"a record document"``).
        hint: The hint of the error.

    Returns:
        The object.

    Raises:
        SchemaError: not JSON, or JSON that is not an object.
    """
    try:
        document = json.loads(data)
    except ValueError as error:
        raise SchemaError(f"{where}: not JSON ({error})", hint=hint) from None
    if not isinstance(document, dict):
        raise SchemaError(f"{where}: a JSON {type(document).__name__}, not {expected}", hint=hint)
    return document


def read_document(model: type[M], kind: str, data: bytes, where: str, *, damaged_hint: str = RESTORE_HINT) -> M:
    """Parse a stored document, migrating an older ``schema_version`` to the current one.

    Args:
        model: The pydantic model of the document; its ``schema_version`` default is the current version.
        kind: The migration kind (``"record"``, ``"tags"``, ``"locations"``, ...), also named in errors.
        data: The stored bytes.
        where: The object's URL or path, at the start of every error message.
        damaged_hint: What to do about bytes that are not a JSON object.

    Returns:
        The validated model.

    Raises:
        SchemaError: not JSON, not an object, a newer ``schema_version`` than this release knows, or invalid.
    """
    document = parse_object(data, where, expected=f"a {kind} document", hint=damaged_hint)
    try:
        if document.get("schema_version", 1) != model.model_fields["schema_version"].default:
            document = migrate_document(document, kind).document
        return model.model_validate(document)
    except SchemaError as error:
        raise SchemaError(f"{where}: {error.message}", hint=error.hint).with_python_hint(error.python_hint) from None
    except ValidationError as error:
        raise SchemaError(f"{where}: does not match the {kind} schema: {error.errors()[0]['msg']}") from None


def kind_of(stem: str) -> str:
    """The migration kind of a stored model's schema file stem."""
    return stem[len(PREFIX):] if stem.startswith(PREFIX) else stem


def register_project_kinds() -> None:
    """Register every stored model of :mod:`.schema` and the steps in :data:`PROJECT_STEPS` (again is harmless)."""
    for stem, model in STORED_MODELS.items():
        field = model.model_fields.get("schema_version")
        if field is not None and isinstance(field.default, int):
            register_document_kind(kind_of(stem), current_version=field.default)
    for kind, from_version, step in PROJECT_STEPS:
        register_document_step(kind, from_version=from_version, step=step)


register_project_kinds()
