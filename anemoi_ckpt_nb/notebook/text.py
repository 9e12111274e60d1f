"""Plain-text forms of checkpoints and catalogues: ``repr``, the ``<pre>`` fallback, ``text/plain``.

Pure functions over "record-like" values: a :class:`~anemoi_ckpt_nb.catalogue.schema.CheckpointRecord`,
an :class:`~anemoi_ckpt_nb.catalogue.schema.IndexEntry`, or a plain mapping with the same keys
(a row of ``Catalogue.to_pandas()``). Missing fields are shown as ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Columns of the catalogue listing, in display order, when the rows have them.
TABLE_COLUMNS: tuple[str, ...] = (
    "name",
    "uuid",
    "kind",
    "run_id",
    "epoch",
    "global_step",
    "tags",
    "parents",
    "size",
    "sites",
    "dataset",
    "registered_at",
)


def field(record: Any, name: str, default: Any = None) -> Any:
    """``record.name`` or ``record[name]``, whichever the record has.

    Args:
        record: A pydantic record, a mapping, or any object with attributes.
        name: The field name.
        default: Returned when the field is missing or None.

    Returns:
        The value, or ``default``.
    """
    if isinstance(record, Mapping):
        value = record.get(name, default)
    else:
        value = getattr(record, name, default)
    return default if value is None else value


def format_bytes(size: int | float | None) -> str:
    """``1536`` -> ``"1.5 kB"``, as the CLI shows sizes (:func:`anemoi_ckpt_nb.read.summary.format_bytes`); None -> ``"-"``."""
    from anemoi_ckpt_nb.read.summary import format_bytes as _format_bytes

    return "-" if size is None else _format_bytes(size)


def format_count(count: int | None) -> str:
    """``1234567`` -> ``"1,234,567"``; None -> ``"-"``."""
    return "-" if count is None else f"{int(count):,}"


def format_time(value: Any) -> str:
    """A date and time to the second: ``2025-05-02 08:30:00+00:00``; None -> ``"-"``."""
    if value is None:
        return "-"
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ", timespec="seconds")
    text = str(value).replace("T", " ", 1)
    return re.sub(r"(\d{2}:\d{2}:\d{2})\.\d+", r"\1", text)


def short_uuid(uuid: str | None) -> str:
    """The first 8 characters of a uuid, as ``git`` shortens hashes."""
    return "-" if not uuid else str(uuid)[:8]


def parent_links(record: Any) -> list[tuple[str, str]]:
    """``[(parent_uuid, relation), ...]`` of a record, whatever form its parents take."""
    links = []
    for link in field(record, "parents", []) or []:
        if isinstance(link, str):  # "relation:uuid", as Catalogue.to_pandas() writes them
            relation, _, uuid = link.rpartition(":")
        elif isinstance(link, (list, tuple)) and len(link) == 2:
            uuid, relation = link
        else:
            uuid, relation = field(link, "uuid"), field(link, "relation", "")
        links.append((str(uuid), str(relation)))
    return links


def sizes(record: Any) -> dict[str, int | None]:
    """Byte counts and parameter count of a record; an index entry only knows its ``size``."""
    part = field(record, "sizes")
    return {
        "total": field(part, "total_bytes") if part is not None else field(record, "size"),
        "weights": field(part, "weights_bytes") if part is not None else None,
        "optimizer": field(part, "optimizer_bytes") if part is not None else None,
        "other": field(part, "other_bytes") if part is not None else None,
        "parameters": field(part, "parameter_count") if part is not None else None,
    }


def step_text(record: Any) -> str:
    """``"epoch 2, step 200"`` with whatever of the two the record has."""
    parts = []
    if field(record, "epoch") is not None:
        parts.append(f"epoch {field(record, 'epoch')}")
    if field(record, "global_step") is not None:
        parts.append(f"step {field(record, 'global_step')}")
    return ", ".join(parts) or "-"


def card_rows(record: Any, tags: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The ``(label, value)`` rows that both the card and its text form show, values as text."""
    size = sizes(record)
    parents = parent_links(record)
    return [
        ("uuid", str(field(record, "uuid", "-"))),
        ("kind", str(field(record, "kind", "-"))),
        ("run", str(field(record, "run_id", "-"))),
        ("step", step_text(record)),
        ("tags", ", ".join(tags) or "-"),
        ("parents", "; ".join(f"{relation} {uuid}" for uuid, relation in parents) or "-"),
        ("size", format_bytes(size["total"])),
        ("parameters", format_count(size["parameters"])),
        ("dataset", str(field(record, "dataset", "-"))),
        ("saved", format_time(field(record, "saved_at"))),
        ("registered", format_time(field(record, "registered_at"))),
        ("runs with", runs_with_line(record)),
    ]


def runs_with_line(record: Any) -> str:
    """Which runner runs a registered checkpoint, from its kind, format and lineage alone."""
    from anemoi_ckpt_nb.read.runs_with import runs_with, runs_with_text

    kind, fmt = field(record, "kind"), field(record, "format", "anemoi")
    converted = any(relation == "converted-from" for _, relation in parent_links(record))
    if kind == "inference" and fmt == "state-dict":
        return runs_with_text([], kind)
    conversion_format = fmt if converted else ("safetensors" if fmt == "safetensors" else None)
    return runs_with_text(runs_with(kind, conversion_format=conversion_format), kind)


