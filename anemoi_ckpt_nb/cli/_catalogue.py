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


def _positive(kind: type, what: str, *, zero: bool = False):
    """An argparse type: a number above zero (or ``zero`` too), else a usage error naming the option's rule."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= 0 if zero else value > 0) or value == float("inf"):  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    return convert


def add_retention_options(parser: argparse.ArgumentParser, *, help_prefix: str = "") -> None:
    """``--keep-last N`` and ``--older-than DAYS``, checked when parsed (as the catalogue's policy requires)."""
    parser.add_argument(
        "--keep-last", type=_positive(int, "1 or more"), metavar="N", help=f"{help_prefix}keep the newest N checkpoints of each run"
    )
    parser.add_argument(
        "--older-than", type=_positive(float, "above 0"), metavar="DAYS",
        help=f"{help_prefix}drop untagged checkpoints registered more than DAYS ago",
    )


def catalogue_url(args: argparse.Namespace) -> str | None:
    """The URL given after or before the subcommand, else None (the default catalogue)."""
    return getattr(args, "catalogue", None) or getattr(args, "global_catalogue", None)


def open_catalogue(args: argparse.Namespace, *, creates_default: bool = False):
    """The catalogue a command names, or the default one. Only a command that adds checkpoints
    (``creates_default``: register, sync) creates the default, and says where, once; the others
    (ls, show, tag, clean, ...) have nothing to act on in a catalogue that does not exist yet."""
    import sys

    from anemoi_ckpt_nb import settings
    from anemoi_ckpt_nb.api import Catalogue

    catalogue = Catalogue(catalogue_url(args), create_default=creates_default)
    if catalogue.created:
        chosen = settings.catalogue()
        print(f"anemoi-ckpt: created the {'default ' if chosen.is_default else ''}catalogue at {chosen.value} "
              f"({'first use' if chosen.is_default else 'from ' + settings.ENV_CATALOGUE}; "
              "`anemoi-ckpt info` shows where things are)", file=sys.stderr)
    return catalogue


def short(uuid: str | None) -> str:
    return (uuid or "-")[:8]


def format_size(size: int | None) -> str:
    """``1.2 GB``-style, as ``inspect`` prints sizes; None -> ``-``."""
    from anemoi_ckpt_nb.read.summary import format_bytes

    return "-" if size is None else format_bytes(size)


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
