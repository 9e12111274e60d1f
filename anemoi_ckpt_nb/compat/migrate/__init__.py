"""Translation layer: bring old documents and checkpoint metadata to the current form.

May import: ``compat.anemoi_metadata`` and ``errors`` only; document kinds are registered from above (:mod:`.documents`).

``migrate(doc, kind)`` runs an ordered chain of small, named, pure steps and
says which ran. Kinds:

* ``"anemoi-metadata"``: the metadata of an Anemoi checkpoint, from any known
  version (0.0, 1.x) to :data:`~anemoi_ckpt_nb.compat.anemoi_metadata.CURRENT_VERSION`;
  steps in :mod:`.steps`, one file each;
* the project's own documents (``"record"``, ``"tags"``, ...), by integer
  ``schema_version``; see :mod:`.documents` (the catalogue registers its kinds
  when :mod:`anemoi_ckpt_nb.catalogue` is imported).

The input is never modified. :mod:`anemoi_ckpt_nb.read.renames` holds the table of moved
and renamed classes the reader uses; :mod:`anemoi_ckpt_nb.compat.upgrade` writes upgraded checkpoint copies.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from anemoi_ckpt_nb.errors import SchemaError
from anemoi_ckpt_nb.compat.migrate.base import MigrationResult, Step
from anemoi_ckpt_nb.compat.migrate.documents import (
    document_kinds,
    migrate_document,
    register_document_kind,
    register_document_step,
)

#: The kind name of Anemoi checkpoint metadata.
ANEMOI_METADATA = "anemoi-metadata"

__all__ = [
    "ANEMOI_METADATA",
    "MigrationResult",
    "Step",
    "document_kinds",
    "migrate",
    "pending_steps",
    "register_document_kind",
    "register_document_step",
    "steps_for",
]


def steps_for(kind: str) -> tuple[Step, ...]:
    """The registered steps of ``kind``, in the order they run.

    Raises:
        SchemaError: unknown kind.
    """
    if kind == ANEMOI_METADATA:
        from anemoi_ckpt_nb.compat.migrate.steps import ANEMOI_METADATA_STEPS

        return ANEMOI_METADATA_STEPS
    kinds = document_kinds()
    if kind not in kinds:
        raise SchemaError(f"no document kind {kind!r}; known: {', '.join([ANEMOI_METADATA, *sorted(kinds)])}")
    return tuple(step for _, step in sorted(kinds[kind].steps.items()))


def migrate(document: Mapping[str, Any], kind: str = ANEMOI_METADATA) -> MigrationResult:
    """Bring ``document`` to the current version of its kind.

    Args:
        document: the document; never modified.
        kind: ``"anemoi-metadata"`` or one of our document kinds.

    Returns:
        The migrated copy, the names of the steps that ran, and the versions before and after.

    Raises:
        SchemaError: the document is not a dict, has an unreadable version or one
            newer than this code knows, or a step found it inconsistent.
    """
    if not isinstance(document, Mapping):
        raise SchemaError(f"a {kind} document must be a JSON object, not {type(document).__name__}")
    if kind != ANEMOI_METADATA:
        return migrate_document(document, kind)

    from anemoi_ckpt_nb.compat.anemoi_metadata import CURRENT_VERSION, detect_version, is_newer_than_known
    from anemoi_ckpt_nb.compat.migrate.steps import ANEMOI_METADATA_STEPS

    from_version = detect_version(document)
    if is_newer_than_known(from_version):
        # Never rewrite what we do not understand: a newer file may mean its keys differently.
        raise SchemaError(
            f"Anemoi metadata version {from_version} is newer than {CURRENT_VERSION}, the newest this tool knows",
            hint="upgrade anemoi-ckpt-nb: pip install -U anemoi-ckpt-nb",
        )
    current: dict[str, Any] = copy.deepcopy(dict(document))
    applied: list[str] = []
    for step in ANEMOI_METADATA_STEPS:
        if step.applies(current):
            current = step(current)
            applied.append(step.name)
    return MigrationResult(current, applied, from_version, detect_version(current), kind)


def pending_steps(document: Mapping[str, Any], kind: str = ANEMOI_METADATA) -> list[str]:
    """Names of the steps :func:`migrate` would run on ``document`` (nothing is written)."""
    return migrate(document, kind).steps_applied
