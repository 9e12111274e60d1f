"""``anemoi-ckpt lineage ID [--json]``: the family tree of a checkpoint."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lineage",
        help="show where a checkpoint comes from and what came from it",
        description="Print the lineage tree of a checkpoint: from the first saves of its run down to every "
        "descendant; the checkpoint is marked with <==. Successive checkpoints of one training session are "
        "linked by continued-from (derived from their steps); resumes, forks and conversions branch off.",
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix, name or file name")
    add_catalogue_option(parser)
    parser.add_argument(
        "--json", action="store_true",
        help="print the same tree as JSON: uuid, family (every checkpoint shown), ancestors, descendants, "
        "links (the edges drawn) and parents (the links as recorded)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    checkpoint = open_catalogue(args).get(args.ref)
    if args.json:
        _, members, graph = checkpoint.catalogue.lineage_family(checkpoint.uuid)
        family = checkpoint.family()
        print(json.dumps({
            "uuid": checkpoint.uuid,
            "family": members,
            "ancestors": [c.uuid for c in checkpoint.ancestors()],
            "descendants": [c.uuid for c in checkpoint.descendants()],
            "links": {u: [{"uuid": p, "relation": r} for p, r in graph.get(u, ())] for u in members},
            "parents": {c.uuid: [p.model_dump() for p in c.parents] for c in family},
        }, indent=2))
        return 0
    print(checkpoint.lineage_text())
    return 0
