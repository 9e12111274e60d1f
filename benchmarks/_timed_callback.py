"""``RegisterCheckpoints`` timed from the inside, for ``training_callback.py`` only (never shipped).

Each hook of the callback runs between two ``perf_counter`` calls, so the run with the callback
also says what its hooks took on the training thread: in all, per save (the hook that captured
what a save wrote: the first one after it), per batch, and waiting before a save for copies of a
file the save rewrites in place. The wrapper costs two clock reads a hook (about 0.1 µs each).
"""

from __future__ import annotations

import json
import time

from anemoi_ckpt_nb.training import RegisterCheckpoints

HOOKS = ("on_fit_start", "on_train_batch_start", "on_train_batch_end", "on_validation_end", "on_train_epoch_end",
         "on_train_end", "on_fit_end")


class TimedRegisterCheckpoints(RegisterCheckpoints):
    def __init__(self, out: str, **options) -> None:
        super().__init__(**options)
        self.out = out
        self.calls: list[tuple[str, float, int, float]] = []  # (hook, seconds, files captured, seconds waited)
        self._captured = 0
        self.parts: dict[str, list[float]] = {}  # seconds of each call of the parts below, for a closer look

    def _hand_over(self, files) -> None:
        self._captured += len(files)
        return self._part("_hand_over", files)

    def _scan(self):
        return self._part("_scan")

    def _outcomes(self) -> None:
        return self._part("_outcomes")

    def _part(self, name: str, *args):
        start = time.perf_counter()
        try:
            return getattr(super(), name)(*args)
        finally:
            self.parts.setdefault(name, []).append(time.perf_counter() - start)


def _timed(name: str):
    hook = getattr(RegisterCheckpoints, name)

    def timed(self, *args, **kwargs):
        captured, waited = self._captured, self.waited
        start = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            self.calls.append((name, seconds, self._captured - captured, self.waited - waited))
            if name == "on_fit_end":
                with open(self.out, "w") as fh:
                    json.dump({"calls": self.calls, "parts": self.parts}, fh)

    timed.__name__ = name
    return timed


for _name in HOOKS:
    setattr(TimedRegisterCheckpoints, _name, _timed(_name))
