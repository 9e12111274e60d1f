"""``anemoi-ckpt reindex [--check]``: rebuild the catalogue's index from its records."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue, short

#: Statuses besides those every command returns (listed in the command reference).
EXIT_STATUS = {1: "with --check: the index differs from records/ (run reindex without --check to rebuild it)"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reindex",
        help="rebuild the index (what ls and search read) from the records",
        description="Recreate index/ from records/, tags/ and locations/, the truth. Needed when a writer "
        "died between creating a record and indexing it (ls does not show it) or a clean died before "
        "unindexing one. Safe while others register or clean. With --check, only compare and report.",
    )
    add_catalogue_option(parser)
    parser.add_argument(
        "--check", action="store_true", help="only compare the index with records/; exit 1 if they differ"
    )


def run(args: argparse.Namespace) -> int:
    from anemoi_ckpt_nb.errors import SchemaError

    catalogue = open_catalogue(args)
    try:
        report = catalogue.check_index()
    except SchemaError as error:  # an unreadable index is what a rebuild replaces
        if args.check:
            raise
        print(f"the current index is unreadable ({error.message}); rebuilding it")
        report = None
    if report is None:
        entries = catalogue.rebuild_index()
        print(f"index rebuilt from the records of {catalogue.url}: {entries} checkpoints")
        return 0
    for uuid in report.missing:
        print(f"not in the index: {short(uuid)}  ({uuid})")
    for uuid in report.stale:
        print(f"in the index without a record: {short(uuid)}  ({uuid})")
    if args.check:
        if report.ok:
            print(f"index matches the {report.records} records of {catalogue.url}")
            return 0
        print(f"index differs from the records: run `anemoi-ckpt reindex --catalogue {catalogue.url}`")
        return 1
    entries = catalogue.rebuild_index()
    print(f"index rebuilt from the records of {catalogue.url}: {entries} checkpoints")
    return 0
