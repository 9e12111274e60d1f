"""A Lightning callback that times training epochs and saves, for ``training_callback.py``.

Listed before ``RegisterCheckpoints`` in ``diagnostics.callbacks``, so each of its hooks runs
before ours, and before the checkpoint callbacks, which Lightning always runs last.

* An epoch's **training time**: from its ``on_train_epoch_start`` to the end of its last training
  batch, divided by its batches: every pause of the training thread counts once, wherever it
  falls, and the data loading the same way in both runs.
* The **intervals** between consecutive training batches of an epoch (what the first version of
  the benchmark took the median of), kept to compare: when a step waits for the data loader's
  worker, a pause of the training thread is one long interval, which the median leaves out, while
  the worker runs ahead during it and shortens the intervals the median keeps.
* A **save**: from the end of validation (just before the checkpoint callbacks save) to the start
  of the next epoch: the save, and everything after it on the training thread until then.
"""

from __future__ import annotations

import json
import time

from pytorch_lightning.callbacks import Callback


class StepTimer(Callback):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.epochs: list[tuple[float, int, float]] = []  # (seconds of training, batches, longest interval)
        self.saves: list[float] = []
        self.intervals: list[float] = []
        self._batch_start: float | None = None
        self._start: float | None = None
        self._last_batch_end = 0.0
        self._batches = 0
        self._longest = 0.0
        self._validated: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        if self._validated is not None:
            self.saves.append(now - self._validated)
        self._start, self._batches, self._validated, self._batch_start, self._longest = now, 0, None, None, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_start is not None:
            self.intervals.append(now - self._batch_start)
            self._longest = max(self._longest, now - self._batch_start)
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last_batch_end = time.perf_counter()
        self._batches += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        self._close_epoch()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._validated = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._close_epoch()  # an epoch without validation

    def _close_epoch(self) -> None:
        if self._start is not None and self._batches:
            self.epochs.append((self._last_batch_end - self._start, self._batches, self._longest))
        self._start = None

    def on_fit_end(self, trainer, pl_module) -> None:
        with open(self.out, "w") as fh:
            json.dump({"epochs": self.epochs, "saves": self.saves, "intervals": self.intervals}, fh)
