"""The committed JSON Schema files are exactly what the models generate.

A change to a model that changes its schema (a renamed, removed or newly
required key) makes ``test_committed_schema_files_match_the_models`` fail until
the files are regenerated and the diff reviewed: a breaking change cannot
slip through unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import create_model

from anemoi_ckpt_nb.compat.anemoi_metadata import MetadataV2
from anemoi_ckpt_nb.catalogue.schema_export import (
    SCHEMA_FOLDER,
    all_models,
    anemoi_metadata_models,
    export_schemas,
    main,
    render_schemas,
    stale_schemas,
)

GOLDEN = Path(__file__).parent / "data" / "golden"
REGENERATE = "python -m anemoi_ckpt_nb.catalogue.schema_export"


def test_committed_schema_files_match_the_models():
    stale = stale_schemas(all_models(), SCHEMA_FOLDER)
    assert stale == [], f"schema files out of date: {stale}; if the change is deliberate, run `{REGENERATE}` and review the diff"


def test_every_committed_schema_file_has_a_model():
    expected = set(render_schemas(all_models()))
    committed = {p.name for p in SCHEMA_FOLDER.glob("*.json")}
    assert committed == expected, f"orphan or missing schema files; run `{REGENERATE}`"


def test_catalogue_documents_are_published_too():
    names = set(render_schemas(all_models()))
    assert {"anemoi-metadata-0.0.json", "anemoi-metadata-1.0.json", "anemoi-metadata-2.0.json"} <= names
    assert {"catalogue-record.json", "catalogue-tags.json", "catalogue-descriptor.json"} <= names


def test_a_deliberately_broken_model_is_caught(tmp_path):
    export_schemas(anemoi_metadata_models(), tmp_path)
    assert stale_schemas(anemoi_metadata_models(), tmp_path) == []
    # "Breaking change": metadata 2.0 now requires a key old files do not have.
    broken = create_model("MetadataV2", __base__=MetadataV2, __module__=MetadataV2.__module__, checksum=(str, ...))
    models = {**anemoi_metadata_models(), "anemoi-metadata-2.0": broken}
    assert stale_schemas(models, tmp_path) == ["anemoi-metadata-2.0.json"]


def test_export_command_writes_then_checks(tmp_path, capsys):
    assert main(["--folder", str(tmp_path)]) == 0
    assert main(["--check", "--folder", str(tmp_path)]) == 0
    target = tmp_path / "anemoi-metadata-2.0.json"
    target.write_text(target.read_text().replace('"version"', '"schema"', 1))
    assert main(["--check", "--folder", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err


def test_export_leaves_unchanged_files_untouched(tmp_path):
    export_schemas(anemoi_metadata_models(), tmp_path)
    target = tmp_path / "anemoi-metadata-1.0.json"
    before = target.stat().st_mtime_ns
    export_schemas(anemoi_metadata_models(), tmp_path)
    assert target.stat().st_mtime_ns == before


def _schema(version: str) -> dict:
    return json.loads((SCHEMA_FOLDER / f"anemoi-metadata-{version}.json").read_text())


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("metadata-*.expected.json")), ids=lambda p: p.stem)
def test_published_schema_accepts_the_migrated_golden_documents(path):
    expected = json.loads(path.read_text())
    jsonschema.validate(expected["document"], _schema(expected["to_version"]))


def test_published_schema_rejects_a_document_missing_a_required_key():
    document = json.loads((GOLDEN / "metadata-2.0-multi-dataset.json").read_text())
    del document["metadata_inference"]
    with pytest.raises(jsonschema.ValidationError, match="metadata_inference"):
        jsonschema.validate(document, _schema("2.0"))
