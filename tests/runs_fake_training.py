"""Stands in for ``anemoi-training train`` in the fork/resume tests.

Called as ``python runs_fake_training.py --output DIR [--checkpoints N] key=value ...``
with the Hydra overrides a run plan prints. Like anemoi-training it finds the
checkpoint to start from (``system.input.warm_start``, or
``<hardware.paths.checkpoints>/<fork_run_id or run_id>/<hardware.files.warm_start>``),
reads its metadata, and writes the new session's checkpoints with
``parent_uuid`` set to that checkpoint's pickled uuid (none when it loads only
the weights, as anemoi-training 0.17 does): a resume keeps the run id and
continues the epochs, a fork takes ``training.run_id`` (or a fresh one) and
records ``fork_run_id``. It writes ``DIR/standin.json`` describing what it did.

With ``$ANEMOI_CKPT_SPOOL`` set (as the plan script's step 2 sets it) it leaves in that spool what
``anemoi_ckpt_nb.training.RegisterCheckpoints`` would (that callback is tested with the real
anemoi-training in test_training_callback.py). ``--fail`` exits with status 3 after saving.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import types
import zipfile
from pathlib import Path


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--fail", action="store_true")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for item in rest:
        key, _, value = item.partition("=")
        overrides[key] = None if value == "null" else hydra_unquote(value)
    return args, overrides


def hydra_unquote(value: str) -> str:
    """A single-quoted override value as Hydra, then OmegaConf, read it."""
    if len(value) < 2 or value[0] != "'" or value[-1] != "'":
        return value
    text = value[1:-1]
    # Hydra: backslashes escape only before a quote or the closing quote; OmegaConf: before "${".
    text = re.sub(r"(\\+)('|$)", lambda m: m[1][: len(m[1]) // 2] + m[2], text)
    return re.sub(r"(\\+)(\$\{)", lambda m: m[1][: len(m[1]) // 2] + m[2], text)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    from anemoi_ckpt_nb import examples
    from anemoi_ckpt_nb.read.embedded import read_embedded

    run_id = overrides.get("training.run_id")
    fork_run_id = overrides.get("training.fork_run_id")
    if overrides.get("system.input.warm_start"):
        start = Path(overrides["system.input.warm_start"])
    else:
        root = Path(overrides["hardware.paths.checkpoints"])
        start = root / (fork_run_id or run_id) / overrides["hardware.files.warm_start"]
    if not start.is_file():  # anemoi-training raises here too
        raise FileNotFoundError(f"Warm start checkpoint not found: {start}")
    with zipfile.ZipFile(start) as zf:
        metadata = read_embedded(zf).metadata
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    with open_checkpoint(start) as ck:
        lineage_uuid = ck.uuid  # hyper_parameters["metadata"]["uuid"], what ParentUUIDCallback reads
    # A weights-only start (load_from_checkpoint) never runs ParentUUIDCallback: no parent_uuid.
    weights_only = overrides.get("training.load_weights_only") == "true"
    parent = types.SimpleNamespace(
        uuid=None if weights_only else lineage_uuid, run_id=metadata["run_id"], epoch=metadata["training"]["epoch"]
    )
    relation = "fork" if fork_run_id else "resume"
    written = examples.write_run(
        args.output,
        checkpoints=args.checkpoints,
        run_id=run_id,
        start_from=parent,
        relation=relation,
        weights_bytes=50_000,
        seed=7,
    )
    report = {
        "relation": relation,
        "started_from": str(start),
        "parent_uuid": parent.uuid,
        "started_from_uuid": lineage_uuid,
        "run_id": written[0].run_id,
        "uuids": [c.uuid for c in written],
        "paths": [str(c.path) for c in written],
        "offline": os.environ.get("ANEMOI_CKPT_OFFLINE"),
        "load_weights_only": overrides.get("training.load_weights_only"),
        "host": socket.gethostname(),
    }
    if os.environ.get("ANEMOI_CKPT_SPOOL"):
        capture_like_the_callback(Path(os.environ["ANEMOI_CKPT_SPOOL"]), start, written, weights_only=weights_only)
        report["spool"] = os.environ["ANEMOI_CKPT_SPOOL"]
    Path(args.output, "standin.json").write_text(json.dumps(report, indent=2))
    return 3 if args.fail else 0


def capture_like_the_callback(folder: Path, start: Path, written: list, *, weights_only: bool) -> None:
    """The file the session started from, then each saved file; a weights-only fork's files name the first."""
    from anemoi_ckpt_nb.runs.capture import prepare
    from anemoi_ckpt_nb.runs.spool import Spool

    spool = Spool(folder)
    started = prepare(spool, start).finish(role="start")
    parents = [{"entry": started.key, "relation": "forked-from"}] if weights_only else []
    for checkpoint in written:
        prepare(spool, checkpoint.path).finish(run_id=checkpoint.run_id, parents=parents)


if __name__ == "__main__":
    sys.exit(main())
