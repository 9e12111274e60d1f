"""A Lightning callback that times training steps and saves, for ``training_callback.py``.

Listed before ``RegisterCheckpoints`` in ``diagnostics.callbacks``, so each of its hooks runs
before ours, and before the checkpoint callbacks, which Lightning always runs last.
"""

from __future__ import annotations

import json
import time

from pytorch_lightning.callbacks import Callback


class StepTimer(Callback):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.steps: list[float] = []
        self.saves: list[float] = []
        self._batch: float | None = None
        self._validated: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._validated is not None:
            self.saves.append(now - self._validated)  # validation end -> save -> epoch end -> this batch
        elif self._batch is not None and batch_idx > 0:
            self.steps.append(now - self._batch)
        self._batch, self._validated = now, None

    def on_validation_end(self, trainer, pl_module) -> None:
        self._validated = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        with open(self.out, "w") as fh:
            json.dump({"steps": self.steps, "saves": self.saves}, fh)
