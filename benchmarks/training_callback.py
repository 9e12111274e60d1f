"""Benchmark: the training callback's overhead on real anemoi-training, as ratios to the same run without it.

Trains the tiny configuration of ``tests/real_fixtures`` (larger with ``--channels``) with the
real ``anemoi-training train`` of an anemoi-training environment (``--python``, default
``$ANEMOI_CKPT_TRAINING_ENV``), alternately without and with ``RegisterCheckpoints``, ``--rounds``
times (``--control``: the run without it twice, to see the noise). Only the callback differs between
the runs: the same config but for its entry, the same seeds, the same data, the same environment.
A timing callback (``_step_timer.py``, listed first, so it runs before ours in each hook) records,
in every run:

* **step time**: for each epoch after a save (each carries the worker threads' work for that
  save), its training time over its batches; the run's figure is the median over those epochs:
  a stall of the data loader or the machine (an interval of 0.3 s or more between two batches,
  counted as ``stalled epochs``, in runs without the callback as often as with it) moves it only
  if it strikes half of them. Goal: under 2% more.
* **save time**: from the end of validation (the checkpoint callbacks save after it: Lightning
  runs them last) to the start of the next epoch: the save, and the callback's capture of it (at
  the epoch's end: anemoi-training saves at the end of validation). Goal: the save not blocked
  by the copies (ratio near 1).
* **the callback's hooks, timed from the inside** (``_timed_callback.py``, the shipped class with
  each hook between two clock reads): what the training thread spends at the hook that captures
  a save's files, and at each other hook.

Per round the ratios with / without (and control / without) of the runs' figures; then their
median and range, and the ratio of the fastest and of the median epoch over all rounds pooled.
Usage::

    python benchmarks/training_callback.py --rounds 8 --control
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
#: An interval between two batches this long is a stall (the machine, the data loader): counted, not removed.
STALL = 0.3


def config(channels: int, with_callback: bool) -> str:
    text = (FIXTURES / "tiny_current.yaml").read_text()
    callbacks = "  callbacks:\n  - _target_: _step_timer.StepTimer\n    out: ${oc.env:RF_TIMES}\n"
    if with_callback:
        # The shipped callback, its hooks timed from the inside (_timed_callback.py).
        callbacks += ("  - _target_: _timed_callback.TimedRegisterCheckpoints\n    spool: ${oc.env:RF_SPOOL}\n"
                      "    out: ${oc.env:RF_HOOKS}\n")
    text = text.replace("diagnostics:\n  plot:", "diagnostics:\n" + callbacks + "  plot:", 1)
    return text.replace("model:\n  num_channels: 8", f"model:\n  num_channels: {channels}", 1)


def train(python: Path, work: Path, name: str, *, channels: int, with_callback: bool, epochs: int, batches: int) -> dict:
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "bench.yaml").write_text(config(channels, with_callback))
    env = {**os.environ, "RF_DATASET": str(DATASET), "RF_OUTPUT": str(folder / "out"), "RF_SPOOL": str(folder / "spool"),
           "RF_TIMES": str(folder / "times.json"), "RF_HOOKS": str(folder / "hooks.json"), "ANEMOI_BASE_SEED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    env.pop("ANEMOI_CKPT_CATALOGUE", None)  # the capture's cost, not a sync's: no catalogue, no child process
    command = [str(python.with_name("anemoi-training")), "train", "--config-name=bench", "model.bounding=[]",
               f"training.max_epochs={epochs}", f"dataloader.limit_batches.training={batches}"]
    log = folder / "train.log"
    with log.open("w") as fh:
        done = subprocess.run(command, cwd=folder, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"training failed, see {log}")
    times = json.loads((folder / "times.json").read_text())
    # Epochs after the first: each starts with the capture of the save before it (the first has none).
    after_save = [seconds / count for seconds, count, _ in times["epochs"][1:]]
    size = sum(p.stat().st_size for p in (folder / "out").rglob("last.ckpt"))
    spool = sorted((folder / "spool" / "entries").glob("*.json")) if with_callback else []
    methods = sorted({json.loads(p.read_text())["method"] for p in spool})
    row = {"epochs": after_save, "step": statistics.median(after_save), "save": statistics.median(times["saves"]),
           "stalled": sum(longest > STALL for _, _, longest in times["epochs"][1:]),
           "last_ckpt_bytes": size, "entries": len(spool), "methods": methods}
    if with_callback:
        row["hooks"] = hook_times(json.loads((folder / "hooks.json").read_text())["calls"])
    return row


def hook_times(calls: list) -> dict:
    """What the callback's hooks took on the training thread (``_timed_callback.py``)."""
    during = [c for c in calls if c[0] not in ("on_fit_start", "on_fit_end", "on_train_end")]
    capturing = [seconds for _, seconds, captured, _ in during if captured]
    others = [seconds for _, seconds, captured, _ in during if not captured]
    return {"per_capturing_hook": statistics.median(capturing) if capturing else 0.0,
            "capturing_hooks": len(capturing), "files": sum(c[2] for c in during),
            "per_other_hook": statistics.median(others) if others else 0.0,
            "others_total": sum(others), "waited": sum(c[3] for c in during), "training_total": sum(c[1] for c in during)}


