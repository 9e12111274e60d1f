"""``anemoi-ckpt convert TRAINING.ckpt... -o DIR``: write inference checkpoints (weights + metadata only)."""

from __future__ import annotations

import argparse
import sys


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
        choices=("anemoi", "safetensors"),
        default="anemoi",
        help="anemoi: torch archive with embedded metadata, read by torch.load(weights_only=True) and "
        "anemoi-utils (default); safetensors: no pickle, metadata in the header",
    )
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="conversions at once (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input instead of text")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from anemoi_ckpt_nb.cli._errors import describe
    from anemoi_ckpt_nb.core.convert import convert_many
    from anemoi_ckpt_nb.core.reader import format_bytes

    notebook = tqdm.__module__.startswith("tqdm.notebook")
    bar = tqdm(
        total=0,
        unit="B",
        unit_scale=True,  # decimal kB/MB/GB, as sizes are shown everywhere else
        desc="convert",
        file=sys.stderr,
        leave=False,
        # Batch logs stay clean: a bar only on a terminal or in a notebook.
        disable=not (notebook or sys.stderr.isatty()),
    )

    def on_progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def on_outcome(outcome) -> None:
        if args.json:
            return
        if outcome.ok:
            r = outcome.result
            line = (f"converted {r.source} -> {r.destination} ({r.tensors} tensors, {format_bytes(r.size)}, "
                    f"uuid {r.uuid}, {r.seconds:.1f} s)")
        else:
            text = describe(outcome.error)
            line = f"FAILED    {text if str(outcome.source) in text else f'{outcome.source}: {text}'}"
        bar.write(line, file=sys.stdout)

    try:
        outcomes = convert_many(
            args.sources,
            args.output,
            format=args.format,
            jobs=args.jobs,
            overwrite=args.overwrite,
            progress=on_progress,
            on_outcome=on_outcome,
        )
    finally:
        bar.close()
    if args.json:
        import json

        for outcome in outcomes:
            print(json.dumps(outcome.to_dict()))
    return 0 if all(outcome.ok for outcome in outcomes) else 1
