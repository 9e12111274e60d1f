"""``anemoi-ckpt inspect PATH... [--json]``: what a checkpoint file holds, read safely."""

from __future__ import annotations

import argparse

#: Statuses besides those every command returns (listed in the command reference).
EXIT_STATUS = {2: "at least one file could not be read (its line on stderr); the others were reported"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise checkpoint files (kind, uuid, run, sizes, metadata) without running code from them",
        description="Read each checkpoint with the restricted unpickler (no code from the file runs, weights are "
        "memory-mapped) and print its kind, uuid, run, parent, parameter count, sizes split into weights, "
        "optimizer state and other, metadata version, dataset, which runner runs it (runs with) and the classes it "
        "names that were not rebuilt. "
        "A file that cannot be read gives one line on stderr; the others are still reported.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="training, inference, state-dict or safetensors files")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file (JSON lines)")


def run(args: argparse.Namespace) -> int:
    import json

    from anemoi_ckpt_nb.cli._errors import report
    from anemoi_ckpt_nb.read.reader import open_checkpoint
    from anemoi_ckpt_nb.read.summary import summary_text

    status = 0
    for number, path in enumerate(args.paths):
        try:
            with open_checkpoint(path) as checkpoint:
                summary = checkpoint.summary()
        except Exception as error:  # one line per bad file; the others are still reported
            status = max(status, report(error))
            continue
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            print(("\n" if number else "") + summary_text(summary), flush=True)
    return status
