"""Helpers for steps that work on either metadata layout (one dataset, or datasets by name)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def major(document: Mapping[str, Any]) -> int | None:
    """The major version number of Anemoi metadata, ``0`` when absent, ``None`` when unreadable."""
    raw = document.get("version")
    if raw in (None, ""):
        return 0
    head = str(raw).split(".", 1)[0].strip()
    return int(head) if head.isdigit() else None


def datasets(document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every dataset description in the document, whatever the layout.

    In 2.x ``dataset`` maps dataset names to descriptions; before, it is one
    description (a dict holding ``variables``).
    """
    dataset = document.get("dataset")
    if not isinstance(dataset, dict):
        return
    if (major(document) or 0) >= 2:
        for value in dataset.values():
            if isinstance(value, dict):
                yield value
    else:
        yield dataset


def provenance(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """``provenance_training`` if it is a dict."""
    value = document.get("provenance_training")
    return value if isinstance(value, dict) else None


def has_single_dataset_content(document: Mapping[str, Any]) -> bool:
    """Whether the document holds what 1.0 requires: dataset variables and full index lists."""
    dataset = document.get("dataset")
    indices = document.get("data_indices")
    if not (isinstance(dataset, Mapping) and isinstance(dataset.get("variables"), list)):
        return False
    if not isinstance(indices, Mapping):
        return False
    for side in ("data", "model"):
        pair = indices.get(side)
        if not isinstance(pair, Mapping):
            return False
        for way in ("input", "output"):
            entry = pair.get(way)
            if not (isinstance(entry, Mapping) and isinstance(entry.get("full"), list)):
                return False
    return True
