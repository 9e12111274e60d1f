"""``anemoi-ckpt convert TRAINING.ckpt... -o DIR``: write inference checkpoints (weights + metadata only)."""

from __future__ import annotations

import argparse

#: Statuses besides those every command returns (listed in the command reference).
EXIT_STATUS = {1: "some inputs failed (each has its line on stderr); the others were converted"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert training checkpoints to inference checkpoints (weights and metadata only)",
        description="Write, for each training checkpoint, DIR/inference-<name>.ckpt (or .safetensors) holding "
        "the model weights under the names the inference model uses (the Lightning 'model.' prefix removed, "
        "as anemoi-training does) and the metadata, plus a <file>.json sidecar with that metadata, a new uuid "
        "and converted_from. The optimizer state is never loaded. Each output is verified before it is "
        "renamed into place. Exit status: 0 all converted, 1 some failed, 2 bad arguments.",
    )
    parser.add_argument("sources", nargs="+", metavar="TRAINING.ckpt", help="training checkpoints (paths or glob patterns)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the outputs (created if missing)")
    parser.add_argument(
        "--format",
        choices=("anemoi", "safetensors", "pickled"),
        default="anemoi",
        help="anemoi: torch archive with embedded metadata, read by torch.load(weights_only=True) and "
        "anemoi-utils (default); safetensors: no pickle, metadata in the header; pickled: the pickled model "
        "as anemoi-training writes inference-*.ckpt, which anemoi-inference's default runner loads "
        "(needs anemoi-models where it converts)",
    )
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="conversions at once (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input instead of text")


def run(args: argparse.Namespace) -> int:
    from anemoi_ckpt_nb.api.batch import convert_many

    report = convert_many(
        args.sources,
        args.output,
        format=args.format,
        jobs=args.jobs,
        overwrite=args.overwrite,
        echo=not args.json,  # one line per input as each finishes; --json prints them at the end
    )
    if args.json:
        import json

        for outcome in report:
            print(json.dumps(outcome.to_dict()))
    return 0 if report.ok else 1
