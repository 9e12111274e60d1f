"""Benchmark: converting a training checkpoint to an inference checkpoint.

Builds a training checkpoint (about ``--size`` bytes of weights plus Adam
state, twice that again) with ``examples.write_training_checkpoint``, then
runs each variant in its own process and reports its time and peak memory
(the child's ``ru_maxrss``, from ``wait4``):

* ``naive``: what a user writes today: ``torch.load`` of the whole file, then
  ``torch.save`` of the state dict (``model.`` stripped);
* ``ours, first time``: :func:`anemoi_ckpt_nb.conversion.convert.convert` as the CLI
  runs it on a file never hashed before: it also reads and hashes the whole
  source (weights *and* optimizer state) for ``converted_from.sha256``;
* ``ours, hash remembered``: the same on a file whose sha256 is remembered
  (``storage/hashing.py``: it was registered, converted or upgraded before);
* ``ours, hash known``: the same with ``source_sha256`` given, as
  ``Checkpoint.convert`` does for a registered checkpoint;
* ``sha256 of source``: reading and hashing the whole source file alone, the
  floor of the first-time conversion (shown for reference);
* ``copy``: a plain copy of as many bytes as the weights (the disk's limit);
* ``copy + fsync``: the same, flushed to disk as ours is before its rename
  (shown for reference; the targets are against the plain copy).

Times are measured inside each child, after its imports (torch alone takes
seconds to import), and the CPU time over the same span (user + system, all
threads) and the process wall time are shown beside them: on a machine whose cores are busy with
something else, the CPU time tells what the wall time cannot. The page
cache is dropped before every run when this process may do so (root), so
each variant reads from disk; otherwise the source is read once before each
run so that all run warm, and the report says which.

Usage::

    python benchmarks/convert.py --size small        # 50 MB of weights, seconds
    python benchmarks/convert.py                     # 1 GB of weights
    python benchmarks/convert.py --size 2GB --repeat 3 --dir /scratch/bench
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"small": 50_000_000, "default": 1_000_000_000}
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def parse_size(text: str) -> int:
    if text in SIZES:
        return SIZES[text]
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.upper().endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


# --- the children ---------------------------------------------------------------------


def child(variant: str, source: str, out: str, extra: str) -> None:
    """Run one variant and print its own timing as JSON (after imports)."""
    if variant == "hash":
        import anemoi_ckpt_nb.conversion.files as convert_files

        os.environ["ANEMOI_CKPT_HASH_CACHE"] = "off"
        started, cpu_started = time.perf_counter(), time.process_time()
        convert_files.SourceHash(Path(source)).result()
    elif variant in ("copy", "copy-fsync"):
        started, cpu_started = time.perf_counter(), time.process_time()
        remaining = int(extra)
        with open(source, "rb") as src, open(out, "wb") as dst:
            while remaining > 0:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), min(remaining, 1 << 30))
                if copied == 0:
                    break
                remaining -= copied
            if variant == "copy-fsync":
                os.fsync(dst.fileno())
    elif variant == "naive":
        import pickle
        import types

        import torch

        started, cpu_started = time.perf_counter(), time.process_time()
        # The training file names anemoi classes that are not installed here; a user who has
        # them installed pays for building them too. Stand-ins keep their state as attributes.
        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                try:
                    return super().find_class(module, name)
                except (ImportError, AttributeError):
                    return type(name, (), {"__setstate__": _keep_state, "__module__": module})

        lenient = types.ModuleType("lenient_pickle")
        lenient.Unpickler, lenient.load = Unpickler, pickle.load
        checkpoint = torch.load(source, map_location="cpu", weights_only=False, pickle_module=lenient)
        state = {name.removeprefix("model."): tensor for name, tensor in checkpoint["state_dict"].items() if name.startswith("model.")}
        torch.save(state, out)
    else:
        import torch  # noqa: F401  (imported before timing, as for the naive path)

        import anemoi_ckpt_nb.conversion.files  # noqa: F401
        import anemoi_ckpt_nb.conversion.writers  # noqa: F401
        import anemoi_ckpt_nb.read.reader  # noqa: F401
        from anemoi_ckpt_nb.conversion.convert import convert

        started, cpu_started = time.perf_counter(), time.process_time()
        convert(source, out, source_sha256=extra or None)
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu_started}))


def _keep_state(self, state):
    if isinstance(state, dict):
        self.__dict__.update(state)
    else:
        self.__dict__["state"] = state


def prepare(source: Path, weights_bytes: int) -> None:
    """Write the training checkpoint and print its sizes and sha256 as JSON."""
    from anemoi_ckpt_nb import examples
    from anemoi_ckpt_nb.storage.hashing import sha256_file
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    examples.write_training_checkpoint(source, weights_bytes=weights_bytes)
    with open_checkpoint(source) as ck:
        facts = {
            "total": ck.total_bytes,
            "weights": ck.weights_bytes,
            "optimizer": ck.optimizer_bytes,
            "largest": max(info.nbytes for info in ck.weights.values()),
        }
    facts["sha256"] = sha256_file(source)
    print(json.dumps(facts))


# --- the parent ------------------------------------------------------------------------


def drop_caches() -> bool:
    """Flush dirty pages and drop the page cache; False when not allowed (not root)."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def remember(source: Path, sha256: str | None) -> None:
    """Set (or with None, remove) the sha256 remembered for ``source``, as storage/hashing.py keeps it."""
    from anemoi_ckpt_nb.storage.hashing import XATTR

    if sha256 is None:
        try:
            os.removexattr(source, XATTR)
        except OSError:
            pass
        return
    st = source.stat()
    os.setxattr(source, XATTR, f"{st.st_size}:{st.st_mtime_ns}:{sha256}".encode())


