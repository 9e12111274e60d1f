"""Time and peak memory of ``load_model`` against ``torch.load`` of anemoi-training's pickled model, same run.

Run it with the python of an environment holding the real anemoi packages (anemoi-models,
torch-geometric; ``.ci/anemoi-env.sh``) and this checkout on ``PYTHONPATH``::

    PYTHONPATH=. .venv-anemoi/bin/python benchmarks/load_model.py
    PYTHONPATH=. python benchmarks/load_model.py --run tests/data/real/current/gnn/run/<id> --repeat 7
    PYTHONPATH=. python benchmarks/load_model.py --scale 1024 --scale 2048   # larger gnn models instead

For each run folder it converts ``last.ckpt`` (``anemoi`` and ``safetensors``) and measures, each
load in a fresh child process (so nothing is cached in the interpreter and the peak is that of one
load): the baseline ``torch.load(inference-last.ckpt, weights_only=False)`` as anemoi-inference's
default runner does it, and ``load_model`` of the two converted files (their weights mapped, the
default), of the safetensors file with ``mmap=False`` (weights read into memory) and of the pickled
file (read into memory, the default for anemoi-training's files). The files are in the page cache
(just written or read), as for a model loaded again.
The cases take turns, one load of each per round. It prints the median wall time, the CPU time
of the load (less sensitive to other programs on shared cores) and the peak resident memory added
by the load (the kernel's high-water mark ``VmHWM``, reset just before the load, minus the size
then; Linux), and their ratios to the baseline (< 1: faster, leaner). What each timed region imports
is said at ``CHILD``: the same model modules for both, and load_model's own code. Then
every weight is used once (summed), and the CPU time of load and use and the peak after it are
given too: a model whose weights stay in the file's memory map (``load_model`` of a converted
file) reads their pages when first used, not at load, and they count in its memory from then on.
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

# The peak is the kernel's VmHWM, reset to the current size just before the load (clear_refs 5):
# ru_maxrss would carry the parent's size at fork across exec, and hide a small load's peak.
# Imported before the timed region: what both loads need first (torch, the model interface the pickle
# names first, torch-geometric's graph) and this package's top (lazy: it imports nothing of the loader).
# Timed: the model's other modules (layers, scipy.sparse, ...; imported by both: the unpickler as the
# pickle names them, load_model as it builds), and for load_model its own loader and reader.
CHILD = r"""
import json, sys, time
import torch, anemoi.models.interface, torch_geometric.data
import anemoi_ckpt_nb
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))
how, path = sys.argv[1], sys.argv[2]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
start, cpu = time.perf_counter(), time.process_time()
if how == "torch.load":
    model = torch.load(path, weights_only=False, map_location="cpu")
else:
    from anemoi_ckpt_nb import load_model
    model = load_model(path, mmap=False) if how == "load_model, copied" else load_model(path)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
peak = status("VmHWM") - before
# First use: every weight read once (a mapped weight's pages come from the page cache now).
start, use_cpu = time.perf_counter(), time.process_time()
with torch.no_grad():
    total = sum(float(parameter.sum()) for parameter in model.parameters())
use_seconds, use_cpu = time.perf_counter() - start, time.process_time() - use_cpu
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_kib": peak, "use_seconds": use_seconds, "use_cpu": use_cpu,
                  "used_peak_kib": status("VmHWM") - before}))
