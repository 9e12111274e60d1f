"""The training callback with the real anemoi-training 0.17.1: train, resume, fork; then `sync`.

A tiny model (the configuration of ``tests/real_fixtures``, 5 steps an epoch on CPU) is trained
by the real ``anemoi-training train`` with ``RegisterCheckpoints`` in ``diagnostics.callbacks``,
then resumed, forked with its full state and forked with its weights only, as
``tests/real_fixtures/make_real_fixtures.py`` made the committed fixtures. After each session
the run folder is snapshotted and its files read by the real packages (``torch.load`` and
``anemoi.utils.checkpoints.load_metadata``, ``tests/real_fixtures/_in_venv.py facts``): that is
the truth. The first session registers as it trains (the callback names the SeaweedFS S3
catalogue: its captures are synced by a child process); the resume names a catalogue that cannot
be reached (its captures stay in the spool, with a warning); the forks name none. Then
``anemoi-ckpt sync`` registers the rest of the spool, and every file of every session must be
registered, with exactly the lineage the files hold (the weights-only fork: linked to the file it
started from, which its files do not name).

The training environment (anemoi-training and torch 2.10: ``.ci/anemoi-env.sh PATH training``)
is named by ``ANEMOI_CKPT_TRAINING_ENV`` (its python). Without it the test skips on a developer's
machine and fails in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "real_fixtures"
DATASET = ROOT / "tests" / "data" / "real" / "dataset" / "tiny.zarr"
ENV_VARIABLE = "ANEMOI_CKPT_TRAINING_ENV"
CALLBACK = """diagnostics:
  callbacks:
  - _target_: anemoi_ckpt_nb.training.RegisterCheckpoints
    spool: ${oc.env:RF_SPOOL}
    catalogue: ${oc.env:RF_CATALOGUE,null}
    end_wait: ${oc.env:RF_END_WAIT,600}
    tags: [candidate]
  plot:"""

pytestmark = [pytest.mark.slow, pytest.mark.s3]

#: A tiny session takes a minute or two; ten times that is a hang, shown with its logs.
SESSION_TIMEOUT = 1200


@pytest.fixture(scope="module")
def training_python() -> Path:
    python = os.environ.get(ENV_VARIABLE)
    if not python or not Path(python).exists():
        what = f"set {ENV_VARIABLE} to the python of an anemoi-training environment (.ci/anemoi-env.sh PATH training)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test: {what}")
        pytest.skip(what)
    return Path(python)


class Sessions:
    """Run anemoi-training sessions in one output folder, snapshotting the run folder after each."""

    def __init__(self, python: Path, work: Path) -> None:
        self.python, self.work = python, work
        self.out, self.spool = work / "out", work / "spool"
        text = (FIXTURES / "tiny_current.yaml").read_text()
        assert "diagnostics:\n  plot:" in text
        (work / "tiny_callback.yaml").write_text(text.replace("diagnostics:\n  plot:", CALLBACK, 1))
        self.snapshots: dict[str, Path] = {}
        self.logs: dict[str, str] = {}

    def train(self, session: str, *overrides: str, environ: dict[str, str] | None = None) -> str:
        before = set(self._runs())
        # Not TMPDIR under tmp_path (realenv.child_environment): the DataLoader workers' multiprocessing
        # sockets go there, and the path is longer than AF_UNIX allows (the run hangs).
        env = {**os.environ, "RF_DATASET": str(DATASET), "RF_OUTPUT": str(self.out), "RF_SPOOL": str(self.spool),
               "ANEMOI_BASE_SEED": "1", "HYDRA_FULL_ERROR": "1", "PYTHONPATH": str(ROOT)}
        for name in ("ANEMOI_CKPT_SPOOL", "ANEMOI_CKPT_CATALOGUE", "ANEMOI_CKPT_OFFLINE", "RF_CATALOGUE"):
            env.pop(name, None)
        env.update(environ or {})
        command = [str(self.python.with_name("anemoi-training")), "train", "--config-name=tiny_callback",
                   "model.bounding=[]", *overrides]
        log = self.work / f"{session}.log"
        with log.open("w") as fh:
            try:
                done = subprocess.run(command, cwd=self.work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                      timeout=SESSION_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {session} session did not end in {SESSION_TIMEOUT} s\n{self._tails(log)}")
        assert done.returncode == 0, self._tails(log)
        text = log.read_text()
        assert "anemoi-ckpt: capturing the checkpoints of" in text, text[-3000:]
        # The one warning a session may log: a sync that could not reach the catalogue.
        warned = [line for line in text.splitlines() if "training goes on" in line and "the sync of" not in line]
        assert not warned, text[-3000:]
        self.logs[session] = text
        new = set(self._runs()) - before
        run_id = new.pop() if new else next(o.split("=", 1)[1] for o in overrides if o.startswith("training.run_id="))
        self.snapshots[session] = self.work / "snapshots" / session
        shutil.copytree(self.out / "checkpoint" / run_id, self.snapshots[session] / run_id)
        return run_id

    def _tails(self, log: Path) -> str:
        """The end of the session's log and of the background syncs' log: what a failure shows."""
        sync_log = self.spool / "sync.log"
        sync = sync_log.read_text(errors="replace")[-3000:] if sync_log.is_file() else "(no sync.log)"
        return f"--- {log.name} ---\n{log.read_text(errors='replace')[-5000:]}\n--- sync.log ---\n{sync}"

    def _runs(self) -> list[str]:
        root = self.out / "checkpoint"
        return [p.name for p in root.iterdir()] if root.is_dir() else []

    def facts(self) -> dict[Path, dict]:
        """What every snapshotted file holds, read by the real packages."""
        files = sorted(self.work.glob("snapshots/*/*/*.ckpt"))
        done = subprocess.run([str(self.python), str(FIXTURES / "_in_venv.py"), "facts", *map(str, files)],
                              capture_output=True, text=True, check=True, timeout=900)
        return {Path(k): v for k, v in json.loads(done.stdout).items()}


def _no_catalogue() -> dict[str, str]:
    """This environment without a catalogue: the callback only spools (no child process syncs)."""
    return {k: v for k, v in os.environ.items() if k != "ANEMOI_CKPT_CATALOGUE"}


def _sha256(path: Path) -> str:
    from anemoi_ckpt_nb.storage.hashing import sha256_file

    return sha256_file(path)


def test_every_checkpoint_of_run_resume_and_forks_is_registered_with_its_true_lineage(training_python, s3_url, tmp_path,
                                                                                     silent_endpoint):
    from anemoi_ckpt_nb.api import Catalogue
    from anemoi_ckpt_nb.catalogue import layout
    from anemoi_ckpt_nb.cli import main
    from anemoi_ckpt_nb.runs.spool import Spool

    sessions = Sessions(training_python, tmp_path)
    Catalogue.create(s3_url)
    run_id = sessions.train("run", environ={"RF_CATALOGUE": s3_url})
    # Registered as it trained: every file the run left is in the catalogue, its spool entries done.
    online = Catalogue(s3_url)
    registered = {online.store.read_record(e["uuid"]).sha256 for e in online.entries()}
    assert {_sha256(p) for p in sessions.snapshots["run"].glob("*/*.ckpt")} <= registered
    assert Spool.open(sessions.spool).pending() == [] and "registered into s3://" in sessions.logs["run"]
    parent = sessions.snapshots["run"] / run_id / "anemoi-by_epoch-epoch_001-step_000010.ckpt"
    kept = tmp_path / "fork-parent.ckpt"  # the resume keeps this file; kept aside as the fixtures script does
    shutil.copy(parent, kept)
    # A catalogue that never answers (it accepts connections, then nothing: each request waits for
    # its read time-out): the syncs fail or are stopped at the end, with a warning; the job ends
    # at once (end_wait), and the spool keeps the captures.
    sessions.train("resume", f"training.run_id={run_id}", "training.max_epochs=3",
                   environ={"RF_CATALOGUE": s3_url, "AWS_ENDPOINT_URL": silent_endpoint, "AWS_MAX_ATTEMPTS": "1",
                            "RF_END_WAIT": "5"})
    resume_log = sessions.logs["resume"]
    assert "failed (exit status" in resume_log or "stopped it so the job can end" in resume_log, resume_log[-3000:]
    assert Spool.open(sessions.spool).pending()
    sessions.train("fork-full", f"training.fork_run_id={run_id}", f"system.input.warm_start={kept}",
                   "training.max_epochs=3")
    weights_id = str(uuid.uuid4())
    sessions.train("fork-weights", f"training.run_id={weights_id}", f"training.fork_run_id={run_id}",
                   f"system.input.warm_start={kept}", "training.load_weights_only=true", "training.max_epochs=1")
    facts = sessions.facts()

    spool = Spool.open(sessions.spool)
    assert spool.catalogue == s3_url  # recorded by the session that created the spool
    assert main(["sync", str(sessions.spool), "--catalogue", s3_url]) == 0
    assert spool.pending() == [] and not any((sessions.spool / "files").iterdir())
    catalogue = Catalogue(s3_url)
    records = {e["uuid"]: catalogue.store.read_record(e["uuid"]) for e in catalogue.entries()}
    by_sha = {r.sha256: r for r in records.values()}

    # The truth: the uuids the files hold, as the real packages read them.
    training = {}
    for path, fact in facts.items():
        if fact["kind"] == "training":
            training[fact["pickled_uuid"]] = (path, fact)
            if fact["embedded"]:
                training[fact["embedded"]["uuid"]] = (path, fact)
    kept_uuid = training_uuid_of(facts, kept, parent)
    for path, fact in facts.items():
        sha = _sha256(path)
        record = by_sha.get(sha)
        assert record is not None, f"{path.relative_to(tmp_path)} was never registered"
        assert "candidate" in catalogue.get(record.uuid).tags
        if fact["kind"] == "inference":
            training_file = path.with_name(path.name.removeprefix("inference-"))
            assert record.uuid == layout.derived_uuid(fact["embedded"]["uuid"], sha)
            expected = [(facts[training_file]["pickled_uuid"], "converted-from")]
        else:
            assert record.uuid == fact["pickled_uuid"] and record.run_id == fact["pickled_run_id"]
            if fact["pickled_parent_uuid"]:
                parent_path, parent_fact = training[fact["pickled_parent_uuid"]]
                relation = "resumed-from" if parent_fact["pickled_run_id"] == fact["pickled_run_id"] else "forked-from"
                expected = [(parent_fact["pickled_uuid"], relation)]
            elif "fork-weights" in path.parts:
                expected = [(kept_uuid, "forked-from")]  # named by the callback: the files name none
            else:
                expected = []
        assert [(p.uuid, p.relation) for p in record.parents] == expected, path.relative_to(tmp_path)
        assert record.source.path.startswith(str(sessions.out)), record.source  # where it was saved
    # The resume's parent is the run's last.ckpt, which the resume overwrote: its bytes were captured.
    resumed = [f for p, f in facts.items() if "resume" in p.parts and f["kind"] == "training" and f["pickled_parent_uuid"]]
    assert resumed and all(f["pickled_parent_uuid"] in records for f in resumed)
    # More records than files left at the end: last.ckpt saved at every epoch was captured each time.
    assert len(records) > len({_sha256(p) for p in facts})
    assert sum(r.filename == "last.ckpt" for r in records.values()) > sum(p.name == "last.ckpt" for p in facts)


def training_uuid_of(facts: dict[Path, dict], kept: Path, parent: Path) -> str:
    """The pickled uuid of the file the forks started from (a byte copy of ``parent``)."""
    assert kept.read_bytes() == parent.read_bytes()
    return facts[parent]["pickled_uuid"]


# A tiny LightningModule for the runs below (8 batches an epoch), in the training environment.
TINY_MODULE = """
import pytorch_lightning as pl
import torch


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, index):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(32, 4), batch_size=4)

