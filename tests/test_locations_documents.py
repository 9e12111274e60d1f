"""A damaged, foreign or newer ``locations/<uuid>.json`` is one SchemaError naming the object,
read through the same document parser as the catalogue's other documents."""

from __future__ import annotations

import json

import pytest

from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.catalogue.layout import locations_key
from anemoi_ckpt_nb.errors import SchemaError
from anemoi_ckpt_nb.catalogue.documents import parse_object, read_document
from anemoi_ckpt_nb.catalogue.schema import LocationsState, TagState

DELETE_HINT = "the object was damaged; delete it to fall back to the catalogue blob"


@pytest.fixture
def registered(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    ck = catalogue.register(training_checkpoint.path)
    return catalogue, ck


def _valid_document(ck) -> dict:
    return {"uuid": ck.uuid, "generation": ck.record.registered_at.isoformat(), "locations": []}


@pytest.mark.parametrize(
    ("stored", "what", "hint"),
    [
        (b"{not json", "not JSON", DELETE_HINT),
        (b"[1, 2]", "a JSON list, not a locations document", DELETE_HINT),
        ({"schema_version": 99}, "schema_version 99, newer than 1", "pip install -U anemoi-ckpt-nb"),
        ({"locations": "nowhere"}, "does not match the locations schema", None),
    ],
)
def test_a_bad_locations_document_is_one_schema_error_naming_it(registered, stored, what, hint):
    catalogue, ck = registered
    key = locations_key(ck.uuid)
    if isinstance(stored, dict):
        stored = json.dumps(_valid_document(ck) | stored).encode()
    catalogue.store.storage.put(key, stored)
    with pytest.raises(SchemaError) as caught:
        ck.locations()
    message = str(caught.value)
    assert f"{catalogue.store.url.rstrip('/')}/{key}: " in message and what in message
    assert "\n" not in message
    if hint is None:
        assert caught.value.hint is None
    else:
        assert hint in caught.value.hint


def test_deleting_a_damaged_locations_document_falls_back_to_the_catalogue_blob(registered):
    catalogue, ck = registered
    key = locations_key(ck.uuid)
    catalogue.store.storage.put(key, b"\x00damaged")
    with pytest.raises(SchemaError):
        ck.locations()
    catalogue.store.storage.delete(key)  # what the hint says to do
    (location,) = ck.locations()
    assert location.kind == "catalogue-blob" and location.sha256 == ck.sha256


def test_a_valid_locations_document_reads_back(registered):
    catalogue, ck = registered
    catalogue.store.storage.put(locations_key(ck.uuid), json.dumps(_valid_document(ck)).encode())
    assert ck.locations() == []  # the document, not the implicit blob, is the truth


def test_read_document_names_the_kind_and_takes_the_default_hint():
    with pytest.raises(SchemaError, match=r"^mem://x: a JSON str, not a tags document") as caught:
        read_document(TagState, "tags", b'"text"', "mem://x")
    assert caught.value.hint == "the object was damaged; restore it from a backup"
    state = read_document(LocationsState, "locations", b'{"uuid": "u", "generation": "g"}', "mem://y")
    assert state.schema_version == 1 and state.locations == []
    assert parse_object(b'{"a": 1}', "w") == {"a": 1}
    with pytest.raises(SchemaError, match=r"^w: a JSON int, not an object \(the object was damaged"):
        parse_object(b"3", "w")
