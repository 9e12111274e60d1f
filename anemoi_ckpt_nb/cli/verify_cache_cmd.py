"""``anemoi-ckpt verify-cache``: check a cached checkpoint (and the environment) offline, before training."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli import _runs_common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify-cache",
        help="check a cached checkpoint against its run manifest or cache entry; reads only local files",
        description="With --manifest: check that the cached checkpoint the run manifest names is there, whole "
        "and unchanged (size and sha256), and that the environment's code versions still satisfy the manifest. "
        "With UUID: check the cached file of that checkpoint uuid against <cache>/<uuid>/cache.json. Never uses "
        "the network, so it runs on offline compute nodes (ANEMOI_CKPT_OFFLINE=1).",
    )
    parser.add_argument("ref", nargs="?", metavar="UUID", help="uuid (or its first characters) of a cached checkpoint")
    parser.add_argument("--manifest", metavar="PATH", help="a run manifest written by `plan`, `fork` or `resume`")
    common.add_cache_option(parser)
    parser.add_argument("--code-path", metavar="DIR", help="the training-code checkout to check (default: the manifest's)")


def run(args: argparse.Namespace) -> int:
    from anemoi_ckpt_nb.errors import RunPlanError

    if bool(args.manifest) == bool(args.ref):
        raise RunPlanError(
            "verify-cache", "give either --manifest PATH or a cached checkpoint UUID",
            hint="anemoi-ckpt verify-cache --manifest <cache>/<uuid>/runs/<manifest>.json",
        )
    if args.manifest:
        from anemoi_ckpt_nb.runs.plans import verify_run

        manifest, report = verify_run(args.manifest, code_path=args.code_path)
        common.print_differences(report.differences)
        print(f"{manifest.checkpoint.path}: sha256 {manifest.checkpoint.sha256} verified; "
              f"{manifest.mode} of {manifest.parent.uuid} may start ({len(report.blocking)} blocking, "
              f"{len(report.warnings)} warning difference(s))")
        return 0
    from anemoi_ckpt_nb.runs.cache import default_cache_dir, verify_entry

    entry = verify_entry(args.cache or default_cache_dir(), args.ref)
    print(f"{entry.path}: {entry.size:,} bytes, sha256 {entry.sha256} verified")
    return 0
