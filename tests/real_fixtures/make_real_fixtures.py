"""Write the real-anemoi fixtures in tests/data/real/ with the real packages (see README.md here).

Each stage runs the real command line tools of an anemoi venv (never this project's venv) and
copies each run folder exactly as anemoi-training laid it out (`<run id>/...`):

    python tests/real_fixtures/make_real_fixtures.py all --work /tmp/rf-work
    python tests/real_fixtures/make_real_fixtures.py current-gnn --work /tmp/rf-work   # one stage

Stages, in order (a later one reuses the work folder of an earlier one):
    dataset           synthetic netcdf -> `anemoi-datasets create` -> tiny.zarr (288 points, 40 dates)
    current-gnn       anemoi-training 0.17.1, model=gnn: run (2 epochs), resume (+1 epoch),
                      full-state fork, weights-only fork started from `anemoi-ckpt fork`'s output
    current-gt        anemoi-training 0.17.1, model=graphtransformer: run (1 epoch)
    early-gnn         anemoi-training 0.3.3 stack: run (2 epochs) and resume (+1 epoch)
    reference         reference/current/: input.npy and the predict_step output of each current inference file
    inference         reference/inference/<model>/: `anemoi-inference run` config + its forecast.nc
    manifest          tests/data/real/MANIFEST.json: every file, its sha256, size, run id and the
                      uuids it holds, read with torch.load and anemoi.utils.checkpoints.load_metadata

Training is seeded (ANEMOI_BASE_SEED) but not bit-reproducible across machines, and run ids and
uuids are random: regenerating replaces the fixtures and their MANIFEST.json together.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO / "tests" / "data" / "real"
CURRENT = Path(os.environ.get("ANEMOI_CURRENT_VENV", "/work/venvs/anemoi-current"))
EARLY = Path(os.environ.get("ANEMOI_EARLY_VENV", "/work/venvs/anemoi-2025"))
SEED = "1"
# model=gnn lists its bounding layers, model=graphtransformer keys them by dataset: no bounding in either
# (tp stays unbounded), set per model because the two shapes cannot be merged from one yaml.
GNN = ["model.bounding=[]"]
GT = ["model=graphtransformer", "model.bounding.datasets.data=[]", "model.compile=[]",
      *(f"{k}.num_heads=2" for k in ("model.processor", "model.encoders.0.mapper", "model.decoders.0.mapper"))]


def run(cmd: list[str], *, cwd: Path, env: dict | None = None, log: Path) -> None:
    print("+", " ".join(cmd), f"  (log {log})", flush=True)
    with log.open("a") as fh:
        fh.write("\n+ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")


def dataset(work: Path) -> Path:
    """tiny.zarr made by the real `anemoi-datasets create` from a netcdf and the forcings source."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "dataset.log"
    run([str(CURRENT / "bin/python"), str(HERE / "_in_venv.py"), "source", "source.nc"], cwd=work, log=log)
    shutil.copy(HERE / "recipe.yaml", work / "recipe.yaml")
    run([str(CURRENT / "bin/anemoi-datasets"), "create", "recipe.yaml", "tiny.zarr", "--overwrite"], cwd=work, log=log)
    dest = DATA / "dataset" / "tiny.zarr"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(work / "tiny.zarr", dest)
    shutil.copy(HERE / "recipe.yaml", DATA / "dataset" / "recipe.yaml")
    return work / "tiny.zarr"


def _runs(out: Path) -> set[str]:
    root = out / "checkpoint"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def train(venv: Path, config: str, out: Path, work: Path, overrides: list[str], *, log: Path) -> str:
    """One anemoi-training session; returns the run id (the folder it wrote or wrote into)."""
    before = {r: sorted(f.name for f in (out / "checkpoint" / r).iterdir()) for r in _runs(out)}
    env = {"RF_DATASET": str(work / "tiny.zarr"), "RF_OUTPUT": str(out), "ANEMOI_BASE_SEED": SEED,
           "HYDRA_FULL_ERROR": "1"}
    shutil.copy(HERE / config, work / config)
    run([str(venv / "bin/anemoi-training"), "train", f"--config-name={Path(config).stem}", *overrides],
        cwd=work, env=env, log=log)
    new = _runs(out) - set(before)
    if new:
        return new.pop()
    for r in overrides:
        if r.startswith("training.run_id="):
            return r.split("=", 1)[1]
    raise SystemExit("could not tell which run folder the session wrote")


