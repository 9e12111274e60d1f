"""``anemoi-ckpt ls [--tag T] [--kind K] [--run R] [--json]``: list the catalogue."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, catalogue_url, entries_table, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ls", help="list checkpoints in the catalogue", description="List checkpoints matching every filter."
    )
    add_catalogue_option(parser)
    parser.add_argument("--tag", action="append", default=[], metavar="TAG", help="has this tag (repeatable: all of them)")
    parser.add_argument("--kind", choices=("training", "inference"))
    parser.add_argument("--run", metavar="RUN_ID", help="run id or its first characters")
    parser.add_argument("--text", metavar="TEXT", help="substring of uuid, name, file name, run, dataset, user or tag")
    parser.add_argument("--site", metavar="SITE", help="a copy is recorded at this site")
    parser.add_argument("--json", action="store_true", help="print index entries as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from anemoi_ckpt_nb.errors import CatalogueNotFoundError

    try:
        catalogue = open_catalogue(args)
    except CatalogueNotFoundError as error:
        if catalogue_url(args):  # a catalogue named on the command line must exist
            raise
        # The default (or $ANEMOI_CKPT_CATALOGUE) before the first register: empty, and not created by looking.
        print("[]" if args.json else f"nothing registered yet: {error.url} does not exist "
              "(the first `anemoi-ckpt register` creates it; `anemoi-ckpt info` shows where things are)")
        return 0
    entries = catalogue.entries(tags=args.tag, kind=args.kind, run_id=args.run, text=args.text, site=args.site)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print(f"no checkpoints in {catalogue.url} match" if (args.tag or args.kind or args.run or args.text or args.site) else f"{catalogue.url} is empty")
        return 0
    print(entries_table(entries))
    print(f"{len(entries)} checkpoint{'s' if len(entries) != 1 else ''} in {catalogue.url}")
    return 0
