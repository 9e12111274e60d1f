"""Migrations of the project's own documents (records, tags, descriptor, manifests).

Each kind of document carries an integer ``schema_version``. A kind is
registered with its current version; a step is registered for each version it
upgrades from, and must return the document with ``schema_version`` one
higher. ``migrate(doc, kind)`` then runs the steps from the document's version
to the current one, in order. The catalogue registers the kinds it stores
(:mod:`anemoi_ckpt_nb.catalogue.documents`) when it is imported: this registry
knows no document of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anemoi_ckpt_nb.errors import SchemaError
from anemoi_ckpt_nb.compat.migrate.base import MigrationResult, Step


@dataclass
class DocumentKind:
    """A registered kind: its current version and the step out of each older version."""

    name: str
    current_version: int
    steps: dict[int, Step] = field(default_factory=dict)


_KINDS: dict[str, DocumentKind] = {}


def register_document_kind(kind: str, *, current_version: int) -> DocumentKind:
    """Declare a document kind and the ``schema_version`` its code writes today.

    Registering a kind again updates its current version and keeps its steps.

    Args:
        kind: e.g. ``"record"``.
        current_version: the ``schema_version`` written today, 1 or more.

    Returns:
        The kind's registry entry.

    Raises:
        ValueError: ``current_version`` is not a positive int.
    """
    if not isinstance(current_version, int) or current_version < 1:
        raise ValueError(f"current_version of {kind!r} must be an int >= 1, not {current_version!r}")
    entry = _KINDS.setdefault(kind, DocumentKind(kind, current_version))
    entry.current_version = current_version
    return entry


def unregister_document_kind(kind: str) -> None:
    """Forget a kind and its steps (for tests that register kinds of their own)."""
    _KINDS.pop(kind, None)


def register_document_step(kind: str, *, from_version: int, step: Step) -> None:
    """Register the step that upgrades ``kind`` documents from ``from_version`` to the next.

    Raises:
        KeyError: the kind is not registered.
        ValueError: a step from that version already exists.
    """
    entry = _KINDS[kind]
    if from_version in entry.steps and entry.steps[from_version] is not step:
        raise ValueError(f"{kind!r} already has a step from version {from_version}: {entry.steps[from_version].name}")
    entry.steps[from_version] = step


def document_kinds() -> dict[str, DocumentKind]:
    """The registered kinds, by name (the catalogue registers its own when it is imported)."""
    return dict(_KINDS)


def migrate_document(document: Mapping[str, Any], kind: str) -> MigrationResult:
    """Bring one of our documents to its kind's current ``schema_version``.

    Raises:
        SchemaError: unknown kind, missing or non-integer ``schema_version``, a
            version newer than this code, a missing step, or a step that did
            not produce the next version.
    """
    if kind not in _KINDS:
        raise SchemaError(f"no document kind {kind!r}; known: {', '.join(sorted(_KINDS)) or 'none'}")
    entry = _KINDS[kind]
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SchemaError(f"{kind} document has no integer schema_version (found {version!r})")
    if version > entry.current_version:
        raise SchemaError(
            f"{kind} document has schema_version {version}, newer than {entry.current_version} that this code writes",
            hint="upgrade anemoi-ckpt-nb: pip install -U anemoi-ckpt-nb",
        )
    current: dict[str, Any] = dict(document)
    applied: list[str] = []
    start = version
    while version < entry.current_version:
        step = entry.steps.get(version)
        if step is None:
            raise SchemaError(f"no migration of {kind} documents from schema_version {version} to {version + 1}")
        current = step(current)
        if current.get("schema_version") != version + 1:
            raise SchemaError(
                f"migration step {step.name} left schema_version {current.get('schema_version')!r}, expected {version + 1}"
            )
        applied.append(step.name)
        version += 1
    if not applied:
        import copy

        current = copy.deepcopy(current)
    return MigrationResult(current, applied, start, version, kind)