"""


# A real Lightning run (the training environment's pytorch-lightning) whose spool refuses writes for
# a few saves: the callback warns, goes on, and captures every file once the spool takes them again.
READ_ONLY_SPOOL_RUN = """
import logging, os, sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from anemoi_ckpt_nb.training import RegisterCheckpoints

out, spool = Path(sys.argv[1]), Path(sys.argv[2])
logging.basicConfig(level=logging.WARNING, format="%(message)s")

""" + TINY_MODULE + """

class ReadOnlySpool(pl.Callback):
    # The file system event of the test: the spool's files/ refuses writes from step 1 to step 4.
    def on_train_batch_start(self, trainer, module, batch, index):
        if trainer.global_step in (1, 4):
            os.chmod(spool / "files", 0o555 if trainer.global_step == 1 else 0o755)


callbacks = [ReadOnlySpool(), RegisterCheckpoints(spool=str(spool), retry_seconds=[0] * 8),
             ModelCheckpoint(dirpath=out / "checkpoint" / "run", every_n_train_steps=1, save_top_k=-1, save_last=True)]
trainer = pl.Trainer(max_steps=7, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=callbacks)
trainer.fit(Tiny())
"""


def test_a_capture_the_spool_refuses_is_retried_and_training_goes_on(training_python, tmp_path):
    from rootless import held_to_permissions

    from anemoi_ckpt_nb.runs.spool import Spool

    out, spool = tmp_path / "out", tmp_path / "spool"
    (spool / "files").mkdir(parents=True)
    done = subprocess.run([str(training_python), "-c", READ_ONLY_SPOOL_RUN, str(out), str(spool)],
                          capture_output=True, text=True, timeout=900, preexec_fn=held_to_permissions(),
                          env={**_no_catalogue(), "PYTHONPATH": str(ROOT)})
    os.chmod(spool / "files", 0o755)
    assert done.returncode == 0, done.stderr[-5000:]
    log = done.stderr
    assert "could not capture" in log and "Permission denied" in log and "trying again in 0 s (attempt 2 of 9)" in log
    assert "register it by hand" not in log, log[-3000:]
    saved = sorted(p.name for p in (out / "checkpoint" / "run").glob("epoch=*.ckpt"))
    captured = [Path(e.source).name for e in Spool.open(spool).entries()]
    assert len(saved) == 7 and set(captured) >= {*saved, "last.ckpt"}, (saved, captured)
    assert all(captured.count(name) == 1 for name in saved)  # each once: a retry is not a second capture
    for entry in Spool.open(spool).entries():  # what was captured is what was saved
        path = spool / entry.file
        assert path.stat().st_size == entry.size
        if not entry.source.endswith("last.ckpt"):
            assert path.read_bytes() == Path(entry.source).read_bytes()


# Two ranks (Lightning's DDP on CPU, gloo): only global rank 0 captures, so each file once.
TWO_RANKS_RUN = """
import logging, sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from anemoi_ckpt_nb.training import RegisterCheckpoints

