"""The callback's worker threads: capture saved files and write spool entries off the training thread.

The training thread only hands over the names of the files a save wrote (:meth:`Worker.take`).
A first thread takes hold of each at once (a clone, a hard link, or an open file:
:func:`~anemoi_ckpt_nb.runs.capture.prepare`, milliseconds, but journalled ``mkdir``/``link``/``open``
calls that cost the training thread up to 11 ms a file on a busy ext4 disk); a second one does what
takes time (copying, fsyncing, writing the entry), so a long copy never delays taking hold of the
next save's files. Until a file handed over is taken hold of (and, for a file rewritten in place,
copied), :meth:`Worker.wait_for_captures_at_risk` blocks: the callback calls it before every hook
in which anemoi-training may save, delete or rewrite a file again.

A failure (a full or read-only spool, a file system hiccup) is a warning and a retry: a file that
could not be taken hold of is reported back (:meth:`Worker.outcomes`: the callback tries it again
later if it is unchanged); a capture whose copy or entry failed keeps hold of its bytes (the source
stays open) and is tried again here after each of ``retry_delays``, then given up with a warning
naming the file. Nothing is ever raised to the training thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import SpoolError
from anemoi_ckpt_nb.runs.capture import METHODS, Capture, prepare, rewritten_in_place
from anemoi_ckpt_nb.runs.spool import Spool

LOGGER = logging.getLogger("anemoi_ckpt_nb.training")

#: Seconds before the second, third and fourth attempt at a capture that failed.
RETRY_DELAYS = (10.0, 60.0, 300.0)


#: A file handed over to be captured: (its path, its entry's fields, its entry's key or None for a new one).
Handed = tuple[Path, dict[str, Any], "str | None"]


class Worker:
    """Threads taking hold of saved files, then finishing captures in that order, retrying failed ones.

    Args:
        retry_delays: Seconds to wait before each new attempt; its length bounds the retries.
        on_finished: Called (on the worker thread) with each entry written.
    """

    def __init__(self, *, retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 on_finished: Callable[[Any], None] | None = None) -> None:
        self.retry_delays = tuple(retry_delays)
        self.on_finished = on_finished
        self._queue: queue.Queue[tuple[Capture, dict[str, Any]] | None] = queue.Queue()
        self._handed: queue.Queue[tuple[Spool, tuple[str, ...], list[Handed]] | None] = queue.Queue()
        self._lock = threading.Condition()
        # Files handed over and not taken hold of yet, and copies of files anemoi-training rewrites
        # in place not finished yet: a save must wait for them.
        self._at_risk = 0
        # (what was handed over, None once taken hold of, else the OSError that stopped it).
        self._outcomes: list[tuple[Handed, OSError | None]] = []
        # Failed captures to try again: (when, attempts made, capture, fields), soonest first.
        self._later: list[tuple[float, int, Capture, dict[str, Any]]] = []
        self._closing = False
        self.finished: list[Any] = []
        self.failed: list[str] = []
        #: Attempts that failed and were scheduled again.
        self.retried: list[str] = []
        self._thread = threading.Thread(target=self._run, name="anemoi-ckpt-spool", daemon=False)
        self._thread.start()
        self._taker = threading.Thread(target=self._take_run, name="anemoi-ckpt-take", daemon=False)
        self._taker.start()

    def take(self, spool: Spool, files: Sequence[Handed], *, methods: Sequence[str] = METHODS) -> None:
        """Capture ``files`` just saved: taken hold of on a thread of ours, at risk until then."""
        if not files:
            return
        with self._lock:
            self._at_risk += len(files)
        self._handed.put((spool, tuple(methods), list(files)))

    def outcomes(self) -> list[tuple[Handed, OSError | None]]:
        """What became of the files handed over since the last call: None (taken hold of) or the error.

        ``FileNotFoundError``: the file was gone (deleted beyond ``num_models_saved``); any other
        ``OSError`` (a read-only spool): the training thread may hand it over again later.
        """
        with self._lock:
            done, self._outcomes = self._outcomes, []
        return done

    def submit(self, capture: Capture, fields: dict[str, Any]) -> None:
        if capture.pending_copy and rewritten_in_place(capture.source.name):
            with self._lock:
                self._at_risk += 1
        self._queue.put((capture, fields))

    def wait_for_captures_at_risk(self) -> float:
        """Block until every file handed over is taken hold of, and no copy of a file rewritten in
        place is pending; return the seconds waited.

        Called just before anemoi-training may save again: the next save would replace ``last.ckpt``,
        delete files beyond ``num_models_saved`` and truncate ``inference-last.ckpt``. A copy that
        failed once no longer holds training back (its retry may find the file rewritten, and says so).
        """
        start = time.monotonic()
        with self._lock:
            self._lock.wait_for(lambda: self._at_risk == 0)
        return time.monotonic() - start

    def close(self) -> None:
        """Finish everything handed over (a capture still failing gets one last attempt, at once), then stop."""
        self._handed.put(None)
        self._taker.join()
        self._queue.put(None)
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() or self._taker.is_alive()

    def _take_run(self) -> None:
        while (work := self._handed.get()) is not None:
            spool, methods, files = work
            later = []
            for handed in files:
                path, fields, key = handed
                outcome: OSError | None = None
                try:
                    capture = prepare(spool, path, methods=methods, key=key)
                except OSError as error:  # SpoolError too: the callback gives it up
                    outcome = error
                except Exception as error:  # pragma: no cover - never stop capturing for it
                    outcome = OSError(f"{type(error).__name__}: {error}")
                else:
                    if capture.pending_copy and rewritten_in_place(capture.source.name):
                        # Copied first, and at risk until copied (counted before the take is
                        # released): the next save waits for this copy, not for the others.
                        self.submit(capture, fields)
                    else:
                        later.append((capture, fields))
                with self._lock:
                    self._outcomes.append((handed, outcome))
                    self._at_risk -= 1
                    self._lock.notify_all()
            for capture, fields in later:
                self.submit(capture, fields)

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

    def _run(self) -> None:  # the second thread: copies and entries
        while (work := self._next()) is not None:
            attempts, capture, fields = work
            at_risk = [attempts == 0 and capture.pending_copy and rewritten_in_place(capture.source.name)]

            def copied() -> None:  # once the bytes are copied, or the attempt is over: a save may rewrite it
                if at_risk[0]:
                    at_risk[0] = False
                    with self._lock:
                        self._at_risk -= 1
                        self._lock.notify_all()

            try:
                entry = capture.finish(on_copied=copied, **fields)
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
                copied()

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