"""


def load_once(how: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, how, str(path)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{how} {path}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(cases: list[tuple[str, str, Path]], repeat: int) -> dict[str, dict]:
    """Medians per case; the cases take turns (one load of each per round), so a machine whose load
    changes during the run (shared cores) weighs on every case alike."""
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in cases}
    for _ in range(repeat):
        for name, how, path in cases:
            runs[name].append(load_once(how, path))
    keys = ("seconds", "cpu", "peak_kib", "use_seconds", "use_cpu", "used_peak_kib")
    return {name: {key: statistics.median(r[key] for r in results) for key in keys} for name, results in runs.items()}


def scaled_run(folder: Path, channels: int) -> Path:
    """A run folder holding only ``inference-last.ckpt``: the gnn fixture's model with ``channels``
    channels (untrained weights), built by anemoi-models and pickled as anemoi-training's callback does.

    The real fixtures are tiny (8 channels, ~9k parameters): there building the model costs more
    than its weights. This shows how the loads grow with the weights.
    """
    import copy
    import zipfile

    import torch

    from anemoi_ckpt_nb.conversion import loader
    from anemoi_ckpt_nb.conversion.pickled import _clear_imputer_state
    from anemoi_ckpt_nb.read.embedded import write_embedded
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    source = next(run for run in RUNS if run.parent.parent.name == "gnn") / "last.ckpt"
    with open_checkpoint(source) as checkpoint:
        plan = loader._plan(checkpoint, source)
        metadata = copy.deepcopy(plan.metadata)
        model_config = metadata["config"]["model"]
        for section in (model_config["processor"], *(c["mapper"] for key in ("encoders", "decoders") for c in model_config[key].values())):
            section["num_channels"] = channels
        plan.metadata = metadata
        model = loader._construct(plan, plan.inputs.arrays.__getitem__, __import__("contextlib").nullcontext())
    arrays = model.supporting_arrays
    model.config = model.metadata = model.supporting_arrays = None
    _clear_imputer_state(model)
    run = folder / f"gnn-{channels}-channels"
    run.mkdir()
    pickled = run / "inference-last.ckpt"
    torch.save(model, pickled)
    with zipfile.ZipFile(pickled, "a") as archive:
        write_embedded(archive, pickled.stem, metadata, arrays)
    return run


def ratio(value: float, base: float) -> str:
    return f"{value / base:5.2f}" if base else "  nan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", type=Path, help="run folders (default: the real fixtures' runs)")
    parser.add_argument("--repeat", type=int, default=5, help="loads per case, each in a new process (median)")
    parser.add_argument("--scale", type=int, action="append", metavar="CHANNELS",
                        help="a gnn of CHANNELS channels built from the fixture's config (untrained; see scaled_run), "
                        "instead of the fixtures unless --run is given too")
    args = parser.parse_args()
    from anemoi_ckpt_nb.conversion.convert import convert

    scratch = tempfile.TemporaryDirectory()
    runs = (args.run or ([] if args.scale else RUNS)) + [scaled_run(Path(scratch.name), channels) for channels in args.scale or []]
    for run in runs:
        with tempfile.TemporaryDirectory() as folder:
            # a scaled run has no training file: its pickled model is converted (the converter reads those too)
            source = run / "last.ckpt" if (run / "last.ckpt").exists() else run / "inference-last.ckpt"
            files = {f"load_model ({fmt})": convert(source, Path(folder), format=fmt).destination
                     for fmt in ("anemoi", "safetensors")}
            pickled = run / "inference-last.ckpt"
            cases = [("torch.load (baseline)", "torch.load", pickled), ("load_model (pickled file)", "load_model", pickled)]
            cases += [(name, "load_model", path) for name, path in files.items()]
            cases.append(("load_model (safetensors, mmap=False)", "load_model, copied", files["load_model (safetensors)"]))
            results = measure(cases, args.repeat)
        base = results["torch.load (baseline)"]
        print(f"{run.relative_to(ROOT) if run.is_relative_to(ROOT) else run.name} ({pickled.stat().st_size / 1e3:.0f} kB pickled), "
              f"median of {args.repeat}, torch {__import__('torch').__version__}")
        for name, result in results.items():
            then_cpu, base_then_cpu = result["cpu"] + result["use_cpu"], base["cpu"] + base["use_cpu"]
            print(f"  {name:36s} {result['seconds'] * 1e3:8.1f} ms x{result['seconds'] / base['seconds']:5.2f}  "
                  f"cpu {result['cpu'] * 1e3:7.1f} ms x{result['cpu'] / base['cpu']:5.2f}  "
                  f"peak +{result['peak_kib'] / 1024:7.1f} MiB x{ratio(result['peak_kib'], base['peak_kib'])}  | "
                  f"then every weight used once: cpu {then_cpu * 1e3:7.1f} ms x{then_cpu / base_then_cpu:5.2f}  "
                  f"peak +{result['used_peak_kib'] / 1024:7.1f} MiB x{ratio(result['used_peak_kib'], base['used_peak_kib'])}")

    scratch.cleanup()


if __name__ == "__main__":
    main()