""" + TINY_MODULE + """

if __name__ == "__main__":
    out, spool = Path(sys.argv[1]), Path(sys.argv[2])
    logging.basicConfig(level=logging.INFO, format="rank-log %(message)s")
    callbacks = [RegisterCheckpoints(spool=str(spool)),
                 ModelCheckpoint(dirpath=out / "checkpoint" / "run", every_n_train_steps=1, save_top_k=-1)]
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(Tiny())
"""


def test_only_global_rank_zero_captures(training_python, tmp_path):
    from anemoi_ckpt_nb.runs.spool import Spool

    script, out, spool = tmp_path / "two_ranks.py", tmp_path / "out", tmp_path / "spool"
    script.write_text(TWO_RANKS_RUN)
    done = subprocess.run([str(training_python), str(script), str(out), str(spool)], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path, env={**_no_catalogue(), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-5000:]
    assert "GLOBAL_RANK: 1" in done.stderr  # the second rank ran, with the callback too
    assert done.stderr.count("anemoi-ckpt: capturing the checkpoints of") == 1, done.stderr[-5000:]
    saved = sorted(p.name for p in (out / "checkpoint" / "run").glob("*.ckpt"))
    captured = sorted(Path(e.source).name for e in Spool.open(spool).entries())
    assert len(saved) == 3 and captured == saved
