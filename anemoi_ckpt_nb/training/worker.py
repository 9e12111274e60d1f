"""The callback's worker thread: copies captured bytes and writes spool entries off the training thread.

A capture is taken hold of on the training thread (a clone, a hard link, or an open file: all
instant, :func:`~anemoi_ckpt_nb.runs.capture.prepare`); what takes time (copying, fsyncing,
writing the entry) happens here. A failure (a full or read-only spool, a file system hiccup) is
a warning and a retry: the capture keeps hold of its bytes (the source stays open) and is tried
again after each of ``retry_delays``, then given up with a warning naming the file. Nothing is
ever raised to the training thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from anemoi_ckpt_nb.errors import SpoolError
from anemoi_ckpt_nb.runs.capture import Capture, rewritten_in_place

LOGGER = logging.getLogger("anemoi_ckpt_nb.training")

#: Seconds before the second, third and fourth attempt at a capture that failed.
RETRY_DELAYS = (10.0, 60.0, 300.0)


class Worker:
    """One thread finishing captures in the order they were handed over, retrying failed ones.

    Args:
        retry_delays: Seconds to wait before each new attempt; its length bounds the retries.
        on_finished: Called (on the worker thread) with each entry written.
    """

    def __init__(self, *, retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 on_finished: Callable[[Any], None] | None = None) -> None:
        self.retry_delays = tuple(retry_delays)
        self.on_finished = on_finished
        self._queue: queue.Queue[tuple[Capture, dict[str, Any]] | None] = queue.Queue()
        self._lock = threading.Condition()
        # Copies of files anemoi-training rewrites in place, not finished yet.
        self._at_risk = 0
        # Failed captures to try again: (when, attempts made, capture, fields), soonest first.
        self._later: list[tuple[float, int, Capture, dict[str, Any]]] = []
        self._closing = False
        self.finished: list[Any] = []
        self.failed: list[str] = []
        #: Attempts that failed and were scheduled again.
        self.retried: list[str] = []
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
        being copied. A copy that failed once no longer holds training back (its retry may find
        the file rewritten, and says so).
        """
        start = time.monotonic()
        with self._lock:
            self._lock.wait_for(lambda: self._at_risk == 0)
        return time.monotonic() - start

    def close(self) -> None:
        """Finish everything handed over (a capture still failing gets one last attempt, at once), then stop."""
        self._queue.put(None)
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _next(self) -> tuple[int, Capture, dict[str, Any]] | None:
        """The next thing to do: a capture handed over, or a retry that is due; None once closed and done."""
        while True:
            if self._later and (self._closing or self._later[0][0] <= time.monotonic()):
                _, attempts, capture, fields = self._later.pop(0)
                return attempts, capture, fields
            if self._closing:
                return None
            timeout = max(0.0, self._later[0][0] - time.monotonic()) if self._later else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                continue
            if item is None:
                self._closing = True
                continue
            return 0, *item

    def _run(self) -> None:
        while (work := self._next()) is not None:
            attempts, capture, fields = work
            at_risk = attempts == 0 and capture.pending_copy and rewritten_in_place(capture.source.name)
            try:
                entry = capture.finish(**fields)
            except Exception as error:  # a capture that failed is a warning and a retry: training goes on
                self._failed(attempts + 1, capture, fields, error)
            else:
                self.finished.append(entry)
                LOGGER.info("anemoi-ckpt: captured %s (%s) as spool entry %s%s", capture.source.name, entry.method,
                            entry.key, f" at attempt {attempts + 1}" if attempts else "")
                if self.on_finished is not None:
                    try:
                        self.on_finished(entry)
                    except Exception as error:  # pragma: no cover - never stop capturing for it
                        LOGGER.warning("anemoi-ckpt: %s: %s", type(error).__name__, error)
            finally:
                if at_risk:
                    with self._lock:
                        self._at_risk -= 1
                        self._lock.notify_all()

    def _failed(self, attempts: int, capture: Capture, fields: dict[str, Any], error: Exception) -> None:
        lost = isinstance(error, SpoolError)  # the bytes are gone (rewritten while copied): no retry helps
        if not lost and not self._closing and attempts <= len(self.retry_delays):
            delay = self.retry_delays[attempts - 1]
            self.retried.append(f"{capture.source}: {error}")
            LOGGER.warning("anemoi-ckpt: could not capture %s into the spool (%s: %s); training goes on, "
                           "trying again in %g s (attempt %d of %d)", capture.source, type(error).__name__, error,
                           delay, attempts + 1, len(self.retry_delays) + 1)
            self._later.append((time.monotonic() + delay, attempts, capture, fields))
            self._later.sort(key=lambda item: item[0])
            return
        self.failed.append(f"{capture.source}: {error}")
        LOGGER.warning("anemoi-ckpt: could not capture %s into the spool after %d attempt(s) (%s: %s); training "
                       "goes on, register it by hand if it still exists", capture.source, attempts,
                       type(error).__name__, error)
        try:
            capture.abandon()
        except Exception:  # pragma: no cover - best effort: a spool that fails this much may refuse this too
            pass
