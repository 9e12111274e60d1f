"""How register, tag and search costs grow with the number of records in a catalogue.

Grows one local catalogue to each size in turn (default 1,000, 10,000 and
100,000 records), synthesising the records through the core API
(:func:`~anemoi_ckpt_nb.catalogue.register.import_records`) from a real
registered checkpoint, so no checkpoint file is written per record. At each
size it measures, in the same run:

* ``register``: registering one more real (small) checkpoint file: hash, read,
  upload, record, index delta (median of several);
* ``tag``: one tag change by compare-and-swap (median of several);
* ``search (cold)``: a new ``Catalogue`` object searching by tag: one snapshot
  read plus the waiting deltas;
* ``search (warm)``: the same object searching again (one LIST, one HEAD);
* ``get by uuid``: one record read, whatever the size;
* ``compaction``: merging the waiting deltas into a new snapshot;
* ``scan``: the baseline without an index: list ``records/`` and read every record.

It prints each cost and two ratios: against the same operation at the first
size, and the scan against the indexed search. Run::

    python benchmarks/catalogue_scale.py                 # 1k, 10k, 100k
    python benchmarks/catalogue_scale.py --sizes 1000 5000 --dir /tmp/bench

By default the catalogue lives under /dev/shm when it exists, so the figures
measure the software and not the disk's fsync latency (each create-only write
is fsynced by the local backend: add the disk's sync time per write).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid as _uuid
from collections.abc import Callable
from pathlib import Path

TAGGED_PER_STEP = 20
REPEATS = 5


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(fn: Callable[[int], object], n: int = REPEATS) -> float:
    return statistics.median(timed(lambda i=i: fn(i)) for i in range(n))


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary folder, in /dev/shm if present)")
    parser.add_argument("--no-scan", action="store_true", help="skip the read-every-record baseline")
    args = parser.parse_args(argv)

    from anemoi_ckpt_nb import examples
    from anemoi_ckpt_nb.api import Catalogue
    from anemoi_ckpt_nb.catalogue import index as index_module
    from anemoi_ckpt_nb.catalogue import layout
    from anemoi_ckpt_nb.catalogue.register import import_records
    from anemoi_ckpt_nb.catalogue.tags import change_tags
    from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord

    base = args.dir or Path(tempfile.mkdtemp(prefix="ckpt-scale-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    base.mkdir(parents=True, exist_ok=True)
    files = base / "files"
    catalogue = Catalogue.create(base / "catalogue")
    store = catalogue.store
    template = catalogue.register(examples.write_training_checkpoint(files / "template.ckpt", weights_bytes=20_000).path).record
    rng = random.Random(0)
    uuids: list[str] = [template.uuid]
    counter = 0

    def synthesise(count: int) -> None:
        nonlocal counter
        batch: list[CheckpointRecord] = []
        for _ in range(count):
            counter += 1
            run = counter // 50  # 50 checkpoints per run
            uuid = str(_uuid.UUID(int=rng.getrandbits(128), version=4))
            batch.append(template.model_copy(update={
                "uuid": uuid, "metadata_uuid": uuid, "run_id": f"run-{run:06d}",
                "global_step": 100 * (counter % 50), "epoch": counter % 50,
                "filename": f"anemoi-by_epoch-epoch_{counter % 50:03d}-step_{100 * (counter % 50):06d}.ckpt",
            }))
            uuids.append(uuid)
            if len(batch) == 5_000:
                import_records(store, batch)
                batch = []
        if batch:
            import_records(store, batch)
        index_module.compact(store.storage)

    rows: list[dict[str, float]] = []
    fresh_files = iter(range(10**6))
    print(f"catalogue in {base / 'catalogue'}", file=sys.stderr)
    for size in sorted(args.sizes):
        missing = size - len(uuids)
        if missing > 0:
            t = timed(lambda: synthesise(missing))
            print(f"synthesised {missing} records in {fmt(t)}", file=sys.stderr)
        for _ in range(TAGGED_PER_STEP):
            change_tags(store, rng.choice(uuids), add=["candidate"])
        index_module.compact(store.storage)
        n = len(Catalogue(catalogue.url))

        new_files = []
        for _ in range(REPEATS):
            i = next(fresh_files)
            new_files.append(examples.write_training_checkpoint(files / f"new-{i}.ckpt", weights_bytes=20_000, seed=i + 1).path)

        def register(i: int) -> None:
            catalogue.register(new_files[i])

        def cold_search(_: int) -> None:
            Catalogue(catalogue.url).search(tags=["candidate"])

        warm = Catalogue(catalogue.url)
        warm.search(tags=["candidate"])
        row = {
            "records": n,
            "register": median_of(register),
            "tag": median_of(lambda _: change_tags(store, rng.choice(uuids), add=[f"t{rng.randrange(10**6)}"])),
            "search (cold)": median_of(cold_search, 3),
            "search (warm)": median_of(lambda _: warm.search(tags=["candidate"])),
            "get by uuid": median_of(lambda _: catalogue.get(rng.choice(uuids))),
        }
        for i in range(index_module.COMPACT_EVERY):  # make sure there is something to merge
            change_tags(store, rng.choice(uuids), add=[f"c{i}"])
        row["compaction"] = timed(lambda: index_module.compact(store.storage))
        if not args.no_scan:
            def scan() -> int:
                found = 0
                for info in store.storage.list(layout.RECORDS):
                    uid = layout.uuid_of_key(info.key)
                    store.read_record(uid)
                    state, _ = store.read_tags(uid)
                    found += bool(state and "candidate" in state.tags)
                return found

            row["scan"] = timed(scan)
        rows.append(row)
        print(f"measured at {n} records", file=sys.stderr)

    first = rows[0]
    ops = [k for k in rows[0] if k != "records"]
    print(f"{'operation':<16}" + "".join(f"{r['records']:>14,} rec" for r in rows) + "   vs first size")
    for op in ops:
        cells = "".join(f"{fmt(r[op]):>18}" for r in rows)
        ratios = ", ".join(f"x{r[op] / first[op]:.1f}" for r in rows[1:])
        print(f"{op:<16}{cells}   {ratios}")
    if not args.no_scan:
        print("scan / indexed cold search: " + ", ".join(
            f"{r['records']:,}: x{r['scan'] / r['search (cold)']:.0f}" for r in rows))
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
