"""The training callback offline: ``ANEMOI_CKPT_OFFLINE=1`` with a catalogue named, in a real Lightning run.

The catalogue named here can be reached (a folder), so a callback that ignored the setting would
register as it trains: its child ``anemoi-ckpt sync`` would write ``SPOOL/sync.log`` and mark the
entries done or failed. Offline, every capture stays pending in the spool, no child sync runs,
and ``sync: true`` forced says so with a warning. (The files of this plain Lightning module carry
no Anemoi metadata, so no sync could register them: ``test_training_callback.py`` syncs the real
anemoi-training files of a spool.) Runs in the training environment (``ANEMOI_CKPT_TRAINING_ENV``: its pytorch-lightning).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from test_training_callback import TINY_MODULE
from training_sessions import ROOT, training_python  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

OFFLINE_RUN = """
import logging, sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from anemoi_ckpt_nb.training import RegisterCheckpoints

out, spool, catalogue, sync = Path(sys.argv[1]), sys.argv[2], sys.argv[3], {"true": True, "default": None}[sys.argv[4]]
logging.basicConfig(level=logging.INFO, format="%(message)s")

""" + TINY_MODULE + """

callbacks = [RegisterCheckpoints(spool=spool, catalogue=catalogue, sync=sync),
             ModelCheckpoint(dirpath=out / "checkpoint" / "run", every_n_train_steps=1, save_top_k=-1, save_last=True)]
trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=callbacks)
trainer.fit(Tiny())
"""

WARNING = "sync is on but ANEMOI_CKPT_OFFLINE is set: the captures stay in the spool"


@pytest.mark.parametrize("sync", ["true", "default"])
def test_offline_captures_stay_in_the_spool_and_no_child_sync_runs(training_python, sync, tmp_path):
    from anemoi_ckpt_nb.api import Catalogue
    from anemoi_ckpt_nb.runs.spool import Spool

    out, spool = tmp_path / "out", tmp_path / "spool"
    catalogue = Catalogue.create(str(tmp_path / "catalogue"))
    environ = {k: v for k, v in os.environ.items() if k not in ("ANEMOI_CKPT_CATALOGUE", "ANEMOI_CKPT_SPOOL")}
    done = subprocess.run([str(training_python), "-c", OFFLINE_RUN, str(out), str(spool), catalogue.url, sync],
                          capture_output=True, text=True, timeout=900,
                          env={**environ, "ANEMOI_CKPT_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-5000:]
    log = done.stderr
    assert "anemoi-ckpt: capturing the checkpoints of" in log and "registering them into" not in log, log[-3000:]
    assert (WARNING in log) == (sync == "true"), log[-3000:]
    assert "register them with `anemoi-ckpt sync" in log  # the end of fit says what to do
    assert not (spool / "sync.log").exists()  # no child sync was started

    saved = sorted(p.name for p in (out / "checkpoint" / "run").glob("epoch=*.ckpt"))
    opened = Spool.open(spool)
    assert opened.catalogue == catalogue.url  # recorded for the login node's sync
    pending = sorted(Path(e.source).name for e in opened.pending())
    assert len(saved) == 3 and set(pending) >= {*saved, "last.ckpt"}, (saved, pending)
    # Not tried at all: no entry is done or failed, and the catalogue is as it was made.
    assert [state for _, state, _ in opened.status()] == ["pending"] * len(pending)
    assert catalogue.entries() == []
