"""Real anemoi-training sessions for the training callback's tests: the environment, the sessions, their files.

The training environment (anemoi-training 0.17.1 and torch 2.10: ``.ci/anemoi-env.sh PATH
training``) is named by ``ANEMOI_CKPT_TRAINING_ENV`` (its python); without it a test skips on a
developer's machine and fails in CI. :class:`Sessions` runs ``anemoi-training train`` on the tiny
configuration of ``tests/real_fixtures`` (5 steps an epoch on CPU) with ``RegisterCheckpoints`` in
``diagnostics.callbacks``, and snapshots the run folder after each session; :meth:`Sessions.facts`
reads what the snapshotted files hold with the real packages: the truth a test compares with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "real_fixtures"
DATASET = ROOT / "tests" / "data" / "real" / "dataset" / "tiny.zarr"
ENV_VARIABLE = "ANEMOI_CKPT_TRAINING_ENV"
# Each option from a variable of the session's environment (Sessions.train): unset, the callback's default.
CALLBACK = """diagnostics:
  callbacks:
  - _target_: anemoi_ckpt_nb.training.RegisterCheckpoints
    spool: ${oc.env:RF_SPOOL,null}
    catalogue: ${oc.env:RF_CATALOGUE,null}
    sync: ${oc.decode:${oc.env:RF_SYNC,null}}
    end_wait: ${oc.env:RF_END_WAIT,600}
    tags: [candidate]
  plot:"""

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


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A private folder with a short path under /tmp for the sessions' temporary files (:class:`Sessions`),
    removed afterwards with all it holds.

    The real packages leave files in their temporary folder (torch-geometric writes a
    ``*_propagate_*.py`` module for every message-passing layer it builds and never removes it), so
    it must not be /tmp itself; nor under pytest's ``tmp_path``: the DataLoader workers'
    multiprocessing sockets go there too, and that path is longer than AF_UNIX allows (the run hangs).
    """
    folder = Path(tempfile.mkdtemp(prefix="rf", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


class Sessions:
    """Run anemoi-training sessions in one output folder, snapshotting the run folder after each.

    Args:
        python: The training environment's python.
        work: The test's folder: the output folder ``out/``, the spool ``spool/``, the logs.
        tmp: The sessions' temporary folder (:func:`short_tmp`); each session's TMPDIR is a folder in it.
    """

    def __init__(self, python: Path, work: Path, tmp: Path) -> None:
        self.python, self.work, self.tmp = python, work, tmp
        self.out, self.spool = work / "out", work / "spool"
        text = (FIXTURES / "tiny_current.yaml").read_text()
        assert "diagnostics:\n  plot:" in text
        (work / "tiny_callback.yaml").write_text(text.replace("diagnostics:\n  plot:", CALLBACK, 1))
        self.snapshots: dict[str, Path] = {}
        self.logs: dict[str, str] = {}

    @property
    def default_spool(self) -> Path:
        """The spool of a session run without ``spool_option``: the callback's own choice, beside ``checkpoint/``."""
        return self.out / "anemoi-ckpt-spool"

    def train(self, session: str, *overrides: str, environ: dict[str, str] | None = None,
              spool_option: bool = True) -> str:
        """One ``anemoi-training train`` session; returns its run id. The callback's ``spool:`` is
        ``self.spool``, or unset without ``spool_option`` (the spool is then :attr:`default_spool`)."""
        spool = self.spool if spool_option else self.default_spool
        before = set(self._runs())
        tmp = self.tmp / session
        tmp.mkdir()
        env = {**os.environ, "RF_DATASET": str(DATASET), "RF_OUTPUT": str(self.out), "ANEMOI_BASE_SEED": "1",
               "HYDRA_FULL_ERROR": "1", "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
        for name in ("ANEMOI_CKPT_SPOOL", "ANEMOI_CKPT_CATALOGUE", "ANEMOI_CKPT_OFFLINE", "RF_CATALOGUE"):
            env.pop(name, None)
        if spool_option:
            env["RF_SPOOL"] = str(spool)
        env.update(environ or {})
        command = [str(self.python.with_name("anemoi-training")), "train", "--config-name=tiny_callback",
                   "model.bounding=[]", *overrides]
        log = self.work / f"{session}.log"
        with log.open("w") as fh:
            try:
                done = subprocess.run(command, cwd=self.work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                      timeout=SESSION_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {session} session did not end in {SESSION_TIMEOUT} s\n{self._tails(log, spool)}")
        assert done.returncode == 0, self._tails(log, spool)
        text = log.read_text()
        assert "anemoi-ckpt: capturing the checkpoints of" in text, text[-3000:]
        # The one warning a session may log: a sync that could not reach the catalogue.
        warned = [line for line in text.splitlines() if "training goes on" in line and "the sync of" not in line]
        assert not warned, text[-3000:]
        self.logs[session] = text
        # What the session leaves in its temporary folder is there, not in /tmp: torch-geometric's modules.
        assert list(tmp.glob("*_propagate_*.py")), f"{session}: nothing in its TMPDIR {tmp}: {sorted(tmp.iterdir())}"
        new = set(self._runs()) - before
        run_id = new.pop() if new else next(o.split("=", 1)[1] for o in overrides if o.startswith("training.run_id="))
        self.snapshots[session] = self.work / "snapshots" / session
        shutil.copytree(self.out / "checkpoint" / run_id, self.snapshots[session] / run_id)
        return run_id

    def _tails(self, log: Path, spool: Path) -> str:
        """The end of the session's log and of the background syncs' log: what a failure shows."""
        sync_log = spool / "sync.log"
        sync = sync_log.read_text(errors="replace")[-3000:] if sync_log.is_file() else "(no sync.log)"
        return f"--- {log.name} ---\n{log.read_text(errors='replace')[-5000:]}\n--- sync.log ---\n{sync}"

    def _runs(self) -> list[str]:
        root = self.out / "checkpoint"
        return [p.name for p in root.iterdir()] if root.is_dir() else []

    def facts(self) -> dict[Path, dict]:
        """What every snapshotted file holds, read by the real packages."""
        files = sorted(self.work.glob("snapshots/*/*/*.ckpt"))
        done = subprocess.run([str(self.python), str(FIXTURES / "_in_venv.py"), "facts", *map(str, files)],
                              capture_output=True, text=True, check=True, timeout=900,
                              env={**os.environ, "TMPDIR": str(self.tmp)})  # it builds models too
        return {Path(k): v for k, v in json.loads(done.stdout).items()}
