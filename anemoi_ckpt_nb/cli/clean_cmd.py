"""``anemoi-ckpt clean [--apply] [--keep-last N] [--older-than D]``: apply a retention policy."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, add_retention_options, format_size, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "clean",
        help="remove old checkpoints by policy (dry run unless --apply)",
        description="Select checkpoints by retention rules (the options, else the catalogue's policy) and "
        "remove them. Never removes a checkpoint with a protected tag (production-ready by default) or one "
        "with registered descendants. Only prints what would go unless --apply.",
    )
    add_catalogue_option(parser)
    parser.add_argument("--apply", action="store_true", help="really delete")
    add_retention_options(parser)
    from anemoi_ckpt_nb.cli.locations_cmd import add_drop_options

    add_drop_options(parser)  # clean --drop-location SITE ID: one copy, not the checkpoint
    from anemoi_ckpt_nb.cli.orphans_cmd import add_orphans_options

    add_orphans_options(parser)  # clean --orphans: leftovers of killed commands, not checkpoints


def run(args: argparse.Namespace) -> int:
    if args.drop_location or args.drop_refs:
        from anemoi_ckpt_nb.cli.locations_cmd import run_drop

        return run_drop(args)
    if args.orphans:
        from anemoi_ckpt_nb.cli.orphans_cmd import run_orphans

        return run_orphans(args)
    catalogue = open_catalogue(args)
    plan = catalogue.clean(keep_last=args.keep_last, older_than_days=args.older_than, dry_run=not args.apply)
    verb = "deleted" if plan.applied else "would delete"
    for decision in plan.delete:
        print(f"{verb}: {decision.label}  ({decision.reason})")
        for where in decision.files:
            print(f"    {where}")
    for decision in plan.keep:
        print(f"kept: {decision.label}  ({decision.reason})")
    summary = f"{len(plan.delete)} checkpoint(s), {format_size(plan.freed_bytes)} {verb}"
    if not plan.applied and plan.delete:
        summary += "; run again with --apply to delete"
    print(summary)
    return 0
