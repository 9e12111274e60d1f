"""Benchmark: what each capture method of the training callback costs, as ratios to ``cp`` in the same run.

The callback captures a saved checkpoint into its spool with the first method the file system
allows (``anemoi_ckpt_nb.runs.capture``): ``reflink`` (a copy-on-write clone), ``link`` (a hard
link), else ``copy``. Each capture has two parts, timed apart:

* **training thread**: :func:`~anemoi_ckpt_nb.runs.capture.prepare`, taking hold of the file (a
  clone, a link, or only opening the file for a copy); the callback now does it on a worker
  thread, and the training thread waits for it only before the next save (``training_callback.py``
  measures that);
* **worker thread**: ``Capture.finish``, done while training goes on (for a copy: read, sha256,
  write, fsync; for all: the spool entry, written aside, fsynced and renamed into place).

The baseline is ``cp --reflink=never SRC DST`` followed by ``sync DST`` (the copy flushed to disk,
as the callback's copy is), run as a process in the same folder, in turn with the methods (the
order rotates from round to round). Each capture's time, both threads, is divided by the ``cp`` of
its own round (the load of a shared machine changes between rounds), and the median and range of
those ratios are printed. The source is written and fsynced first, then kept in the page cache, as
a checkpoint just saved is. A method the file system refuses (``reflink`` on ext4
or tmpfs, ``link`` across file systems) is reported as such. Usage::

    python benchmarks/capture_methods.py --dir /scratch/me --sizes 100MB 1GB --rounds 3
    python benchmarks/capture_methods.py --dir /mnt/xfs --dir /dev/shm --sizes 100MB
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anemoi_ckpt_nb.errors import SpoolError  # noqa: E402
from anemoi_ckpt_nb.runs.capture import METHODS, prepare  # noqa: E402
from anemoi_ckpt_nb.runs.spool import Spool  # noqa: E402

NAME = "anemoi-by_epoch-epoch_001-step_000010.ckpt"  # a name saved once (a hard link is allowed for it)
_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9}


def size_of(text: str) -> int:
    for unit, factor in _UNITS.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def write_source(path: Path, size: int) -> None:
    block = os.urandom(16 * 2**20)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())


def filesystem(folder: Path) -> str:
    done = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(folder)], capture_output=True, text=True)
    return (done.stdout.split() or ["?"])[0]


def time_cp(source: Path, work: Path) -> float:
    target = work / "cp" / source.name
    target.parent.mkdir(exist_ok=True)
    start = time.perf_counter()
    subprocess.run(["cp", "--reflink=never", str(source), str(target)], check=True)
    subprocess.run(["sync", str(target)], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target.parent)
    return elapsed


def time_method(source: Path, work: Path, method: str, round_: int) -> tuple[float, float] | None:
    """(training thread, worker thread) seconds of one capture; None if the file system refuses it."""
    spool = Spool(work / f"spool-{method}-{round_}")
    spool.ensure()
    start = time.perf_counter()
    try:
        capture = prepare(spool, source, methods=(method,))
    except SpoolError:
        shutil.rmtree(spool.path)
        return None
    held = time.perf_counter()
    entry = capture.finish(run_id="bench", session="bench", role="saved", tags=[], parents=[])
    done = time.perf_counter()
    assert entry.method == method and entry.size == source.stat().st_size
    shutil.rmtree(spool.path)
    return held - start, done - held


def bench(folder: Path, size: int, rounds: int) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="bench-capture-", dir=folder))
    try:
        (work / "run").mkdir()
        source = work / "run" / NAME
        write_source(source, size)
        cases = ["cp", *METHODS]
        times: dict[str, list] = {case: [] for case in cases}
        for round_ in range(rounds):
            shift = round_ % len(cases)
            for case in cases[shift:] + cases[:shift]:
                times[case].append(time_cp(source, work) if case == "cp" else time_method(source, work, case, round_))
        cp = statistics.median(times["cp"])
        lines = [f"| {filesystem(folder)} | {size / 1e6:,.0f} MB | `cp` + `sync` (baseline) | | {cp * 1e3:,.0f} ms | 1 |"]
        for method in METHODS:
            if any(t is None for t in times[method]):
                lines.append(f"| | | `{method}` | refused by this file system | | |")
                continue
            held = statistics.median(t[0] for t in times[method])
            worker = statistics.median(t[1] for t in times[method])
            # Each capture against the cp of its own round: the machine's load changes between rounds.
            ratios = sorted((t[0] + t[1]) / c for t, c in zip(times[method], times["cp"]))
            lines.append(f"| | | `{method}` | {held * 1e3:,.1f} ms | {worker * 1e3:,.1f} ms | "
                         f"{statistics.median(ratios):.3f} ({ratios[0]:.3f} to {ratios[-1]:.3f}) |")
        return lines
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, action="append", help="folder to measure in (repeatable; default: "
                        "the system's temporary folder): the run folder and the spool are made there")
    parser.add_argument("--sizes", nargs="+", default=["100MB", "1GB"], help="checkpoint sizes (default 100MB 1GB)")
    parser.add_argument("--rounds", type=int, default=3, help="captures of each size by each method (median)")
    args = parser.parse_args()
    print("| file system | size | method | training thread | worker thread | capture / cp (median, range) |")
    print("|---|---|---|---|---|---|")
    for folder in args.dir or [Path(tempfile.gettempdir())]:
        for size in args.sizes:
            for line in bench(folder, size_of(size), args.rounds):
                print(line, flush=True)


if __name__ == "__main__":
    main()
