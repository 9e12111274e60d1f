"""What the catalogue knows of copies at sites: the ``locations/<uuid>.json`` document as it is read and indexed.

The sites package (:mod:`anemoi_ckpt_nb.sites.locations`) writes these
documents and publishes their index events; the catalogue only reads them
back when it rebuilds its index, and answers ``search(site=...)`` from the
``sites`` of an index entry (the catalogue's own site name is
:func:`anemoi_ckpt_nb.catalogue.store.catalogue_site_name`). The catalogue's own blob appears there as
:data:`CATALOGUE_TOKEN`, so renaming the catalogue's site changes nothing stored.
"""

from __future__ import annotations

from typing import Any

from anemoi_ckpt_nb.catalogue.documents import read_document
from anemoi_ckpt_nb.catalogue.schema import LocationsState

#: How the catalogue's own blob appears in index entries' ``sites``.
CATALOGUE_TOKEN = ":catalogue"
#: The site name of the catalogue's own storage until it is given one.
DEFAULT_CATALOGUE_SITE = "catalogue"
#: The key of ``catalogue.json`` that names the catalogue's own site.
CATALOGUE_SITE_KEY = "catalogue_site"


def parse_state(data: bytes, where: str) -> LocationsState:
    """A stored locations document, migrated and validated.

    Raises:
        SchemaError: damaged or newer than this release; without a readable
            document the catalogue blob is still a location.
    """
    return read_document(
        LocationsState, "locations", data, where,
        damaged_hint="the object was damaged; delete it to fall back to the catalogue blob",
    )


def sites_of_state(state: LocationsState) -> list[str]:
    """Site names for the index, the catalogue blob as :data:`CATALOGUE_TOKEN`."""
    return sorted({CATALOGUE_TOKEN if loc.kind == "catalogue-blob" else loc.site for loc in state.locations})


def sites_of_entry(entry: dict[str, Any], catalogue_site: str) -> list[str]:
    """The sites holding a copy of an index entry's checkpoint (names as users know them).

    Entries of checkpoints without a locations document have only the implicit
    catalogue blob (when the file was uploaded).
    """
    sites = entry.get("sites")
    if sites is None:
        return [catalogue_site] if entry.get("blob") else []
    return [catalogue_site if s == CATALOGUE_TOKEN else s for s in sites]


def locations_event(state: LocationsState) -> dict[str, Any]:
    """The index event that records which sites hold the checkpoint."""
    return {
        "op": "locations",
        "uuid": state.uuid,
        "generation": state.generation,
        "revision": state.revision,
        "sites": sites_of_state(state),
    }
