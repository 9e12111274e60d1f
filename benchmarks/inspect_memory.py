"""Benchmark: peak memory of ``anemoi-ckpt inspect`` on a large training checkpoint.

Writes a training checkpoint of about 1 GB (``--weights`` bytes of weights,
twice that again of Adam state) with ``examples.write_training_checkpoint``,
then runs each variant in its own process and reports the child's peak
resident memory (``ru_maxrss`` from ``wait4``) against the file size:

* ``import torch``: the floor every variant pays (torch and its libraries);
* ``inspect``: ``anemoi-ckpt inspect --json FILE``, the real command;
* ``torch.load``: what a user writes today (the anemoi classes made available
  again so it can run at all), reading every tensor into memory;
* ``torch.load mmap``: the same with ``mmap=True``, for comparison.

Peak memory is dominated by torch itself, so the report also gives each
variant's peak above the ``import torch`` floor. The page cache is not
dropped: inspect maps the file and touches only the pickle and the metadata,
so a warm cache does not change its resident set.

Usage::

    python benchmarks/inspect_memory.py                 # about 1 GB
    python benchmarks/inspect_memory.py --weights 50MB  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "anemoi-ckpt"

VARIANTS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "inspect": [str(SCRIPT), "inspect", "--json", "{path}"],
    "torch.load": [
        sys.executable,
        "-c",
        "import sys, torch\n"
        "from anemoi_ckpt_nb import examples\n"
        "with examples._throwaway_modules():\n"
        "    torch.load(sys.argv[1], weights_only=False, map_location='cpu')\n",
        "{path}",
    ],
    "torch.load mmap": [
        sys.executable,
        "-c",
        "import sys, torch\n"
        "from anemoi_ckpt_nb import examples\n"
        "with examples._throwaway_modules():\n"
        "    torch.load(sys.argv[1], weights_only=False, map_location='cpu', mmap=True)\n",
        "{path}",
    ],
}


def parse_size(text: str) -> int:
    units = {"GB": 10**9, "MB": 10**6, "KB": 10**3, "G": 10**9, "M": 10**6, "K": 10**3}
    for suffix, factor in units.items():
        if text.upper().endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def run_measured(command: list[str]) -> tuple[int, str]:
    """Run ``command`` and return its peak RSS in bytes (Linux ``ru_maxrss`` is in KiB) and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{command[:3]} failed: {err.read().strip()[-500:]}")
        return usage.ru_maxrss * 1024, out.read()


def write_checkpoint(path: Path, weights: int) -> None:
    # In a child, so that writing (which holds every tensor) does not inflate this process.
    code = (
        "import sys\n"
        "from anemoi_ckpt_nb import examples\n"
        "examples.write_training_checkpoint(sys.argv[1], weights_bytes=int(sys.argv[2]))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(weights)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="400MB", help="bytes of weights (Adam state adds twice that); default 400MB, about 1 GB in all")
    parser.add_argument("--dir", default=None, help="where to write the checkpoint (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "large.ckpt"
        write_checkpoint(path, parse_size(args.weights))
        size = path.stat().st_size
        results = {}
        for name, template in VARIANTS.items():
            command = [part.replace("{path}", str(path)) for part in template]
            peak, stdout = run_measured(command)
            results[name] = peak
            if name == "inspect":
                summary = json.loads(stdout)
                assert summary["sizes"]["total"] == size

    floor = results["import torch"]
    rows = {
        name: {
            "peak_bytes": peak,
            "peak_over_file": round(peak / size, 3),
            "above_import_bytes": peak - floor,
            "above_import_over_file": round((peak - floor) / size, 3),
        }
        for name, peak in results.items()
    }
    if args.json:
        print(json.dumps({"file_bytes": size, "variants": rows}, indent=2))
        return 0
    print(f"checkpoint: {size / 1e9:.2f} GB ({parse_size(args.weights) / 1e6:.0f} MB of weights + Adam state)")
    print(f"{'variant':<18}{'peak RSS':>12}{'peak/file':>11}{'above torch':>14}{'above/file':>12}")
    for name, row in rows.items():
        print(
            f"{name:<18}{row['peak_bytes'] / 1e6:>9.0f} MB{row['peak_over_file']:>11.3f}"
            f"{row['above_import_bytes'] / 1e6:>11.0f} MB{row['above_import_over_file']:>12.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