def snapshot(out: Path, run_id: str, dest: Path) -> None:
    """Copy `<out>/checkpoint/<run id>/` to `<dest>/<run id>/` as it is on disk now."""
    target = dest / run_id
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copytree(out / "checkpoint" / run_id, target, copy_function=shutil.copy2)
    print(f"  -> {target.relative_to(REPO)}: {sorted(p.name for p in target.iterdir())}")


def current_gnn(work: Path) -> None:
    out = work / "current-gnn"
    log = work / "current-gnn.log"
    base = DATA / "current" / "gnn"
    shutil.rmtree(out, ignore_errors=True)
    run_id = train(CURRENT, "tiny_current.yaml", out, work, GNN, log=log)
    snapshot(out, run_id, base / "run")
    # Keep the parent of the forks before the resume overwrites last.ckpt.
    parent = base / "run" / run_id / "anemoi-by_epoch-epoch_001-step_000010.ckpt"
    train(CURRENT, "tiny_current.yaml", out, work, [*GNN, f"training.run_id={run_id}", "training.max_epochs=3"], log=log)
    snapshot(out, run_id, base / "resume")
    fork_id = train(CURRENT, "tiny_current.yaml", out, work,
                    [*GNN, f"training.fork_run_id={run_id}", f"system.input.warm_start={parent}", "training.max_epochs=3"],
                    log=log)
    snapshot(out, fork_id, base / "fork-full")
    weights_only_fork(work, out, parent, base / "fork-weights", log=log)


def weights_only_fork(work: Path, out: Path, parent: Path, dest: Path, *, log: Path) -> None:
    """Register the parent, let `anemoi-ckpt fork` print the overrides, and run exactly those."""
    cat = work / "catalogue"
    cache = work / "cache"
    shutil.rmtree(cat, ignore_errors=True)
    ckpt = str(CURRENT / "bin/anemoi-ckpt")
    run([ckpt, "init", str(cat)], cwd=work, log=log)
    run([ckpt, "register", "--catalogue", str(cat), str(parent)], cwd=work, log=log)
    facts = json.loads(subprocess.run([str(CURRENT / "bin/python"), str(HERE / "_in_venv.py"), "facts", str(parent)],
                                      check=True, capture_output=True, text=True).stdout)[str(parent)]
    parent_id = facts["embedded"]["uuid"]
    printed = subprocess.run([ckpt, "fork", parent_id, "--catalogue", str(cat), "--cache", str(cache),
                              "--train-command", "anemoi-training train --config-name=tiny_current"],
                             cwd=work, check=True, capture_output=True, text=True)
    (work / "fork-command.txt").write_text(printed.stdout)
    command = [line for line in printed.stdout.splitlines() if line.startswith("anemoi-training train")][-1]
    overrides = command.split()[3:]
    run_id = train(CURRENT, "tiny_current.yaml", out, work, [*GNN, *overrides, "training.max_epochs=1"], log=log)
    snapshot(out, run_id, dest)
    manifests = sorted((cat / "manifests").glob("*.json"))
    shutil.copy(manifests[-1], dest / "run-manifest.json")
    (dest / "fork-command.txt").write_text(printed.stdout)


def current_gt(work: Path) -> None:
    out = work / "current-gt"
    shutil.rmtree(out, ignore_errors=True)
    run_id = train(CURRENT, "tiny_current.yaml", out, work, [*GT, "training.max_epochs=1"], log=work / "current-gt.log")
    snapshot(out, run_id, DATA / "current" / "graphtransformer" / "run")


