"""``anemoi-ckpt sync [SPOOL] [--catalogue URL] [--list]``: register a training callback's spool."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, catalogue_url, open_catalogue, short


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="register the checkpoints a training callback captured into its spool",
        description="Register every checkpoint the training callback (anemoi_ckpt_nb.training.RegisterCheckpoints) "
        "captured into its spool folder, parents first, then remove the captured bytes. Run it on a machine "
        "that reaches the catalogue (a login node, a job after training, cron). Safe to repeat, to interrupt "
        "and to run twice at once. Exit status 1 if an entry could not be registered yet.",
    )
    parser.add_argument("spool", nargs="?", metavar="SPOOL", help="the spool folder (default: $ANEMOI_CKPT_SPOOL)")
    add_catalogue_option(parser)
    parser.add_argument("--list", action="store_true", help="list the spool's entries and their state; register nothing")
    parser.add_argument("--keep-files", action="store_true", help="keep the captured bytes of registered entries")
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
        return 0
    # The catalogue named here, else the one the spool was written for, else the default.
    if not catalogue_url(args) and spool.catalogue:
        args.catalogue = spool.catalogue
    catalogue = open_catalogue(args)

    def show(entry, outcome: str, detail: str) -> None:
        shown = short(detail) if outcome in ("registered", "already") else detail
        print(f"{outcome}: {entry.source}  {shown}")

    report = catalogue.sync(spool.path, allow_missing_parents=args.allow_missing_parents,
                            keep_files=args.keep_files, on_entry=show)
    print(f"synced {spool.path} into {catalogue.url}: {len(report.registered)} registered, {len(report.already)} "
          f"already registered, {len(report.waiting)} waiting for a parent, {len(report.failed)} failed, "
          f"{len(report.busy)} held by another sync")
    return 0 if report.ok else 1
