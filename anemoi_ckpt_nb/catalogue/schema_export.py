"""Publish the JSON Schema of every model the project reads or writes.

The files in ``anemoi_ckpt_nb/schemas/`` are generated, committed, and
compared with what the models generate by ``tests/test_schemas_export.py``:
a change to a model that changes its schema fails the tests until the files
are regenerated, so a breaking change is always a visible diff in review.

Regenerate after a deliberate change::

    python -m anemoi_ckpt_nb.catalogue.schema_export          # write
    python -m anemoi_ckpt_nb.catalogue.schema_export --check  # exit 1 if stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

#: Where the schema files live in the source tree (shipped as package data).
SCHEMA_FOLDER = Path(__file__).resolve().parents[1] / "schemas"

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def anemoi_metadata_models() -> dict[str, type[BaseModel]]:
    """The Anemoi metadata models, by file stem (``anemoi-metadata-2.0`` ...)."""
    from anemoi_ckpt_nb.compat.anemoi_metadata import VERSIONS

    return {f"anemoi-metadata-{version}": model for version, model in VERSIONS.items()}


def project_models() -> dict[str, type[BaseModel]]:
    """The models of the documents the catalogue stores (``catalogue.schema.STORED_MODELS``)."""
    try:
        from anemoi_ckpt_nb.catalogue.schema import STORED_MODELS
    except ModuleNotFoundError as error:  # only while the catalogue does not exist yet
        if error.name != "anemoi_ckpt_nb.catalogue.schema":
            raise
        return {}
    return dict(STORED_MODELS)


def all_models() -> dict[str, type[BaseModel]]:
    """Every published model, by file stem."""
    return {**anemoi_metadata_models(), **project_models()}


def render_schema(model: type[BaseModel]) -> str:
    """The JSON Schema text of ``model``: stable key order, two-space indent, final newline."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_schemas(models: Mapping[str, type[BaseModel]]) -> dict[str, str]:
    """``{"<stem>.json": text}`` for each model."""
    return {f"{stem}.json": render_schema(model) for stem, model in sorted(models.items())}


def export_schemas(models: Mapping[str, type[BaseModel]], folder: str | Path) -> list[Path]:
    """Write ``<folder>/<stem>.json`` for each model; unchanged files are not rewritten.

    Args:
        models: file stem -> pydantic model, e.g. ``{"catalogue-record": CheckpointRecord}``.
        folder: where to write (created if missing).

    Returns:
        The files written or already up to date, sorted.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_schemas(models).items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    return sorted(paths)


def stale_schemas(models: Mapping[str, type[BaseModel]], folder: str | Path) -> list[str]:
    """File names in ``folder`` that are missing or differ from what ``models`` generate."""
    folder = Path(folder)
    stale = []
    for name, text in render_schemas(models).items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Write the schema files, or with ``--check`` only say whether they are up to date."""
    parser = argparse.ArgumentParser(prog="python -m anemoi_ckpt_nb.catalogue.schema_export")
    parser.add_argument("--folder", type=Path, default=SCHEMA_FOLDER, help="where the .json files go")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    models = all_models()
    if args.check:
        stale = stale_schemas(models, args.folder)
        for name in stale:
            print(f"stale: {args.folder / name}", file=sys.stderr)
        return 1 if stale else 0
    for path in export_schemas(models, args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
