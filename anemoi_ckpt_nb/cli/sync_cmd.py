"""``anemoi-ckpt sync [SPOOL] [--catalogue URL] [--list] [--dry-run]``: register a training callback's spool."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import _positive, add_catalogue_option, catalogue_url, format_size, open_catalogue, short
from anemoi_ckpt_nb.cli.orphans_cmd import _age

EXIT_STATUS = {1: "an entry is waiting for a parent or failed (each has its line), or the catalogue could not be "
                  "reached (the sync stopped); what is not registered stays in the spool for the next sync"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="register the checkpoints a training callback captured into its spool",
        description="Register every checkpoint the training callback (anemoi_ckpt_nb.training.RegisterCheckpoints) "
        "captured into its spool folder, parents first, then remove the captured bytes. Run it on a machine "
        "that reaches the catalogue (a login node, a job after training, cron). Safe to repeat, to interrupt "
        "and to run twice at once. Captured bytes without an entry (a capture a killed training cut short) are "
        "removed once unchanged for --orphan-age hours.",
    )
    parser.add_argument("spool", nargs="?", metavar="SPOOL", help="the spool folder (default: $ANEMOI_CKPT_SPOOL)")
    add_catalogue_option(parser)
    parser.add_argument("--list", action="store_true", help="list the spool's entries and their state; register nothing")
    parser.add_argument("--dry-run", action="store_true",
                        help="register nothing and remove nothing: say what would be registered and removed")
    parser.add_argument("--keep-files", action="store_true", help="keep the captured bytes of registered entries")
    parser.add_argument(
        "--orphan-age", type=_positive(float, "0 or more", zero=True), default=24.0, metavar="HOURS",
        help="hours captured bytes without an entry stay unchanged before they are removed (default 24; "
        "0 only when no training captures into the spool)",
    )
    parser.add_argument(
        "--allow-missing-parents", action="store_true",
        help="register a checkpoint whose parent is neither registered nor in the spool",
    )


def run(args: argparse.Namespace) -> int:
    from anemoi_ckpt_nb import settings
    from anemoi_ckpt_nb.errors import SpoolError
    from anemoi_ckpt_nb.runs.spool import Spool

    chosen = settings.spool(args.spool)
    if chosen.value is None:
        raise SpoolError("SPOOL: no spool named", hint=f"pass the callback's spool folder or set ${settings.ENV_SPOOL}")
    spool = Spool.open(chosen.value)
    if args.list:
        for entry, state, detail in spool.status():
            print(f"{state:8} {entry.key}  {entry.source}" + (f"  {detail}" if detail else ""))
        for orphan in spool.orphans():
            print(f"orphan   {orphan.key}  {_orphan(orphan)}")
        return 0
    # The catalogue named here, else the one the spool was written for, else the default.
    if not catalogue_url(args) and spool.catalogue:
        args.catalogue = spool.catalogue
    catalogue = open_catalogue(args, creates_default=not args.dry_run)

    def show(entry, outcome: str, detail: str) -> None:
        shown = short(detail) if outcome in ("registered", "already") else detail
        print(f"{outcome}: {entry.source}  {shown}")

    report = catalogue.sync(spool.path, allow_missing_parents=args.allow_missing_parents, keep_files=args.keep_files,
                            orphan_age=args.orphan_age * 3600, dry_run=args.dry_run, on_entry=show)
    removed = "to remove" if report.dry_run else "removed"
    for orphan in report.orphans_removed:
        print(f"orphan {removed}: {orphan.path}  {_orphan(orphan)}")
    for orphan in report.orphans_kept:
        print(f"orphan kept: {orphan.path}  {_orphan(orphan)}; younger than {args.orphan_age:g} h, maybe a capture under way")
    orphans = f", {len(report.orphans_removed)} orphan(s) {removed}" if report.orphans_removed else ""
    if report.dry_run:
        for key in report.pending:
            print(f"to register: {spool.entry(key).source}  (entry {key})")
        print(f"dry run of {spool.path} into {catalogue.url}: {len(report.pending)} to register{orphans}; nothing done")
        return 0
    if report.stopped:
        print(f"stopped: {report.stopped}; {len(report.left)} entr{'y' if len(report.left) == 1 else 'ies'} not "
              "registered stay in the spool: run `anemoi-ckpt sync` again when the catalogue can be reached")
    print(f"synced {spool.path} into {catalogue.url}: {len(report.registered)} registered, {len(report.already)} "
          f"already registered, {len(report.waiting)} waiting for a parent, {len(report.failed)} failed, "
          f"{len(report.busy)} held by another sync{orphans}")
    return 0 if report.ok else 1


def _orphan(orphan) -> str:
    """An orphan's files, size and age, as printed."""
    return f"{', '.join(orphan.names) or 'empty'}; {format_size(orphan.size)}, unchanged for {_age(orphan.age)}"
