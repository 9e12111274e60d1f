"""The pieces every migration chain is made of: a named pure step, and the result of a run."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    """One small, named, pure transformation of a document.

    Attributes:
        name: unique and stable: it is recorded in every document it changed.
        description: one sentence a user reads in ``anemoi-ckpt validate``.
        applies: whether the step has work to do on this document.
        apply: the transformation. It receives a private deep copy, so even a
            careless step cannot change its caller's dict, and returns the new document.
    """

    name: str
    description: str
    applies: Callable[[Mapping[str, Any]], bool]
    apply: Callable[[dict[str, Any]], dict[str, Any]]

    def __call__(self, document: Mapping[str, Any]) -> dict[str, Any]:
        result = self.apply(copy.deepcopy(dict(document)))
        if not isinstance(result, dict):
            raise TypeError(f"migration step {self.name} returned {type(result).__name__}, not a dict")
        return result


@dataclass(frozen=True)
class MigrationResult:
    """What :func:`anemoi_ckpt_nb.compat.migrate.migrate` did.

    Attributes:
        document: the migrated document (a new dict; the input is never changed).
        steps_applied: names of the steps that ran, in order.
        from_version: the version before (``"1.0"`` for Anemoi metadata, an int for our documents).
        to_version: the version after.
        kind: the document type that was migrated.
    """

    document: dict[str, Any]
    steps_applied: list[str] = field(default_factory=list)
    from_version: str | int | None = None
    to_version: str | int | None = None
    kind: str = ""

    @property
    def changed(self) -> bool:
        """Whether any step ran."""
        return bool(self.steps_applied)