def run(variant: str, source: Path, out: Path, extra: str, *, cold: bool) -> dict:
    """One measured run of ``variant`` in a fresh process."""
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    if variant.startswith("ours"):
        out.mkdir()
    if cold:
        drop_caches()
    else:
        warm(source)
    time.sleep(1)  # let the writeback and discards of the previous run settle
    name = "ours" if variant.startswith("ours") else variant
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", name, str(source), str(out), extra], stdout=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed with status {proc.returncode}")
    return {
        "seconds": json.loads(output.strip().splitlines()[-1])["seconds"],
        "wall": wall,
        "cpu": json.loads(output.strip().splitlines()[-1])["cpu"],
        "rss": usage.ru_maxrss * 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="default", help="weights bytes: small (50 MB), default (1 GB), or e.g. 2GB")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant (the median is reported)")
    parser.add_argument("--dir", help="work folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache; read the source before each run")
    parser.add_argument("--child", nargs=4, metavar=("VARIANT", "SOURCE", "OUT", "EXTRA"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", nargs=2, metavar=("SOURCE", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.prepare:
        prepare(Path(args.prepare[0]), int(args.prepare[1]))
        return 0

    weights_bytes = parse_size(args.size)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="convert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = work / "training.ckpt"
        print(f"writing a training checkpoint with {weights_bytes / 1e6:,.0f} MB of weights to {source} ...", flush=True)
        # In a child: this process must stay small, as its children inherit its peak RSS until exec.
        prepared = subprocess.run(
            [sys.executable, __file__, "--prepare", str(source), str(weights_bytes)],
            capture_output=True, text=True, check=True,
        )
        facts = json.loads(prepared.stdout.strip().splitlines()[-1])
        weights, known = facts["weights"], facts["sha256"]
        print(f"  file {facts['total'] / 1e6:,.0f} MB: weights {weights / 1e6:,.0f} MB, "
              f"optimizer {facts['optimizer'] / 1e6:,.0f} MB, largest tensor {facts['largest'] / 1e6:,.0f} MB")
        cold = not args.warm and drop_caches()
        print("  page cache dropped before every run (cold reads)" if cold else
              "  page cache kept: the source is read once before every run (warm reads)")

        try:
            remember(source, known)
        except OSError:
            print("  this file system keeps no extended attributes: the remembered-hash case is left out")
            remembered = False
        else:
            remembered = True
        variants = {
            "naive": ("naive", work / "naive.pt", ""),
            "ours, first time": ("ours-first", work / "ours", ""),
            "ours, hash remembered": ("ours-remembered", work / "ours", ""),
            "ours, hash known": ("ours-known", work / "ours", known),
            "sha256 of source": ("hash", work / "unused", ""),
            "copy": ("copy", work / "copy.bin", str(weights)),
            "copy + fsync": ("copy-fsync", work / "copy.bin", str(weights)),
        }
        if not remembered:
            del variants["ours, hash remembered"]
        # Round-robin, so that a slow spell of the machine does not fall on one variant only, in
        # a shuffled order each round, so that no variant always follows the same one (deleting the
        # previous output, on a file system mounted with `discard`, slows the next run's I/O).
        runs: dict[str, list[dict]] = {label: [] for label in variants}
        shuffle = random.Random(0).shuffle
        for _ in range(args.repeat):
            order = list(variants.items())
            shuffle(order)
            for label, (variant, out, extra) in order:
                if remembered:  # each case as its name says, whatever the previous run left
                    remember(source, known if variant == "ours-remembered" else None)
                runs[label].append(run(variant, source, out, extra, cold=cold))
        results: dict[str, dict] = {}
        for label, measured in runs.items():
            results[label] = r = {
                "seconds": statistics.median(m["seconds"] for m in measured),
                "wall": statistics.median(m["wall"] for m in measured),
                "cpu": statistics.median(m["cpu"] for m in measured),
                "rss": max(m["rss"] for m in measured),
            }
            print(
                f"  {label:<22} {r['seconds']:7.2f} s  (process {r['wall']:6.2f} s, CPU {r['cpu']:6.2f} s)"
                f"  peak RSS {r['rss'] / 1e6:8,.0f} MB",
                flush=True,
            )
        print()
        naive, copy = results["naive"], results["copy"]
        for label in ("ours, first time", "ours, hash remembered", "ours, hash known"):
            if label not in results:
                continue
            ours = results[label]
            speed = naive["seconds"] / ours["seconds"]
            memory = ours["rss"] / naive["rss"]
            versus_copy = ours["seconds"] / copy["seconds"]
            print(f"{label}: naive/ours time {speed:.1f}x (target >= 3x: {'met' if speed >= 3 else 'NOT met'}), "
                  f"ours/naive peak RSS {memory:.2f} (target <= 0.25: {'met' if memory <= 0.25 else 'NOT met'}), "
                  f"ours/copy time {versus_copy:.2f}x (target <= 1.5x: {'met' if versus_copy <= 1.5 else 'NOT met'})")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
