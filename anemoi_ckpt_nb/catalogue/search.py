"""Finding records: by uuid, uuid prefix or name (:func:`resolve`), or by filters (:func:`search`).

A full uuid or a uuid prefix is looked up in ``records/`` directly (one GET,
or one LIST of ``records/<prefix>``), so it works even for a record that has
not reached the index yet. Names and filters use the index.

When a lookup shows that the index and ``records/`` disagree (an index entry
whose record is gone, or a record the index already read in memory lacks),
the error or warning names ``anemoi-ckpt reindex``, which rebuilds the index.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.copies import sites_of_entry
from anemoi_ckpt_nb.catalogue.index import reindex_hint
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord
from anemoi_ckpt_nb.catalogue.store import CatalogueStore, catalogue_site_name
from anemoi_ckpt_nb.errors import (
    AmbiguousReferenceError,
    CatalogueError,
    NotRegisteredError,
)

LOG = logging.getLogger(__name__)

_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,36}$")
#: Shortest uuid prefix accepted: shorter ones match too much to mean anything.
MIN_PREFIX = 4

Entry = dict[str, Any]
KINDS = ("training", "inference")


def resolve(store: CatalogueStore, ref: str) -> CheckpointRecord:
    """The record a user means by ``ref``: a uuid, a uuid prefix, a name or a file name.

    Args:
        store: The catalogue.
        ref: Full uuid, a prefix of at least 4 characters, a record name, or
            the original file name (when unique).

    Returns:
        The record.

    Raises:
        NotRegisteredError: nothing matches.
        AmbiguousReferenceError: several records match; the error lists them.
    """
    ref = ref.strip()
    if layout.is_uuid(ref):
        record = store.find_record(ref.lower())  # either uuid of a file that holds two
        cached = store.cached_index()  # only what is in memory: a uuid lookup stays one GET
        if record is None:
            if cached is not None and ref.lower() in cached.entries:
                raise _stale_entry(store, ref.lower())
            raise NotRegisteredError(ref, hint="list the catalogue with `anemoi-ckpt ls`")
        if cached is not None and record.uuid not in cached.entries:
            _warn_unindexed(store, record.uuid)
        return record
    if _PREFIX.match(ref):
        uuids = store.record_uuids(ref.lower())
        if len(uuids) > 1:
            raise AmbiguousReferenceError(ref, uuids, hint="give more characters of the uuid")
        if len(uuids) == 1:
            record = store.read_record(uuids[0])
            if record is not None:
                return record
    entries = store.index().entries.values()
    stale: str | None = None
    for field in ("name", "filename"):
        matches = sorted((e for e in entries if e.get(field) == ref), key=lambda e: e["registered_at"])
        if len(matches) > 1:
            raise AmbiguousReferenceError(
                ref, [m["uuid"] for m in matches], hint="use a uuid (or its first characters) instead"
            )
        if matches:
            record = store.read_record(matches[0]["uuid"])
            if record is not None:
                return record
            stale = stale or matches[0]["uuid"]
    if stale is not None:
        raise _stale_entry(store, stale, ref=ref)
    if 0 < len(ref) < MIN_PREFIX and all(c in "0123456789abcdefABCDEF" for c in ref):
        raise NotRegisteredError(
            ref, f"no checkpoint is named {ref!r}, and a uuid prefix needs at least {MIN_PREFIX} characters",
            hint=f"give {MIN_PREFIX} or more characters of the uuid (`anemoi-ckpt ls` shows 8)",
        )
    raise NotRegisteredError(ref, hint="list the catalogue with `anemoi-ckpt ls`, or give a uuid")


def _stale_entry(store: CatalogueStore, uuid: str, *, ref: str | None = None) -> NotRegisteredError:
    """The error for an index entry whose record is gone: the index is out of date."""
    named = f"{ref!r} ({uuid})" if ref and ref != uuid else uuid
    return NotRegisteredError(
        ref or uuid,
        f"{store.url}: the index lists {named} but its record {layout.record_key(uuid)} is gone",
        hint=reindex_hint(store.url),
    )


def _warn_unindexed(store: CatalogueStore, uuid: str) -> None:
    LOG.warning(
        "%s: %s is registered but missing from the index, so ls and search do not show it; %s",
        store.url, uuid, reindex_hint(store.url),
    )


def _matches_text(entry: Entry, needle: str) -> bool:
    haystack = (
        entry["uuid"],
        entry.get("name") or "",
        entry.get("filename") or "",
        entry.get("run_id") or "",
        entry.get("dataset") or "",
        entry.get("registered_by") or "",
        *entry.get("tags", ()),
    )
    return any(needle in value.lower() for value in haystack)


def filter_entries(
    entries: Iterable[Entry],
    *,
    tags: Sequence[str] = (),
    kind: str | None = None,
    run_id: str | None = None,
    text: str | None = None,
    site: str | None = None,
    catalogue_site: str = "catalogue",
) -> list[Entry]:
    """Entries matching every given filter, oldest registration first.

    Args:
        entries: Index entries.
        tags: All of these tags must be present.
        kind: ``"training"`` or ``"inference"``.
        run_id: A run id or its first characters.
        text: Case-insensitive substring of uuid, name, file name, run id,
            dataset, registering user or a tag.
        site: A copy of the file is recorded at this site (see :mod:`anemoi_ckpt_nb.sites.locations`).
        catalogue_site: The site name of the catalogue's own storage.
    """
    if kind is not None and kind not in KINDS:
        raise CatalogueError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    wanted = set(tags)
    needle = text.lower() if text else None
    found = []
    for entry in entries:
        if kind is not None and entry["kind"] != kind:
            continue
        if run_id is not None and not (entry.get("run_id") or "").startswith(run_id):
            continue
        if wanted and not wanted.issubset(entry.get("tags", ())):
            continue
        if needle is not None and not _matches_text(entry, needle):
            continue
        if site is not None and site not in sites_of_entry(entry, catalogue_site):
            continue
        found.append(entry)
    found.sort(key=lambda e: (e["registered_at"], e["uuid"]))
    return found


def search(
    store: CatalogueStore,
    *,
    tags: Sequence[str] = (),
    kind: str | None = None,
    run_id: str | None = None,
    text: str | None = None,
    site: str | None = None,
) -> list[Entry]:
    """Index entries matching every given filter (see :func:`filter_entries`)."""

    return filter_entries(
        store.index().entries.values(), tags=tags, kind=kind, run_id=run_id, text=text,
        site=site, catalogue_site=catalogue_site_name(store),
    )
