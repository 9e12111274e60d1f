"""Time and peak memory of ``load_model`` against ``torch.load`` of anemoi-training's pickled model, same run.

Run it with the python of an environment holding the real anemoi packages (anemoi-models,
torch-geometric; ``.ci/anemoi-env.sh``) and this checkout on ``PYTHONPATH``::

    PYTHONPATH=. /work/venvs/ci-inference/bin/python benchmarks/load_model.py
    PYTHONPATH=. python benchmarks/load_model.py --run tests/data/real/current/gnn/run/<id> --repeat 7

For each run folder it converts ``last.ckpt`` (``anemoi`` and ``safetensors``) and measures, each
load in a fresh child process (so nothing is cached in the interpreter and the peak is that of one
load): the baseline ``torch.load(inference-last.ckpt, weights_only=False)`` as anemoi-inference's
default runner does it, and ``load_model`` of the two converted files and of the pickled file.
It prints the median wall time and the peak resident memory added by the load (``ru_maxrss``
after minus before, imports done before), and their ratios to the baseline (< 1: faster, leaner).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = sorted((ROOT / "tests" / "data" / "real" / "current").glob("*/run/*/"))

CHILD = r"""
import json, resource, sys, time
import torch, anemoi.models.interface, torch_geometric.data  # imports are not the load
from anemoi_ckpt_nb import load_model
how, path = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
model = torch.load(path, weights_only=False, map_location="cpu") if how == "torch.load" else load_model(path)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_kib": after - before}))
"""


def measure(how: str, path: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    runs = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", CHILD, how, str(path)], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{how} {path}: {done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_kib": statistics.median(r["peak_kib"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", type=Path, help="run folders (default: the real fixtures' runs)")
    parser.add_argument("--repeat", type=int, default=5, help="loads per case, each in a new process (median)")
    args = parser.parse_args()
    from anemoi_ckpt_nb.conversion.convert import convert

    for run in args.run or RUNS:
        with tempfile.TemporaryDirectory() as folder:
            files = {f"load_model ({fmt})": convert(run / "last.ckpt", Path(folder), format=fmt).destination
                     for fmt in ("anemoi", "safetensors")}
            pickled = run / "inference-last.ckpt"
            cases = [("torch.load (baseline)", "torch.load", pickled), ("load_model (pickled file)", "load_model", pickled)]
            cases += [(name, "load_model", path) for name, path in files.items()]
            results = {name: measure(how, path, args.repeat) for name, how, path in cases}
        base = results["torch.load (baseline)"]
        print(f"{run.relative_to(ROOT) if run.is_relative_to(ROOT) else run} ({pickled.stat().st_size / 1e3:.0f} kB pickled), "
              f"median of {args.repeat}, torch {__import__('torch').__version__}")
        for name, result in results.items():
            time_ratio = result["seconds"] / base["seconds"]
            memory_ratio = result["peak_kib"] / base["peak_kib"] if base["peak_kib"] else float("nan")
            print(f"  {name:28s} {result['seconds'] * 1e3:8.1f} ms  x{time_ratio:5.2f}   "
                  f"peak +{result['peak_kib'] / 1024:7.1f} MiB  x{memory_ratio:5.2f}")


if __name__ == "__main__":
    main()
