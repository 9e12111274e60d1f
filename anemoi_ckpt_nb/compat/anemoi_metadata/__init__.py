"""Pydantic models of the Anemoi checkpoint metadata, one per known version.

May import: ``anemoi_ckpt_nb.errors`` only.

The metadata is ``hyper_parameters["metadata"]`` in a training checkpoint and
the embedded ``anemoi-metadata/anemoi.json`` (older: ``ai-models.json``).
Its ``version`` key says which layout it has:

* ``0.0``: legacy files with no ``version`` (aifs-mono, first anemoi releases);
* ``1.0``: one dataset per model (anemoi-training before multiple datasets);
* ``2.0``: datasets keyed by name (anemoi-core today), the current layout.

``detect_version`` says which one a dict is, ``parse_metadata`` validates it
with the matching model. The JSON Schema of each model is published in
``anemoi_ckpt_nb/schemas/`` (see :mod:`.export`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from anemoi_ckpt_nb.compat.anemoi_metadata.v0 import MetadataV0
from anemoi_ckpt_nb.compat.anemoi_metadata.v1 import MetadataV1
from anemoi_ckpt_nb.compat.anemoi_metadata.v2 import MetadataV2
from anemoi_ckpt_nb.errors import SchemaError

#: The version ``upgrade`` brings metadata to.
CURRENT_VERSION = "2.0"

#: Major version -> model. A newer minor of a known major is read with its major's model.
MODELS: dict[str, type[BaseModel]] = {"0": MetadataV0, "1": MetadataV1, "2": MetadataV2}

#: Canonical version string of each model, as :func:`detect_version` reports it.
VERSIONS: dict[str, type[BaseModel]] = {"0.0": MetadataV0, "1.0": MetadataV1, "2.0": MetadataV2}

_VERSION = re.compile(r"^\s*(\d+)(?:\.(\d+))?")

__all__ = [
    "CURRENT_VERSION",
    "MODELS",
    "VERSIONS",
    "MetadataV0",
    "MetadataV1",
    "MetadataV2",
    "detect_version",
    "is_newer_than_known",
    "parse_metadata",
]


def detect_version(metadata: Any) -> str:
    """The metadata layout version, as ``"major.minor"``.

    A missing or empty ``version`` is ``"0.0"``, as anemoi-inference reads it.
    ``"1.0.0"`` and ``"1.0"`` both give ``"1.0"``.

    Args:
        metadata: the metadata dict.

    Returns:
        ``"0.0"``, ``"1.0"``, ``"2.0"``, or whatever newer version the file declares.

    Raises:
        SchemaError: ``metadata`` is not a dict, or its ``version`` is not a version number.
    """
    if not isinstance(metadata, dict):
        raise SchemaError(f"Anemoi metadata must be a JSON object, not {type(metadata).__name__}")
    raw = metadata.get("version")
    if raw is None or raw == "":
        return "0.0"
    match = _VERSION.match(str(raw))
    if match is None:
        raise SchemaError(
            f"Anemoi metadata has version {raw!r}, which is not a version number",
            hint="check the file with `anemoi-ckpt validate PATH`",
        )
    return f"{int(match.group(1))}.{int(match.group(2) or 0)}"


def is_newer_than_known(version: str) -> bool:
    """Whether ``version`` (from :func:`detect_version`) is newer than any model here."""
    return int(version.split(".")[0]) > int(CURRENT_VERSION.split(".")[0])


def parse_metadata(metadata: Any) -> BaseModel:
    """Validate ``metadata`` with the model of its version.

    Args:
        metadata: the metadata dict (not modified).

    Returns:
        A :class:`MetadataV0`, :class:`MetadataV1` or :class:`MetadataV2`.

    Raises:
        SchemaError: unknown version, or the dict does not match its version's model
            (the message lists the offending keys).
    """
    version = detect_version(metadata)
    model = MODELS.get(version.split(".")[0])
    if model is None:
        raise SchemaError(
            f"Anemoi metadata version {version} is not one this tool knows (newest: {CURRENT_VERSION})",
            hint="upgrade anemoi-ckpt-nb: pip install -U anemoi-ckpt-nb",
        )
    try:
        return model.model_validate(metadata)
    except ValidationError as error:
        raise SchemaError(
            f"Anemoi metadata version {version} does not match its schema: {describe_errors(error)}",
            hint="see what is missing with `anemoi-ckpt validate PATH`",
        ) from error


def describe_errors(error: ValidationError, *, limit: int = 5) -> str:
    """The first few validation errors as ``key.path: message`` separated by ``;``."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()]
    more = f"; and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
