"""Benchmark: the training callback's overhead on real anemoi-training, as ratios to the same run without it.

Trains the tiny configuration of ``tests/real_fixtures`` (larger with ``--channels``) with the
real ``anemoi-training train`` of an anemoi-training environment (``--python``, default
``$ANEMOI_CKPT_TRAINING_ENV``), alternately without and with ``RegisterCheckpoints``, ``--rounds``
times. A timing callback (``_step_timer.py``, listed first, so it runs before ours in each hook)
records, in both runs:

* **step time**: the interval between consecutive training batches inside an epoch (our
  ``on_train_batch_start`` poll and ``on_train_batch_end`` barrier are inside it). Goal: under 2%.
* **save time**: from the end of validation (just before Lightning's checkpoint callback saves,
  it runs last) to the next training batch: the save, the epoch's end and our capture of the
  files on the training thread (hard links; copies run on the worker). Goal: the save not
  blocked by the copy (ratio near 1).

The ratio of the medians (with / without) is taken round by round and its median reported, with
the callback's capture methods and what is left in the spool. Usage::

    python benchmarks/training_callback.py --rounds 3 --channels 64
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "tests" / "real_fixtures"
DATASET = ROOT / "tests" / "data" / "real" / "dataset" / "tiny.zarr"


def config(channels: int, with_callback: bool) -> str:
    text = (FIXTURES / "tiny_current.yaml").read_text()
    callbacks = "  callbacks:\n  - _target_: _step_timer.StepTimer\n    out: ${oc.env:RF_TIMES}\n"
    if with_callback:
        callbacks += "  - _target_: anemoi_ckpt_nb.training.RegisterCheckpoints\n    spool: ${oc.env:RF_SPOOL}\n"
    text = text.replace("diagnostics:\n  plot:", "diagnostics:\n" + callbacks + "  plot:", 1)
    return text.replace("model:\n  num_channels: 8", f"model:\n  num_channels: {channels}", 1)


def train(python: Path, work: Path, name: str, *, channels: int, with_callback: bool, epochs: int) -> dict:
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "bench.yaml").write_text(config(channels, with_callback))
    env = {**os.environ, "RF_DATASET": str(DATASET), "RF_OUTPUT": str(folder / "out"), "RF_SPOOL": str(folder / "spool"),
           "RF_TIMES": str(folder / "times.json"), "ANEMOI_BASE_SEED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    env.pop("ANEMOI_CKPT_CATALOGUE", None)  # the capture's cost, not a sync's: no catalogue, no child process
    command = [str(python.with_name("anemoi-training")), "train", "--config-name=bench", "model.bounding=[]",
               f"training.max_epochs={epochs}", "dataloader.limit_batches.training=10"]
    log = folder / "train.log"
    with log.open("w") as fh:
        done = subprocess.run(command, cwd=folder, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"training failed, see {log}")
    times = json.loads((folder / "times.json").read_text())
    size = sum(p.stat().st_size for p in (folder / "out").rglob("last.ckpt"))
    spool = sorted((folder / "spool" / "entries").glob("*.json")) if with_callback else []
    methods = sorted({json.loads(p.read_text())["method"] for p in spool})
    return {"step": statistics.median(times["steps"]), "save": statistics.median(times["saves"]),
            "last_ckpt_bytes": size, "entries": len(spool), "methods": methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", type=Path, default=os.environ.get("ANEMOI_CKPT_TRAINING_ENV"),
                        help="python of an anemoi-training environment (.ci/anemoi-env.sh PATH training)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--channels", type=int, default=64, help="model.num_channels (the fixtures use 8)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not args.python:
        raise SystemExit("name the anemoi-training environment: --python PATH or $ANEMOI_CKPT_TRAINING_ENV")
    work = Path(tempfile.mkdtemp(prefix="bench-callback-"))
    rows = []
    try:
        for round_ in range(args.rounds):
            # The second run of a round finds warmer caches: which goes first alternates.
            order = (False, True) if round_ % 2 == 0 else (True, False)
            runs = {flag: train(args.python, work, "with" if flag else "without", channels=args.channels,
                                with_callback=flag, epochs=args.epochs) for flag in order}
            without, with_ = runs[False], runs[True]
            rows.append((without, with_))
            print(f"round {round_ + 1}: step {without['step'] * 1e3:.1f} ms -> {with_['step'] * 1e3:.1f} ms, "
                  f"save {without['save'] * 1e3:.1f} ms -> {with_['save'] * 1e3:.1f} ms, "
                  f"{with_['entries']} captures ({', '.join(with_['methods'])})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step = statistics.median(w["step"] / o["step"] for o, w in rows)
    save = statistics.median(w["save"] / o["save"] for o, w in rows)
    size = rows[0][0]["last_ckpt_bytes"]
    print(f"\nlast.ckpt {size / 1e6:.1f} MB, {len(rows)} rounds: step time with/without {step:.3f} "
          f"(goal < 1.02), save time with/without {save:.3f}")
    json.dump({"step_ratio": step, "save_ratio": save, "last_ckpt_bytes": size, "rounds": len(rows)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
