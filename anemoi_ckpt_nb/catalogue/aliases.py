"""Aliases no record stands behind: the ``aliases/<uuid>.json`` that ``clean --orphans`` sweeps (issue 18).

A current anemoi-training file holds two uuids: its record is filed under one and names the
other in ``other_uuids``, which ``aliases/<other>.json`` files under it (:mod:`.register`).
An alias is stray when

* the record it points at is gone (a ``clean`` killed between the record and its aliases, a
  record removed by hand), and the alias is at least ``min_age`` old: ``register`` writes the
  aliases just before the record, so a younger one may belong to a registration in flight;
* that record names other uuids, but not this one (written by hand: ``show <uuid>`` would
  answer with another checkpoint, and the file that holds the uuid could not be registered);
* the document does not follow the layout (a key that is not ``<uuid>.json``, an ``alias``
  other than its key's uuid, bytes that are not an alias document).

Kept: an alias pointing at a record of an older release that names no other uuid at all
(nothing tells a true one from a planted one without the file), one pointing at a record that
is itself damaged (``clean`` leaves that record alone too), and one written by a newer release.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.documents import read_document
from anemoi_ckpt_nb.catalogue.schema import Alias
from anemoi_ckpt_nb.errors import ObjectNotFoundError, SchemaError

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore


@dataclass(frozen=True)
class StrayAlias:
    """An ``aliases/<uuid>.json`` no record stands behind, as found."""

    key: str
    #: Why it is stray, for people.
    why: str
    size: int
    #: Seconds since it was written (0 where the storage does not say).
    age: float
    #: Its etag when found: it is removed only if unchanged.
    etag: str


def _verdict(store: CatalogueStore, key: str, data: bytes) -> tuple[str, bool] | None:
    """``(why, only_if_old)`` if the alias at ``key`` is stray, else None."""
    uuid = key[len(layout.ALIASES):].removesuffix(".json")
    if not key.endswith(".json") or not layout.is_uuid(uuid):
        return f"its name is not <uuid>.json under {layout.ALIASES}", False
    try:
        alias = read_document(Alias, "alias", data, f"{store.url}/{key}")
    except SchemaError as error:
        return None if _newer(data) else (f"it does not follow the layout ({error.message})", False)
    if alias.alias != uuid or not layout.is_uuid(alias.uuid) or alias.uuid == uuid:
        return f"it files {alias.alias!r} under {alias.uuid!r}, which the layout does not allow for {key}", False
    try:
        record = store.read_record(alias.uuid)
    except SchemaError:
        return None
    if record is None:
        return f"the record {alias.uuid} it points at does not exist", True
    if record.other_uuids and uuid not in {*record.other_uuids, record.metadata_uuid}:
        return f"the record {alias.uuid} it points at does not name {uuid}", False
    return None


def _newer(data: bytes) -> bool:
    try:
        version = json.loads(data).get("schema_version", 1)
    except (ValueError, AttributeError):
        return False
    default = Alias.model_fields["schema_version"].default
    return isinstance(version, int) and version > default


def stray_aliases(store: CatalogueStore, *, min_age: float) -> list[StrayAlias]:
    """The stray aliases of the catalogue (module docstring), in key order.

    Args:
        min_age: Seconds an alias whose record is missing must have existed to count (where
            the storage cannot say when it was written, it counts only with ``min_age=0``).
    """
    now = time.time()
    found = []
    for info in store.storage.list(layout.ALIASES):
        try:
            data, etag = store.storage.get(info.key)
        except ObjectNotFoundError:
            continue
        verdict = _verdict(store, info.key, data)
        if verdict is None:
            continue
        why, only_if_old = verdict
        age = None if info.modified is None else max(0.0, now - info.modified)
        if only_if_old and (age < min_age if age is not None else min_age > 0):
            continue
        found.append(StrayAlias(info.key, why, len(data), age or 0.0, etag))
    return found


def remove_stray_alias(store: CatalogueStore, stray: StrayAlias) -> bool:
    """Delete a stray alias unless it changed since it was found or a record now stands behind it."""
    try:
        data, etag = store.storage.get(stray.key)
    except ObjectNotFoundError:
        return False
    if etag != stray.etag or _verdict(store, stray.key, data) is None:
        return False
    store.storage.delete(stray.key)
    return True
