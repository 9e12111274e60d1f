"""Registering while training goes on: ``anemoi-ckpt sync`` in a child process, when the catalogue can be reached.

Where the training node has network (and ``ANEMOI_CKPT_OFFLINE`` is not set), the callback does
not leave its spool for later: after each capture it runs ``anemoi-ckpt sync SPOOL --catalogue
URL`` in a child process, one at a time, again when more was captured meanwhile. The training
process itself still never opens a connection nor imports the catalogue code. A sync that fails
(the catalogue cannot be reached) is a warning; the next is tried after ``retry_seconds``, and
what it could not register stays in the spool for ``anemoi-ckpt sync`` on a login node. Sync is
idempotent and safe to run twice at once, so a login-node sync of the same spool does no harm.

At the end of training the callback waits for the running sync, at most ``end_wait`` seconds: a
catalogue that answers nothing (a firewall that drops packets, a server that hangs) must not keep
a finished job on its nodes. A sync still running then is stopped (SIGTERM, then SIGKILL); it
loses nothing (each entry's outcome is written as it is known, a claim held by a dead sync is
taken over) and what it did not register stays in the spool.

The sync process is started only on the training thread (:meth:`BackgroundSync.poll` and
:meth:`BackgroundSync.close`, called from the callback's hooks), never from the spool's worker
thread that reports a finished capture (:meth:`BackgroundSync.kick` only asks for a sync). The
training thread is the one that forks the DataLoader's worker processes; a fork made while another
thread is inside ``subprocess.Popen`` gives the new worker a copy of the pipe through which Popen
learns that its child has started, and Popen then waits as long as that worker lives. Once, the
spool's thread waited so inside Popen holding this object's lock, the training thread waited for the
lock in :meth:`poll`, and the DataLoader's workers, which end with the epoch, never ended: the
training hung (seen in the real anemoi-training test on 6 December 2026). Started from the thread
that forks, a sync's start and a fork never overlap.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

LOGGER = logging.getLogger("anemoi_ckpt_nb.training")


class BackgroundSync:
    """``anemoi-ckpt sync`` of one spool into one catalogue, in a child process, while training goes on.

    Args:
        spool: The spool folder.
        catalogue: The catalogue URL.
        retry_seconds: After a failed sync, how long before the next one.
        end_wait: At the end of training, how long :meth:`close` waits for syncs in all.
    """

    #: How long a stopped sync gets to end on SIGTERM before it is killed.
    TERMINATE_GRACE = 10.0

    def __init__(self, spool: Path, catalogue: str, *, retry_seconds: float = 300.0, end_wait: float = 600.0) -> None:
        self.spool, self.catalogue, self.retry_seconds = Path(spool), catalogue, retry_seconds
        self.end_wait = end_wait
        self.log = self.spool / "sync.log"
        self.runs = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._wanted = False
        self._not_before = 0.0
        self._last_ok = True
        #: Set when :meth:`close` stopped a sync that ran past ``end_wait``.
        self.stopped = False

    def kick(self) -> None:
        """More was captured: the next :meth:`poll` starts a sync, or the one after the running sync.

        Any thread; it starts no process (see the module's docstring: only the training thread does).
        """
        with self._lock:
            self._wanted = True

    def poll(self) -> None:
        """Notice a sync that ended; start the next one if one is wanted. Cheap. The training thread only."""
        with self._lock:
            self._step()

    def close(self) -> bool:
        """At the end of training: wait for the running sync, then run a last one for what it missed.

        Waits ``end_wait`` seconds in all; a sync still running then is stopped, with a warning
        (the spool keeps what it did not register). After a failed sync none is tried again here
        (the catalogue could not be reached: trying again would only delay the end of the job).
        Returns True if everything captured was synced.
        """
        deadline = time.monotonic() + self.end_wait
        for last in (False, True):
            process = self._process
            if process is not None:
                LOGGER.info("anemoi-ckpt: waiting for the sync of %s into %s to finish (at most %.0f s)", self.spool,
                            self.catalogue, max(0.0, deadline - time.monotonic()))
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._stop(process)
            with self._lock:
                self._reap()
                if not last and self._wanted and self._last_ok and not self.stopped:
                    self._wanted = False
                    self._start()
        return self._last_ok and not self._wanted and not self.stopped

    def _stop(self, process: subprocess.Popen) -> None:
        """End a sync that ran past ``end_wait``: SIGTERM, then SIGKILL."""
        self.stopped = True
        LOGGER.warning("anemoi-ckpt: the sync of %s into %s was still running %.0f s after the end of training; "
                       "stopped it so the job can end (see %s); the spool keeps what it did not register for `anemoi-ckpt sync %s`", self.spool, self.catalogue, self.end_wait,
                       self.log, self.spool)
        for sig, grace in ((signal.SIGTERM, self.TERMINATE_GRACE), (signal.SIGKILL, None)):
            try:
                process.send_signal(sig)
                process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return

    def _step(self) -> None:
        """Under the lock: reap a sync that ended, start one if wanted and none is running."""
        self._reap()
        if self._wanted and self._process is None and time.monotonic() >= self._not_before:
            self._wanted = False
            self._start()

    def _reap(self) -> None:
        if self._process is None or (status := self._process.poll()) is None:
            return
        self._process = None
        self._last_ok = status == 0
        if not self._last_ok and not self.stopped:  # a stopped sync has had its warning
            self.failures += 1
            self._not_before = time.monotonic() + self.retry_seconds
            LOGGER.warning("anemoi-ckpt: the sync of %s into %s failed (exit status %d, see %s); training goes on, "
                           "the spool keeps what it could not register for `anemoi-ckpt sync %s`", self.spool,
                           self.catalogue, status, self.log, self.spool)

    def _start(self) -> None:
        command = [sys.executable, "-m", "anemoi_ckpt_nb", "sync", str(self.spool), "--catalogue", self.catalogue]
        if shutil.which("nice"):
            command = ["nice", "-n", "10", *command]  # the training process comes first
        environ = {k: v for k, v in os.environ.items() if k != "ANEMOI_CKPT_OFFLINE"}
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             env=environ, close_fds=True)
        self.runs += 1
