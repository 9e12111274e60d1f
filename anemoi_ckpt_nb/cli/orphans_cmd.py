"""``anemoi-ckpt clean --orphans [--orphan-age HOURS] [--apply]``: leftovers of killed commands."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import _positive, format_size, open_catalogue


def add_orphans_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--orphans", action="store_true",
        help="instead of checkpoints, remove what killed register, replicate or convert commands left: temporary "
        "files no process holds and stale S3 multipart uploads, in the catalogue and at its sites, and aliases "
        "(aliases/UUID.json) no record names",
    )
    parser.add_argument(
        "--orphan-age", type=_positive(float, "0 or more", zero=True), default=24.0, metavar="HOURS",
        help="with --orphans: hours without a new part before a multipart upload counts, and an alias whose record "
        "is missing (default 24)",
    )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_orphans(args: argparse.Namespace) -> int:
    report = open_catalogue(args).clean_orphans(min_age_hours=args.orphan_age, dry_run=not args.apply)
    verb = "removed" if report.applied else "would remove"
    for site, orphan in report.orphans:
        print(f"{verb}: {orphan.url}  ({orphan.kind} at site {site}, {format_size(orphan.size)}, unchanged for {_age(orphan.age)})")
    for site, orphan in report.skipped:
        print(f"kept: {orphan.url}  (taken up by a running command since it was found)")
    for site, why in report.unreachable:
        print(f"not looked at: site {site}: {why}")
    summary = f"{len(report.orphans)} leftover(s), {format_size(report.freed_bytes)} {verb}"
    if not report.applied and report.orphans:
        summary += "; run again with --apply to remove them"
    print(summary)
    return 0
