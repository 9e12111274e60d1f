"""Options and printing shared by the catalogue commands (register, ls, show, tag, ...)."""

from __future__ import annotations

import argparse
from typing import Any


def add_catalogue_option(parser: argparse.ArgumentParser) -> None:
    """``--catalogue URL`` on a subcommand; also accepted before the subcommand."""
    parser.add_argument(
        "--catalogue",
        metavar="URL",
        default=None,
        help="catalogue URL (s3://bucket/prefix, file:///path) or folder "
        "(default: $ANEMOI_CKPT_CATALOGUE, else a folder in your user data directory)",
    )


def catalogue_url(args: argparse.Namespace) -> str | None:
    """The URL given after or before the subcommand, else None (the default catalogue)."""
    return getattr(args, "catalogue", None) or getattr(args, "global_catalogue", None)


def open_catalogue(args: argparse.Namespace):
    from anemoi_ckpt_nb.api import Catalogue

    return Catalogue(catalogue_url(args))


def short(uuid: str | None) -> str:
    return (uuid or "-")[:8]


def format_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def describe(entry: Any) -> str:
    """One line about a checkpoint (index entry or record)."""
    get = entry.get if isinstance(entry, dict) else lambda k, d=None: getattr(entry, k, d)
    parts = [short(get("uuid")), get("kind")]
    if get("run_id"):
        parts.append(f"run {short(get('run_id'))}")
    if get("epoch") is not None:
        parts.append(f"epoch {get('epoch')}")
    if get("global_step") is not None:
        parts.append(f"step {get('global_step')}")
    parts.append(get("name") or get("filename"))
    return "  ".join(str(p) for p in parts)


def entries_table(entries: list[dict[str, Any]]) -> str:
    """A fixed-width table of index entries, one line each."""
    rows = [("UUID", "KIND", "RUN", "EPOCH", "STEP", "SIZE", "TAGS", "NAME", "REGISTERED")]
    for e in entries:
        rows.append((
            short(e["uuid"]),
            e["kind"],
            short(e.get("run_id")),
            "-" if e.get("epoch") is None else str(e["epoch"]),
            "-" if e.get("global_step") is None else str(e["global_step"]),
            format_size(e.get("size")),
            ",".join(e.get("tags", ())) or "-",
            e.get("name") or e.get("filename") or "-",
            e["registered_at"][:16].replace("T", " "),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
