"""``anemoi-ckpt download ID DEST``: fetch a checkpoint's file, verified, resumable."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download a checkpoint's file",
        description="Download to DEST (a file name, or a folder, existing or ending with /, to keep the original file name). "
        "The sha256 is verified; an interrupted download resumes.",
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix, name or file name")
    parser.add_argument("dest", metavar="DEST", help="a file name, or a folder: an existing one or one ending with / (created)")
    add_catalogue_option(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    result = open_catalogue(args).fetch(args.ref, args.dest)
    print(result.path)
    print(f"anemoi-ckpt: {result.describe()}", file=sys.stderr)  # which copy (site) was used
    return 0
