"""What run manifests cost a registration, before and after the per-catalogue cache of what they say.

A training file without a parent asks the run manifests whether its run is a weights-only fork
(:mod:`anemoi_ckpt_nb.catalogue.forks`). Grows one local catalogue to each number of manifests
(default 1,000 and 10,000) and measures, in the same run, registering one small checkpoint per call
(a training callback or ``sync`` does that):

* ``register, first call``: a new ``Catalogue`` object, so every manifest is read (the baseline:
  what every call cost before the cache);
* ``register, later calls``: the same object again, which lists ``manifests/`` and reads none.

Run::

    python benchmarks/fork_manifests.py
    python benchmarks/fork_manifests.py --sizes 2000 --dir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid as _uuid
from pathlib import Path

REPEATS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary folder, in /dev/shm if present)")
    args = parser.parse_args(argv)

    from anemoi_ckpt_nb import examples
    from anemoi_ckpt_nb.api import Catalogue
    from anemoi_ckpt_nb.catalogue import layout

    base = args.dir or Path(tempfile.mkdtemp(prefix="ckpt-forks-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    url = base / "catalogue"
    Catalogue.create(url)
    storage = Catalogue(url).store.storage
    files = iter(range(10**6))

    def new_file() -> Path:
        i = next(files)
        return examples.write_training_checkpoint(base / "files" / f"{i}.ckpt", weights_bytes=20_000, seed=i).path

    written = 0
    print(f"{'manifests':>10}  {'first call':>12}  {'later calls':>12}  {'first / later':>13}")
    for size in sorted(args.sizes):
        for i in range(written, size):
            document = {"mode": "resume", "run_id": _uuid.uuid4().hex, "created_at": f"2026-01-01T00:00:00.{i:06d}Z"}
            storage.put(f"{layout.MANIFESTS}{_uuid.uuid4()}.json", json.dumps(document).encode())
        written = size
        first, later = [], []
        for _ in range(REPEATS):
            catalogue = Catalogue(url)
            path = new_file()
            start = time.perf_counter()
            catalogue.register(path)
            first.append(time.perf_counter() - start)
            path = new_file()
            start = time.perf_counter()
            catalogue.register(path)
            later.append(time.perf_counter() - start)
        a, b = statistics.median(first), statistics.median(later)
        print(f"{size:>10,}  {a * 1e3:>10.1f} ms  {b * 1e3:>10.1f} ms  {a / b:>13.1f}")
    print(f"catalogue in {url}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