def checkpoint_text(record: Any, *, tags: Iterable[str] = ()) -> str:
    """A checkpoint as a few aligned lines: the ``<pre>`` fallback and ``text/plain`` form.

    Args:
        record: Record-like (see module docstring).
        tags: Its current tags.

    Returns:
        Multi-line text, first line ``Checkpoint <name>``.
    """
    name = field(record, "name") or field(record, "filename") or short_uuid(field(record, "uuid"))
    rows = card_rows(record, tags)
    width = max(len(label) for label, _ in rows)
    lines = [f"Checkpoint {name}"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def table_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows of a DataFrame (``to_dict("records")``, no pandas import) or of records, as dicts."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return list(rows.to_dict("records"))
    out = []
    for row in rows:
        if isinstance(row, Mapping):
            out.append(dict(row))
        elif hasattr(row, "model_dump"):
            out.append(row.model_dump())
        else:
            out.append(dict(vars(row)))
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or (isinstance(value, (list, tuple)) and not value)


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The catalogue columns present in ``rows`` (known ones, in :data:`TABLE_COLUMNS` order, else all),
    leaving out those empty in every row (a catalogue where nothing has a name shows no name column)."""
    present: dict[str, None] = {}
    for row in rows:
        present.update(dict.fromkeys(row))
    columns = [column for column in TABLE_COLUMNS if column in present] or list(present)
    kept = [column for column in columns if any(not _empty(row.get(column)) for row in rows)]
    return kept or columns


def cell_text(column: str, value: Any) -> str:
    """One table cell as text: sizes human-readable, tag and parent lists joined."""
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas
        return "-"
    if column in ("uuid", "run_id"):
        return short_uuid(value)
    if column.endswith("_at"):
        return format_time(value)
    if column == "size":
        return format_bytes(value)
    if column == "parents":
        return ", ".join(f"{relation} {short_uuid(uuid)}" for uuid, relation in parent_links({"parents": value}))
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return ", ".join(str(item) for item in value)
    return str(value)


def catalogue_text(rows: Any, *, title: str = "Catalogue", max_rows: int = 50) -> str:
    """A catalogue listing as an aligned text table.

    Args:
        rows: A DataFrame (``Catalogue.to_pandas()``) or an iterable of record-likes.
        title: First line.
        max_rows: Rows shown; the rest are counted in the last line.

    Returns:
        Multi-line text.
    """
    records = table_rows(rows)
    columns = table_columns(records)
    shown = records[:max_rows]
    cells = [[cell_text(column, row.get(column)) for column in columns] for row in shown]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = [f"{title}: {len(records)} checkpoint{'s' if len(records) != 1 else ''}"]
    if columns:
        lines.append("  ".join(column.ljust(width) for column, width in zip(columns, widths)).rstrip())
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    if len(records) > max_rows:
        lines.append(f"... {len(records) - max_rows} more")
    return "\n".join(lines)


def convert_line(outcome: Any) -> str:
    """One line for one input of a batch conversion (a ``ConvertOutcome``), as ``anemoi-ckpt convert`` prints it."""
    from anemoi_ckpt_nb.errors import describe_error

    if outcome.ok:
        r = outcome.result
        return (
            f"converted {r.source} -> {r.destination} ({r.tensors} tensors, {format_bytes(r.size)}, "
            f"uuid {r.uuid}, {r.seconds:.1f} s)"
        )
    text = describe_error(outcome.error)
    return f"FAILED    {text if str(outcome.source) in text else f'{outcome.source}: {text}'}"


def convert_text(outcomes: Iterable[Any]) -> str:
    """A batch conversion: one line per input, then the count of failures."""
    outcomes = list(outcomes)
    failed = sum(1 for outcome in outcomes if not outcome.ok)
    lines = [convert_line(outcome) for outcome in outcomes]
    lines.append(f"{len(outcomes) - failed} converted, {failed} failed")
    return "\n".join(lines)


def row_labels(entries: list[dict[str, Any]], *, name_width: int = 48) -> list[str]:
    """One line per index entry for a list in a monospace font, its columns padded to line up:
    short uuid, kind, name (or file name; cut with "..." past ``name_width``), step, tags."""
    def name(entry: dict[str, Any]) -> str:
        text = str(entry.get("name") or entry.get("filename") or "")
        return text if len(text) <= name_width else text[: name_width - 3] + "..."

    columns = [
        [
            short_uuid(entry.get("uuid")),
            str(entry.get("kind", "?")),
            name(entry),
            f"step {entry['global_step']}" if entry.get("global_step") is not None else "",
            "[" + ", ".join(entry["tags"]) + "]" if entry.get("tags") else "",
        ]
        for entry in entries
    ]
    widths = [max((len(row[k]) for row in columns), default=0) for k in range(5)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in columns]
