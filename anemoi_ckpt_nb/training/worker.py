"""The callback's worker thread: copies captured bytes and writes spool entries off the training thread.

A capture is taken hold of on the training thread (a clone, a hard link, or an open file: all
instant, :func:`~anemoi_ckpt_nb.runs.capture.prepare`); what takes time (copying, fsyncing,
writing the entry) happens here. A failure is logged as a warning and counted, never raised.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from anemoi_ckpt_nb.runs.capture import Capture, rewritten_in_place

LOGGER = logging.getLogger("anemoi_ckpt_nb.training")


class Worker:
    """One thread finishing captures in the order they were handed over."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Capture, dict[str, Any]] | None] = queue.Queue()
        self._lock = threading.Condition()
        # Copies of files anemoi-training rewrites in place, not finished yet.
        self._at_risk = 0
        self.finished: list[Any] = []
        self.failed: list[str] = []
        self._thread = threading.Thread(target=self._run, name="anemoi-ckpt-spool", daemon=False)
        self._thread.start()

    def submit(self, capture: Capture, fields: dict[str, Any]) -> None:
        if capture.pending_copy and rewritten_in_place(capture.source.name):
            with self._lock:
                self._at_risk += 1
        self._queue.put((capture, fields))

    def wait_for_copies_at_risk(self) -> float:
        """Block until no copy of a file rewritten in place is pending; return the seconds waited.

        Called just before anemoi-training may save again: the next save would truncate the file
        being copied.
        """
        start = time.monotonic()
        with self._lock:
            self._lock.wait_for(lambda: self._at_risk == 0)
        return time.monotonic() - start

    def close(self) -> None:
        """Finish everything handed over, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            capture, fields = item
            at_risk = capture.pending_copy and rewritten_in_place(capture.source.name)
            try:
                entry = capture.finish(**fields)
            except Exception as error:  # a capture lost is a warning: training goes on
                self.failed.append(f"{capture.source}: {error}")
                LOGGER.warning("anemoi-ckpt: could not capture %s into the spool (%s); training goes on, "
                               "register it by hand if it still exists", capture.source, error)
                try:
                    capture.abandon()
                except Exception:  # pragma: no cover - best effort
                    pass
            else:
                self.finished.append(entry)
                LOGGER.info("anemoi-ckpt: captured %s (%s) as spool entry %s", capture.source.name, entry.method,
                            entry.key)
            finally:
                if at_risk:
                    with self._lock:
                        self._at_risk -= 1
                        self._lock.notify_all()
