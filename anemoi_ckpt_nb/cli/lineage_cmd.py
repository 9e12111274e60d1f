"""``anemoi-ckpt lineage ID [--json]``: the family tree of a checkpoint."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lineage",
        help="show where a checkpoint comes from and what came from it",
        description="Print the lineage tree of a checkpoint, from its roots to every descendant; "
        "the checkpoint is marked with <==.",
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix, name or file name")
    add_catalogue_option(parser)
    parser.add_argument("--json", action="store_true", help="print uuid, ancestors, descendants and parent links as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    checkpoint = open_catalogue(args, read_only=True).get(args.ref)
    if args.json:
        ancestors = checkpoint.ancestors()
        descendants = checkpoint.descendants()
        family = [checkpoint, *ancestors, *descendants]
        print(json.dumps({
            "uuid": checkpoint.uuid,
            "ancestors": [c.uuid for c in ancestors],
            "descendants": [c.uuid for c in descendants],
            "parents": {c.uuid: [p.model_dump() for p in c.parents] for c in family},
        }, indent=2))
        return 0
    print(checkpoint.lineage_text())
    return 0
