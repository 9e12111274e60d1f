"""``anemoi-ckpt upgrade IN OUT``: write a copy whose metadata is migrated to the current version."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upgrade",
        help="write a copy of a checkpoint with its metadata migrated to the current version",
        description="Write OUT: IN with its Anemoi metadata migrated to the current version and embedded as "
        "anemoi-utils lays it out (anemoi.json and supporting arrays), the steps recorded in the metadata. "
        "Weights and every other entry are copied unchanged. IN is never modified; when its metadata is "
        "already current nothing is written.",
    )
    parser.add_argument("source", metavar="IN", help="the checkpoint to upgrade")
    parser.add_argument("destination", metavar="OUT", help="the file to write, or a folder (existing, or ending with /) to write IN's name into")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--json", action="store_true", help="print what was done as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from anemoi_ckpt_nb.compat.upgrade import upgrade_checkpoint

    result = upgrade_checkpoint(args.source, args.destination, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
        return 0
    steps = [*result.steps_applied, *result.container_steps]
    if steps:
        print(f"{result.destination}: metadata {result.from_version} -> {result.to_version} "
              f"({result.metadata_source}); steps: {', '.join(steps)}")
    else:
        print(f"{result.source}: metadata already at {result.to_version} ({result.metadata_source}); "
              f"nothing to upgrade, {result.destination} not written")
    return 0