def _ratios(rows: list[tuple[dict, dict]], what: str) -> tuple[float, float, float]:
    ratios = sorted(b[what] / a[what] for a, b in rows)
    return statistics.median(ratios), ratios[0], ratios[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", type=Path, default=os.environ.get("ANEMOI_CKPT_TRAINING_ENV"),
                        help="python of an anemoi-training environment (.ci/anemoi-env.sh PATH training)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--channels", type=int, default=64, help="model.num_channels (the fixtures use 8)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs a run: a save at the end of each")
    parser.add_argument("--batches", type=int, default=10, help="training batches an epoch (steps between two saves)")
    parser.add_argument("--control", action="store_true",
                        help="also run the configuration without the callback a second time each round: the ratio "
                        "of the two runs without it is the noise floor of the machine")
    args = parser.parse_args()
    if not args.python:
        raise SystemExit("name the anemoi-training environment: --python PATH or $ANEMOI_CKPT_TRAINING_ENV")
    work = Path(tempfile.mkdtemp(prefix="bench-callback-"))
    rows, controls = [], []
    names = ["without", "with", *(["control"] if args.control else [])]
    try:
        for round_ in range(args.rounds):
            # A later run of a round may find warmer caches or a quieter machine: the order rotates.
            shift = round_ % len(names)
            runs = {name: train(args.python, work, f"{round_}-{name}", channels=args.channels,
                                with_callback=name == "with", epochs=args.epochs, batches=args.batches)
                    for name in names[shift:] + names[:shift]}
            without, with_ = runs["without"], runs["with"]
            rows.append((without, with_))
            hooks = with_["hooks"]
            line = (f"round {round_ + 1} ({' '.join(names[shift:] + names[:shift])}): step {without['step'] * 1e3:.1f} "
                    f"ms -> {with_['step'] * 1e3:.1f} ms, save {without['save'] * 1e3:.1f} ms -> "
                    f"{with_['save'] * 1e3:.1f} ms, stalled epochs {without['stalled']} / {with_['stalled']}; "
                    f"{with_['entries']} captures ({', '.join(with_['methods'])}), the callback's hooks: "
                    f"{hooks['per_capturing_hook'] * 1e3:.2f} ms each of {hooks['capturing_hooks']} capturing "
                    f"{hooks['files']} files, {hooks['per_other_hook'] * 1e6:.0f} us the others, waited "
                    f"{hooks['waited'] * 1e3:.1f} ms")
            if args.control:
                controls.append((without, runs["control"]))
                line += (f"; control step {runs['control']['step'] * 1e3:.1f} ms, save "
                         f"{runs['control']['save'] * 1e3:.1f} ms, stalled {runs['control']['stalled']}")
            print(f"{line}; load average {os.getloadavg()[0]:.1f}", flush=True)
            shutil.rmtree(work / f"{round_}-with", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = rows[0][0]["last_ckpt_bytes"]
    result = {"last_ckpt_bytes": size, "rounds": len(rows), "epochs_after_a_save": args.epochs - 1}
    print(f"\nlast.ckpt {size / 1e6:.1f} MB, {len(rows)} rounds of {args.epochs - 1} epochs after a save each:")
    for label, pairs in (("with/without", rows), ("control/without", controls)):
        if pairs:
            (step, *step_range), (save, *save_range) = _ratios(pairs, "step"), _ratios(pairs, "save")
            pooled = {i: sorted(t for pair in pairs for t in pair[i]["epochs"]) for i in (0, 1)}
            low = pooled[1][0] / pooled[0][0]
            middle = statistics.median(pooled[1]) / statistics.median(pooled[0])
            print(f"  {label}: step time, median of the rounds' ratios {step:.3f} ({step_range[0]:.3f} to "
                  f"{step_range[1]:.3f}); all epochs pooled: fastest {low:.3f}, median {middle:.3f}; save time "
                  f"{save:.3f} ({save_range[0]:.3f} to {save_range[1]:.3f})")
            result[label] = {"step_ratio": step, "step_range": step_range, "pooled_fastest": low,
                             "pooled_median": middle, "save_ratio": save}
    hooks = [with_["hooks"] for _, with_ in rows]
    per_save = statistics.median(h["per_capturing_hook"] for h in hooks)
    per_batch = statistics.median(h["per_other_hook"] for h in hooks)
    print(f"  the callback on the training thread: {per_save * 1e3:.2f} ms at the hook after a save (median; "
          f"{rows[0][1]['hooks']['files'] / max(rows[0][1]['hooks']['capturing_hooks'], 1):.0f} files), "
          f"{per_batch * 1e6:.0f} us at each other hook")
    result["training_thread"] = {"per_save_s": per_save, "per_other_hook_s": per_batch}
    print("  goal: step time with/without under 1.02, the save not blocked (near 1)")
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
