"""``RegisterCheckpoints``: capture every checkpoint anemoi-training saves into a spool, as it is saved.

Configured in anemoi-training's config, which instantiates ``diagnostics.callbacks`` verbatim::

    diagnostics:
      callbacks:
        - _target_: anemoi_ckpt_nb.training.RegisterCheckpoints
          catalogue: s3://bucket/anemoi-catalogue   # registered into as it trains, if it can be reached
          tags: [candidate]

Online or offline: with a catalogue named (here or ``$ANEMOI_CKPT_CATALOGUE``) and
``ANEMOI_CKPT_OFFLINE`` not set, every capture is registered at once by ``anemoi-ckpt sync`` in a
child process (:mod:`.background`); otherwise, or when the catalogue cannot be reached, the
spool keeps the captures for ``anemoi-ckpt sync`` on a login node.

When a file is saved: Lightning calls the checkpoint callbacks after every other callback of a
hook, so the files a save wrote are seen at the next hook: the next training batch, or the end of
fit. The callback then compares the run folder with what it saw before (a few ``stat`` calls,
only after a checkpoint callback reports a save, or every ``poll_seconds``) and captures each new
or changed file (:mod:`anemoi_ckpt_nb.runs.capture`): it hands their names to worker threads
(:mod:`.worker`), which take hold of them at once (a clone, a hard link or an open file) and copy
them if needed. Before a hook in which anemoi-training may save again (and so replace, delete or
rewrite a file), it waits until every file handed over is taken hold of, and for pending copies of
the files that save would rewrite in place (``inference-last.ckpt``): after a save, the training
thread itself spends a few ``stat`` calls, and waits only if the worker is that far behind.

Lineage: each file's own metadata names its parent (a resume and a full-state fork write the
loaded checkpoint's uuid as ``parent_uuid``; an inference file shares its training file's uuid).
The file the session started from (``ckpt_path``, or the warm start of a weights-only fork) is
captured at the start, before the run can overwrite it; a weights-only fork writes no
``parent_uuid``, so its training files' entries name that capture as their ``forked-from`` parent.

Never breaks training: only global rank 0 works, and every error is logged as a warning. A
capture that fails (a full or read-only spool) is tried again: handed over again by the training
thread when the file could not even be taken hold of (if unchanged, at a later hook, after each
of ``retry_seconds``), by the worker when its copy or entry failed; then given up, with a warning
naming the file.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import uuid as _uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb import settings
from anemoi_ckpt_nb.errors import SpoolError
from anemoi_ckpt_nb.runs.capture import METHODS
from anemoi_ckpt_nb.runs.spool import Spool, new_key
from anemoi_ckpt_nb.training.background import BackgroundSync
from anemoi_ckpt_nb.training.worker import RETRY_DELAYS, Worker

try:
    from pytorch_lightning.callbacks import Callback
except ImportError:  # no Lightning here: the class still imports (documentation, the spool's tests)
    Callback = object  # type: ignore[assignment,misc]

LOGGER = logging.getLogger("anemoi_ckpt_nb.training")

#: The spool's folder name when neither the option nor $ANEMOI_CKPT_SPOOL names one: beside the
#: ``checkpoint/`` folder that holds the run folders.
DEFAULT_SPOOL_NAME = "anemoi-ckpt-spool"
_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")


def _never_raises(hook):
    """A hook that logs its errors instead of raising them: training must go on."""

    @functools.wraps(hook)
    def guarded(self, *args, **kwargs):
        if not self._active:
            return None
        try:
            return hook(self, *args, **kwargs)
        except Exception as error:
            self.errors.append(f"{hook.__name__}: {error}")
            LOGGER.warning("anemoi-ckpt: %s failed (%s: %s); training goes on", hook.__name__,
                           type(error).__name__, error, exc_info=bool(os.environ.get("ANEMOI_CKPT_DEBUG")))
            return None

    return guarded


class RegisterCheckpoints(Callback):
    """Capture each checkpoint anemoi-training saves into a spool that ``anemoi-ckpt sync`` registers.

    Args:
        catalogue: The catalogue the spool is for (recorded in its ``spool.json``; ``sync`` uses it
            unless given ``--catalogue``). Default: ``$ANEMOI_CKPT_CATALOGUE`` if set.
        sync: Register each capture at once, by ``anemoi-ckpt sync`` in a child process (True),
            or leave the spool for a later ``sync`` (False). Default: at once when a catalogue is
            named and ``ANEMOI_CKPT_OFFLINE`` is not set.
        spool: The spool folder; default ``$ANEMOI_CKPT_SPOOL``, else ``anemoi-ckpt-spool/`` beside
            the ``checkpoint/`` folder of the run (same file system: hard links work).
        tags: Tags ``sync`` adds to every checkpoint of this run.
        capture: Capture methods allowed, in order (``reflink``, ``link``, ``copy``).
        poll_seconds: Look at the run folder at least this often even when no checkpoint callback
            reports a save (a checkpoint saved by other means).
        retry_seconds: Seconds before each new attempt at a capture that failed; its length
            bounds the retries (default three, after 10 s, 1 min and 5 min).
        end_wait: At the end of training, how long to wait for the child-process sync in all
            (default 10 min); one still running then is stopped, and the spool keeps what it did
            not register, so a catalogue that answers nothing cannot hold a finished job.
    """

    def __init__(
        self,
        catalogue: str | None = None,
        spool: str | None = None,
        tags: Sequence[str] = (),
        capture: Sequence[str] = METHODS,
        poll_seconds: float = 60.0,
        retry_seconds: Sequence[float] = RETRY_DELAYS,
        sync: bool | None = None,
        end_wait: float = 600.0,
    ) -> None:
        super().__init__()
        self.catalogue = catalogue or os.environ.get(settings.ENV_CATALOGUE) or None
        self.spool_option = spool
        self.tags = [str(t) for t in (tags or ())]
        self.methods = tuple(capture)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"RegisterCheckpoints: capture methods must be among {', '.join(METHODS)}, not {unknown}")
        self.poll_seconds = float(poll_seconds)
        self.sync = sync
        self.end_wait = float(end_wait)
        if self.end_wait < 0:
            raise ValueError(f"RegisterCheckpoints: end_wait must be 0 or more, not {end_wait}")
        self.background: BackgroundSync | None = None
        self.retry_seconds = tuple(float(t) for t in retry_seconds)
        if any(t < 0 for t in self.retry_seconds):
            raise ValueError(f"RegisterCheckpoints: retry_seconds must be 0 or more, not {list(self.retry_seconds)}")
        self.spool: Spool | None = None
        self.errors: list[str] = []
        self.waited = 0.0
        self._active = True  # until a hook finds it is not rank 0
        self._worker: Worker | None = None
        self._folders: list[Path] = []
        self._seen: dict[Path, tuple[int, int, int]] = {}
        self._signature: Any = None
        self._last_poll = 0.0
        self._fields: dict[str, Any] = {}
        self._parents: list[dict[str, str]] = []
        # Files that could not be taken hold of: path -> (its stat then, attempts, when to try again, fields, key).
        self._retries: dict[Path, tuple[tuple[int, int, int], int, float, dict[str, Any], str]] = {}

    def __repr__(self) -> str:
        return f"RegisterCheckpoints(spool={str(self.spool.path) if self.spool else self.spool_option!r})"

    # --- start ---------------------------------------------------------------------

    @_never_raises
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            self._active = False  # only rank 0 saves checkpoints
            return
        self._folders = sorted({Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)})
        if not self._folders:
            LOGGER.warning("anemoi-ckpt: no checkpoint callback saves files in this run: nothing to capture")
            self._active = False
            return
        chosen = settings.spool(self.spool_option)
        path = chosen.value if chosen.value is not None else self._folders[0].parent.parent / DEFAULT_SPOOL_NAME
        self.spool = Spool(path, catalogue=self.catalogue)
        self.spool.ensure()
        metadata = _metadata(pl_module)
        self._fields = {"run_id": metadata.get("run_id"), "session": str(_uuid.uuid4()), "tags": self.tags}
        self._seen = self._scan()
        self._signature = self._save_signature(trainer)
        self._last_poll = time.monotonic()
        self.background = self._background()
        self._worker = Worker(retry_delays=self.retry_seconds,
                              on_finished=self.background and (lambda entry: self.background.kick()))
        self._capture_start(trainer, metadata)
        LOGGER.info("anemoi-ckpt: capturing the checkpoints of %s into %s%s", ", ".join(map(str, self._folders)),
                    self.spool.path, f", registering them into {self.catalogue} as they come" if self.background else "")

    def _background(self) -> BackgroundSync | None:
        """The child-process sync, if this run registers as it trains."""
        if self.sync is False or (self.sync is None and not self.catalogue):
            return None
        if settings.is_offline():
            if self.sync:
                LOGGER.warning("anemoi-ckpt: sync is on but %s is set: the captures stay in the spool for "
                               "`anemoi-ckpt sync`", settings.ENV_OFFLINE)
            return None
        if not self.catalogue:
            LOGGER.warning("anemoi-ckpt: sync is on but no catalogue is named (the `catalogue:` option or $%s): "
                           "the captures stay in the spool", settings.ENV_CATALOGUE)
            return None
        return BackgroundSync(self.spool.path, self.catalogue, end_wait=self.end_wait)

    def _capture_start(self, trainer: Any, metadata: dict[str, Any]) -> None:
        """Capture the file this session starts from, before the run can overwrite it."""
        config = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
        training = config.get("training") or {}
        ckpt_path = getattr(trainer, "ckpt_path", None)
        start, weights_only = None, False
        if ckpt_path:
            start = Path(ckpt_path)
        elif training.get("load_weights_only"):
            # As anemoi-training finds it: the warm start, else the forked run's last.ckpt.
            warm = ((config.get("system") or {}).get("input") or {}).get("warm_start")
            fork = training.get("fork_run_id")
            start = Path(warm) if warm else (self._folders[0].parent / fork / "last.ckpt" if fork else None)
            weights_only = True
        if start is None or not start.is_file():
            return
        # Keys made now: the entries of a weights-only fork name the first, even if its capture must be retried.
        keys = [new_key(), new_key()]
        self._hand_over([(path, {**self._fields, "role": "start"}, key)
                         for path, key in zip((start, start.with_name(f"inference-{start.name}")), keys)
                         if path.is_file()])
        if weights_only:
            # Its files name no parent: this capture is their `forked-from` parent.
            self._parents = [{"entry": keys[0], "relation": "forked-from"}]

    # --- while training ----------------------------------------------------------------

    @_never_raises
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._poll(trainer)

    @_never_raises
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._before_a_save()

    @_never_raises
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._before_a_save()

    @_never_raises
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._poll(trainer)
        self._before_a_save()

    @_never_raises
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._poll(trainer)
        self._before_a_save()

    # --- end -----------------------------------------------------------------------------

    @_never_raises
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer)

    @_never_raises
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._finish(trainer)  # what was saved before the failure is kept

    @_never_raises
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._finish(trainer)

    def _finish(self, trainer: Any) -> None:
        if self._worker is None:
            return
        self._before_a_save()  # what became of every file handed over is known
        self._poll(trainer, force=True)  # a failed capture gets its last attempt here
        self._before_a_save()  # and its outcome is known
        for path in self._retries:
            self.errors.append(f"{path}: not captured before the end of training")
            LOGGER.warning("anemoi-ckpt: could not capture %s into the spool before the end of training; "
                           "register it by hand if it still exists", path)
        self._retries.clear()
        worker, self._worker = self._worker, None
        started = time.monotonic()
        worker.close()
        self.waited += time.monotonic() - started
        lost = f", {len(worker.failed)} could not be captured (see the warnings)" if worker.failed else ""
        if self.background is not None and self.background.close():
            LOGGER.info("anemoi-ckpt: %d checkpoint files captured into %s%s and registered into %s",
                        len(worker.finished), self.spool.path, lost, self.catalogue)
            return
        LOGGER.info("anemoi-ckpt: %d checkpoint files captured into %s%s; register them with `anemoi-ckpt sync %s`",
                    len(worker.finished), self.spool.path, lost, self.spool.path)

    # --- watching the run folder ---------------------------------------------------------

    def _before_a_save(self) -> None:
        if self._worker is not None:
            waited = self._worker.wait_for_captures_at_risk()
            self.waited += waited
            if waited > 1.0:
                LOGGER.warning("anemoi-ckpt: waited %.1f s for a copy to finish before the next save rewrites "
                               "the file; reflinks or less frequent saves avoid it", waited)
            self._outcomes()  # before the save: a file that could not be taken is still as it was then

    @staticmethod
    def _save_signature(trainer: Any) -> tuple:
        """What the checkpoint callbacks say about their last save: it changes when they save."""
        return tuple((getattr(cb, "_last_checkpoint_saved", None), getattr(cb, "_last_global_step_saved", None),
                      getattr(cb, "last_model_path", None)) for cb in trainer.checkpoint_callbacks)

    def _scan(self) -> dict[Path, tuple[int, int, int]]:
        found = {}
        for folder in self._folders:
            try:
                listing = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for item in listing:
                if item.name.endswith(_SUFFIXES) and not item.name.startswith("."):
                    try:
                        st = item.stat(follow_symlinks=True)
                    except FileNotFoundError:
                        continue
                    found[Path(item.path)] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return found

    def _poll(self, trainer: Any, *, force: bool = False) -> None:
        if self._worker is None:
            return
        if self.background is not None:
            self.background.poll()
        self._outcomes()
        signature = self._save_signature(trainer)
        now = time.monotonic()
        due = [path for path, retry in self._retries.items() if retry[2] < math.inf and (force or retry[2] <= now)]
        if not force and not due and signature == self._signature and now - self._last_poll < self.poll_seconds:
            return
        self._signature, self._last_poll = signature, now
        current = self._scan()
        new = [path for path, st in current.items() if self._seen.get(path) != st]
        self._seen = current
        handed = []
        for path in due:  # as it was when it failed, else it is gone or new (captured below as such)
            stat, attempts, _, fields, key = self._retries[path]
            if current.get(path, stat) == stat and path.is_file() and path not in new:
                self._retries[path] = (stat, attempts, math.inf, fields, key)  # not due again while handed over
                handed.append((path, fields, key))
            else:
                self._retries.pop(path)
        # Training files first: an inference file is registered after the file it was saved with.
        for path in sorted(new, key=lambda p: (p.name.startswith("inference-"), current[p][2], p.name)):
            parents = [] if path.name.startswith("inference-") else self._parents
            handed.append((path, {**self._fields, "role": "saved", "parents": parents}, None))
        self._hand_over(handed)

    def _hand_over(self, files: list[tuple[Path, dict[str, Any], str | None]]) -> None:
        """Give the worker these files to take hold of and capture; it says later what became of them."""
        if files:
            self._worker.take(self.spool, files, methods=self.methods)

    def _outcomes(self) -> None:
        """Learn what became of the files handed over: a file that could not be taken is tried again later."""
        for (path, fields, key), error in self._worker.outcomes():
            if error is None or isinstance(error, FileNotFoundError):  # taken, or deleted meanwhile
                self._retries.pop(path, None)
            else:
                self._retry_later(path, fields, key, error)

    def _retry_later(self, path: Path, fields: dict[str, Any], key: str | None, error: OSError) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        stat = (st.st_ino, st.st_size, st.st_mtime_ns)
        previous = self._retries.get(path)
        attempts = previous[1] + 1 if previous and previous[0] == stat else 1
        what = f"could not capture {path} into the spool ({type(error).__name__}: {error}); training goes on"
        if isinstance(error, SpoolError) or attempts > len(self.retry_seconds):
            self._retries.pop(path, None)
            self.errors.append(f"{path}: {error}")
            LOGGER.warning("anemoi-ckpt: %s, after %d attempt(s): register it by hand if it still exists", what, attempts)
            return
        delay = self.retry_seconds[attempts - 1]
        self._retries[path] = (stat, attempts, time.monotonic() + delay, fields, key or new_key())
        LOGGER.warning("anemoi-ckpt: %s, trying again in %g s (attempt %d of %d)", what, delay, attempts + 1,
                       len(self.retry_seconds) + 1)


def _metadata(pl_module: Any) -> dict[str, Any]:
    """``hyper_parameters["metadata"]`` of the module anemoi-training trains (empty if none)."""
    hparams = getattr(pl_module, "hparams", None) or {}
    try:
        metadata = hparams.get("metadata")
    except AttributeError:
        return {}
    return metadata if isinstance(metadata, dict) else {}
