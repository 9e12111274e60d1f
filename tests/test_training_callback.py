"""The training callback with the real anemoi-training 0.17.1: train, resume, fork, online and offline; then `sync`.

A tiny model is trained by the real ``anemoi-training train`` with ``RegisterCheckpoints`` in
``diagnostics.callbacks`` (:class:`training_sessions.Sessions`), then resumed, forked with its full
state and forked with its weights only, and that fork resumed, as
``tests/real_fixtures/make_real_fixtures.py`` made the committed fixtures. After each session the
run folder is snapshotted and its files read by the real packages (``torch.load`` and
``anemoi.utils.checkpoints.load_metadata``): that is the truth.

Online: the first session registers as it trains (the callback names the SeaweedFS S3 catalogue:
its captures are synced by a child process); the resume names a catalogue that never answers (its
captures stay in the spool, with a warning). Offline, as on compute nodes without network: the
forks and the fork's resume run with ``ANEMOI_CKPT_OFFLINE=1`` and the S3 catalogue named (it can
be reached: a callback that ignored the setting would register into it), into the spool the
callback chooses, beside ``checkpoint/``; nothing is registered while they train. Then
``anemoi-ckpt sync SPOOL``, a process of its own as on a login node, registers that spool (run
again, it registers nothing more), ``sync`` registers the rest of the online spool, and every file
of every session must be registered once, with exactly the lineage the files hold (the
weights-only fork: linked to the file it started from, which its files do not name).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from training_sessions import ROOT, Sessions, short_tmp, training_python  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.s3]

OFFLINE_SESSIONS = ("fork-full", "fork-weights", "fork-weights-resume")
OFFLINE_WARNING = "sync is on but ANEMOI_CKPT_OFFLINE is set: the captures stay in the spool"


def _no_catalogue() -> dict[str, str]:
    """This environment without a catalogue: the callback only spools (no child process syncs)."""
    return {k: v for k, v in os.environ.items() if k != "ANEMOI_CKPT_CATALOGUE"}


def _sha256(path: Path) -> str:
    from anemoi_ckpt_nb.storage.hashing import sha256_file

    return sha256_file(path)


def _records(url: str) -> dict:
    """Every record of the catalogue at ``url``, by uuid."""
    from anemoi_ckpt_nb.api import Catalogue

    catalogue = Catalogue(url)
    return {e["uuid"]: catalogue.store.read_record(e["uuid"]) for e in catalogue.entries()}


def test_every_checkpoint_of_run_resume_and_forks_is_registered_with_its_true_lineage(training_python, short_tmp, s3_url,
                                                                                     tmp_path, silent_endpoint):
    from anemoi_ckpt_nb.api import Catalogue
    from anemoi_ckpt_nb.cli import main
    from anemoi_ckpt_nb.runs.spool import Spool

    sessions = Sessions(training_python, tmp_path, short_tmp)
    Catalogue.create(s3_url)
    run_id = sessions.train("run", environ={"RF_CATALOGUE": s3_url})
    # Registered as it trained: every file the run left is in the catalogue, its spool entries done.
    registered = {r.sha256 for r in _records(s3_url).values()}
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

    # Offline, into the spool the callback chooses; the weights-only fork has `sync: true` in its
    # config too: the setting wins, with a warning.
    before = _records(s3_url)
    offline = {"RF_CATALOGUE": s3_url, "ANEMOI_CKPT_OFFLINE": "1"}
    sessions.train("fork-full", f"training.fork_run_id={run_id}", f"system.input.warm_start={kept}",
                   "training.max_epochs=3", environ=offline, spool_option=False)
    weights_id = str(uuid.uuid4())
    sessions.train("fork-weights", f"training.run_id={weights_id}", f"training.fork_run_id={run_id}",
                   f"system.input.warm_start={kept}", "training.load_weights_only=true", "training.max_epochs=1",
                   environ={**offline, "RF_SYNC": "true"}, spool_option=False)
    sessions.train("fork-weights-resume", f"training.run_id={weights_id}", "training.max_epochs=2", environ=offline,
                   spool_option=False)
    _offline_sessions_registered_nothing(sessions, s3_url, before)
    facts = sessions.facts()
    _login_node_syncs_once(sessions.default_spool, s3_url, before,
                           [p for p in facts if p.relative_to(tmp_path / "snapshots").parts[0] in OFFLINE_SESSIONS])

    spool = Spool.open(sessions.spool)
    assert spool.catalogue == s3_url  # recorded by the session that created the spool
    assert main(["sync", str(sessions.spool), "--catalogue", s3_url]) == 0
    assert spool.pending() == [] and not any((sessions.spool / "files").iterdir())
    records = _records(s3_url)
    _check_lineage(facts, records, Catalogue(s3_url), kept=(kept, parent), weights_id=weights_id, out=sessions.out)
    # The resume's parent is the run's last.ckpt, which the resume overwrote: its bytes were captured.
    resumed = [f for p, f in facts.items() if "resume" in p.parts and f["kind"] == "training" and f["pickled_parent_uuid"]]
    assert resumed and all(f["pickled_parent_uuid"] in records for f in resumed)
    # More records than files left at the end: last.ckpt saved at every epoch was captured each time.
    assert len(records) > len({_sha256(p) for p in facts})
    assert sum(r.filename == "last.ckpt" for r in records.values()) > sum(p.name == "last.ckpt" for p in facts)


def _offline_sessions_registered_nothing(sessions: Sessions, url: str, before: dict) -> None:
    """The offline sessions left every capture pending in their spool, for the catalogue they named."""
    from anemoi_ckpt_nb.runs.spool import Spool

    spool = Spool.open(sessions.default_spool)
    assert spool.catalogue == url  # recorded for the login node's sync
    assert not (spool.path / "sync.log").exists()  # no child sync was started
    assert spool.entries() and [state for _, state, _ in spool.status()] == ["pending"] * len(spool.entries())
    assert _records(url) == before
    for name in OFFLINE_SESSIONS:
        log = sessions.logs[name]
        assert "registering them into" not in log and f"register them with `anemoi-ckpt sync {spool.path}`" in log
        assert (OFFLINE_WARNING in log) == (name == "fork-weights"), log[-3000:]


def _login_node_syncs_once(spool_path: Path, url: str, before: dict, files: list[Path]) -> None:
    """``anemoi-ckpt sync SPOOL`` twice, each a process of its own with no catalogue configured (the
    spool names it): the first registers each of ``files`` once, the second nothing more."""
    from anemoi_ckpt_nb.runs.spool import Spool

    from anemoi_ckpt_nb.api import Catalogue

    def sync() -> tuple[str, dict, list]:
        done = subprocess.run([str(Path(sys.executable).parent / "anemoi-ckpt"), "sync", str(spool_path)],
                              capture_output=True, text=True, env=_no_catalogue(), timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout, _records(url), Catalogue(url).entries()

    first, after, entries = sync()
    created = [line for line in first.splitlines() if line.startswith("registered: ")]
    assert before.items() <= after.items() and len(after) == len(before) + len(created), first
    assert files and all(sum(r.sha256 == _sha256(p) for r in after.values()) == 1 for p in files), first
    spool = Spool.open(spool_path)
    assert {state for _, state, _ in spool.status()} == {"done"} and not any((spool_path / "files").iterdir())
    second, again, entries_again = sync()
    assert "0 registered, 0 already registered, 0 waiting for a parent, 0 failed" in second, second
    assert again == after and entries_again == entries


def _check_lineage(facts: dict[Path, dict], records: dict, catalogue, *, kept: tuple[Path, Path], weights_id: str,
                   out: Path) -> None:
    """Every file is registered, tagged, with its true uuid, where it was saved, and exactly its true parents."""
    from anemoi_ckpt_nb.catalogue import layout

    by_sha = {r.sha256: r for r in records.values()}
    # The truth: the uuids the files hold, as the real packages read them.
    training = {}
    for path, fact in facts.items():
        if fact["kind"] == "training":
            training[fact["pickled_uuid"]] = (path, fact)
            if fact["embedded"]:
                training[fact["embedded"]["uuid"]] = (path, fact)
    copy, original = kept
    assert copy.read_bytes() == original.read_bytes()
    kept_uuid = facts[original]["pickled_uuid"]  # the file the forks started from
    for path, fact in facts.items():
        sha = _sha256(path)
        record = by_sha.get(sha)
        assert record is not None, f"{path} was never registered"
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
            elif fact["pickled_run_id"] == weights_id:
                expected = [(kept_uuid, "forked-from")]  # named by the callback: the files name none
            else:
                expected = []
        assert [(p.uuid, p.relation) for p in record.parents] == expected, path
        assert record.source.path.startswith(str(out)), record.source  # where it was saved


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
