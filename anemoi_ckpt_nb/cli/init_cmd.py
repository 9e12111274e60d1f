"""``anemoi-ckpt init [URL]``: create a catalogue."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_retention_options, catalogue_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "init",
        help="create a catalogue on S3 or in a folder",
        description="Write catalogue.json at URL (s3://bucket/prefix, file:///path or a folder). "
        "Without URL: --catalogue, $ANEMOI_CKPT_CATALOGUE, else the default folder.",
    )
    parser.add_argument("url", nargs="?", metavar="URL", help="where to create it")
    parser.add_argument("--catalogue", metavar="URL", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--protect", action="append", metavar="TAG", help="a tag clean never removes (repeatable; default production-ready)"
    )
    add_retention_options(parser, help_prefix="default retention: ")
    parser.add_argument("--exist-ok", action="store_true", help="succeed if a catalogue is already there")


def run(args: argparse.Namespace) -> int:
    from anemoi_ckpt_nb.api import Catalogue, default_url
    from anemoi_ckpt_nb.catalogue.schema import RetentionPolicy

    url = args.url or catalogue_url(args) or default_url()
    catalogue = Catalogue.create(
        url,
        protected_tags=args.protect,
        retention=RetentionPolicy(keep_last=args.keep_last, older_than_days=args.older_than),
        exist_ok=args.exist_ok,
    )
    print(f"catalogue ready at {catalogue.url} (protected tags: {', '.join(catalogue.protected_tags) or 'none'})")
    return 0
