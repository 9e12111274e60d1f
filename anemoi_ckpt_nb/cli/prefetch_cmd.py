"""``anemoi-ckpt prefetch ID --cache DIR``: download a registered checkpoint into a cache (login node)."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli import _runs_common as common
from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prefetch",
        help="download a registered checkpoint into a cache, verified and resumable (run on a login node)",
        description="Download the checkpoint's bytes from the catalogue to <cache>/<uuid>/, through a .part "
        "file that a new attempt resumes, verify the sha256 and rename it into place. Refuses when the disk "
        "has too little free space. Compute nodes then read it with ANEMOI_CKPT_OFFLINE=1.",
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix, name or file name of a registered checkpoint")
    add_catalogue_option(parser)
    common.add_cache_option(parser)
    parser.add_argument("--margin", type=int, metavar="BYTES", help="bytes to leave free beyond the file (default: 5%% of it, at least 64 MiB)")


def run(args: argparse.Namespace) -> int:
    checkpoint = open_catalogue(args).get(args.ref)
    with common.progress_bar(checkpoint.record.size, label=checkpoint.record.uuid[:8]) as update:
        entry = checkpoint.prefetch(cache=args.cache, margin=args.margin, progress=update)
    print(f"{entry.path}: {entry.size:,} bytes, sha256 {entry.sha256} verified")
    if entry.already_cached:
        print(f"already cached since {entry.fetched_at.isoformat(timespec='seconds')}; nothing downloaded")
    elif (entry.model_extra or {}).get("site"):  # which copy was used (anemoi_ckpt_nb.sites.fetch)
        print(f"fetched from site {entry.model_extra['site']} ({entry.model_extra.get('source_url')})")
    return 0
