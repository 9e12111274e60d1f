"""``anemoi-ckpt replicate ID [ID ...] --to SITE``: copy checkpoints to another site, verified."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue, short


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replicate",
        help="copy checkpoints to another site and record the new location",
        description="Copy each checkpoint's file to SITE: server-side when both ends are the same S3 endpoint, "
        "else streamed (through a resumable staging file between two S3 endpoints, straight into place on a "
        "file-system site), verified by sha256. Run it again to resume an interrupted copy.",
    )
    parser.add_argument("refs", nargs="+", metavar="ID", help="uuid, uuid prefix, name or file name")
    parser.add_argument("--to", required=True, metavar="SITE", dest="site", help="destination site (see `anemoi-ckpt site ls`)")
    parser.add_argument("--verify", action="store_true", help="also hash a server-side copy (other copies are always hashed)")
    parser.add_argument("--staging", metavar="DIR", help="folder for the staging file between two S3 endpoints (default: user cache)")
    add_catalogue_option(parser)


def run(args: argparse.Namespace) -> int:
    catalogue = open_catalogue(args)
    for ref in args.refs:
        checkpoint = catalogue.get(ref)
        result = checkpoint.replicate(args.site, verify=args.verify, staging=args.staging)
        print(f"{short(checkpoint.uuid)}: {result.describe()}")
    return 0
