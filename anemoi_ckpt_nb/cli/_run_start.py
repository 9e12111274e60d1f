"""What ``fork`` and ``resume`` share: parse, call ``Checkpoint.fork``/``resume``, print."""

from __future__ import annotations

import argparse
import json
import shlex

from anemoi_ckpt_nb.cli import _runs_common as common
from anemoi_ckpt_nb.cli._catalogue import open_catalogue

DESCRIPTION = {
    "fork": "Start a new run from a registered checkpoint's weights: a new run id, training.fork_run_id set "
    "to the parent's run.",
    "resume": "Continue the run of a registered checkpoint: same run id, optimizer and loops restored.",
}


def add_parser(subparsers: argparse._SubParsersAction, mode: str) -> None:
    parser = subparsers.add_parser(
        mode,
        help=f"{mode} a registered checkpoint: check code versions, store a run manifest, print the overrides",
        description=DESCRIPTION[mode]
        + " Compares the environment with the checkpoint's code versions (refusing differences that matter "
        "unless --allow-drift), stores a run manifest in the catalogue and beside the cached checkpoint, "
        "downloads the checkpoint into the cache (unless --no-prefetch) and prints the anemoi-training "
        "overrides that start the run. For HPC batch jobs see `anemoi-ckpt plan`.",
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix, name or file name of a registered training checkpoint")
    common.add_run_options(parser)
    parser.add_argument("--no-prefetch", action="store_true", help="only write the manifest; fetch the file later with `anemoi-ckpt prefetch`")
    parser.add_argument("--train-command", default="anemoi-training train", metavar="CMD", help="shown before the overrides (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the run manifest as JSON instead")


def run(args: argparse.Namespace, mode: str) -> int:
    checkpoint = open_catalogue(args).get(args.ref)
    start = checkpoint.fork if mode == "fork" else checkpoint.resume
    bar = common.progress_bar(checkpoint.record.size, label=checkpoint.record.uuid[:8], show=not args.no_prefetch)
    with bar as update:
        manifest = start(
            cache=args.cache,
            prefetch=not args.no_prefetch,
            require_clean=args.require_clean,
            progress=update,
            **common.run_options(args),
        )
    if args.json:
        print(json.dumps(manifest.model_dump(mode="json"), indent=2))
        return 0
    common.print_drift(manifest)
    print(f"# {mode} of {manifest.parent.uuid}: run manifest {manifest.uuid}")
    print(f"#   stored in {manifest.catalogue.rstrip('/')}/manifests/{manifest.uuid}.json and {manifest.local_path}")
    print(f"#   run id {manifest.run_id or '(chosen by anemoi-training)'}; {manifest.training.layout} config layout "
          f"({manifest.training.layout_reason})")
    if manifest.training.stage_link:
        print(f"# first: ln -sfn {shlex.quote(manifest.checkpoint.path)} {shlex.quote(manifest.training.stage_link)}")
    print(" ".join([args.train_command, *(shlex.quote(o) for o in manifest.overrides)]))
    return 0