def early_gnn(work: Path) -> None:
    out = work / "early-gnn"
    log = work / "early-gnn.log"
    base = DATA / "early-2025" / "gnn"
    shutil.rmtree(out, ignore_errors=True)
    run_id = train(EARLY, "tiny_early.yaml", out, work, [], log=log)
    snapshot(out, run_id, base / "run")
    train(EARLY, "tiny_early.yaml", out, work, [f"training.run_id={run_id}", "training.max_epochs=3"], log=log)
    snapshot(out, run_id, base / "resume")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(work: Path) -> None:
    """MANIFEST.json: ground truth for tests, read with the real packages of the stack that wrote each file."""
    del work
    entries = []
    for stack, venv in (("current", CURRENT), ("early-2025", EARLY)):
        files = sorted((DATA / stack).glob("*/*/*/*.ckpt"))
        if not files:
            continue
        facts = json.loads(subprocess.run([str(venv / "bin/python"), str(HERE / "_in_venv.py"), "facts",
                                           *map(str, files)], check=True, capture_output=True, text=True).stdout)
        for f in files:
            model, session, run_id = f.relative_to(DATA / stack).parts[:3]
            entries.append({"path": str(f.relative_to(DATA)), "stack": stack, "model": model, "session": session,
                            "run_id": run_id, "size": f.stat().st_size, "sha256": sha256(f), **facts[str(f)]})
    doc = {"about": "Files written by the real anemoi packages (tests/real_fixtures/README.md). "
                    "pickled_uuid: hyper_parameters['metadata']['uuid'] (training) or the model's pickled "
                    "metadata (inference); embedded: the anemoi.json inside the zip (anemoi.utils.checkpoints.load_metadata).",
           "versions": versions(), "files": entries}
    (DATA / "MANIFEST.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"MANIFEST.json: {len(entries)} files")


def versions() -> dict:
    out = {}
    for stack, venv in (("current", CURRENT), ("early-2025", EARLY)):
        if not venv.exists():
            continue
        freeze = subprocess.run([str(venv / "bin/python"), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
        keep = ("anemoi-", "torch", "lightning", "pytorch-lightning", "torch-geometric", "torch_geometric", "numcodecs", "zarr")
        out[stack] = sorted(line for line in freeze.splitlines() if line.lower().startswith(keep) and "@" not in line)
    return out


def reference(work: Path) -> None:
    """reference/current/: predict_step of every current inference-*.ckpt on one dataset input (issue 13)."""
    del work
    files = sorted(str(f.relative_to(DATA)) for f in (DATA / "current").glob("*/*/*/inference-*.ckpt"))
    out = DATA / "reference" / "current"
    shutil.rmtree(out, ignore_errors=True)
    index = subprocess.run([str(CURRENT / "bin/python"), str(HERE / "_in_venv.py"), "reference", "dataset/tiny.zarr",
                            str(out.relative_to(DATA)), *files], cwd=DATA, check=True, capture_output=True, text=True)
    (out / "index.json").write_text(index.stdout)
    print(f"reference outputs: {len(files)} files in {out.relative_to(REPO)}")


def inference(work: Path) -> None:
    """reference/inference/<model>/: an `anemoi-inference run` config and the forecast it wrote.

    Paths in config.yaml are relative to tests/data/real/, where the run is started; the forecast
    starts 2020-01-08T18 from the dataset and runs 12 h (two model steps) to a netcdf file.
    """
    for model in ("gnn", "graphtransformer"):
        ckpt = sorted((DATA / "current" / model / "run").glob("*/inference-last.ckpt"))[0]
        out = DATA / "reference" / "inference" / model
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        rel = out.relative_to(DATA)
        (out / "config.yaml").write_text(
            f"# anemoi-inference 0.13.0: run from tests/data/real/ with `anemoi-inference run {rel}/config.yaml`\n"
            f"checkpoint: {ckpt.relative_to(DATA)}\n"
            "date: 2020-01-08T18:00:00\n"
            "lead_time: 12h\n"
            "input:\n  dataset: dataset/tiny.zarr\n"
            f"output:\n  netcdf: {rel}/forecast.nc\n")
        run([str(CURRENT / "bin/anemoi-inference"), "run", f"{rel}/config.yaml"], cwd=DATA, log=work / "inference.log")


STAGES = {"dataset": dataset, "current-gnn": current_gnn, "current-gt": current_gt, "early-gnn": early_gnn,
          "reference": reference, "inference": inference, "manifest": manifest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=[*STAGES, "all"])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (runs, logs, catalogue)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for name, fn in STAGES.items():
        if args.stage in (name, "all"):
            fn(work)


if __name__ == "__main__":
    sys.exit(main())
