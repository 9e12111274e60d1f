"""The training callback's background sync is started by the training thread only.

A ``subprocess.Popen`` made on one thread while another thread forks (the training thread forks
the DataLoader's worker processes) hands the forked process a copy of the pipe through which Popen
learns that its child has started: Popen then waits as long as that process lives. The spool's
worker thread once started the sync so, holding the sync's lock, while the training thread forked
the DataLoader's workers and then waited for that lock: the real anemoi-training test hung (6
December 2026). :meth:`BackgroundSync.kick` (any thread) now only asks; :meth:`BackgroundSync.poll`
(the training thread) starts.

Real parts: the real ``anemoi-ckpt sync`` child process, a real spool and catalogue folder, real forks.
"""

from __future__ import annotations

import os
import threading
import time

from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.runs.capture import prepare
from anemoi_ckpt_nb.runs.spool import Spool
from anemoi_ckpt_nb.training.background import BackgroundSync

MAX_CHILDREN = 300


def _background(example_project, tmp_path) -> BackgroundSync:
    Catalogue.create(str(tmp_path / "catalogue"))
    spool = Spool(tmp_path / "spool")
    prepare(spool, example_project["base"][0].path, methods=("copy",)).finish(tags=[])  # one capture to register
    return BackgroundSync(spool.path, str(tmp_path / "catalogue"), end_wait=120.0)


def test_a_kick_from_another_thread_starts_no_process_the_training_threads_poll_does(example_project, tmp_path):
    background = _background(example_project, tmp_path)
    kicker = threading.Thread(target=background.kick)
    kicker.start()
    kicker.join()
    assert background.runs == 0 and background._process is None  # asked, not started
    background.poll()
    assert background.runs == 1 and background._process is not None
    assert background.close() is True  # waited for it, and it registered the capture
    assert not Spool.open(background.spool).pending()
    assert background.runs == 1 and background._process is None


def test_forks_of_the_training_thread_never_hold_a_sync_start(example_project, tmp_path):
    """The hang as it happened: the spool's worker thread reports captures while the training thread
    forks long-lived children (as the DataLoader does) and polls. Each child holds whatever
    descriptors were open when it was forked, until the test releases it."""
    background = _background(example_project, tmp_path)
    release_read, release_write = os.pipe()
    children = []
    reported = threading.Event()

    def report_captures() -> None:  # the spool's worker thread: a capture, then its sync, three times
        for _ in range(3):
            started = background.runs
            background.kick()
            while background.runs == started and len(children) < MAX_CHILDREN:
                time.sleep(0.001)
        reported.set()

    def train() -> None:  # the training thread: forks and hooks, in turn
        while not reported.is_set() and len(children) < MAX_CHILDREN:
            pid = os.fork()
            if pid == 0:  # a DataLoader worker: lives until released
                os.close(release_write)
                os.read(release_read, 1)
                os._exit(0)
            children.append(pid)
            background.poll()

    worker = threading.Thread(target=report_captures)
    training = threading.Thread(target=train)
    worker.start()
    training.start()
    try:
        # A deadlock detector, not a timing: the threads do at most a few hundred forks and polls.
        training.join(timeout=120)
        worker.join(timeout=120)
        hung = training.is_alive() or worker.is_alive()
    finally:
        os.close(release_write)  # every child reads EOF and ends
        for pid in children:
            os.waitpid(pid, 0)
        os.close(release_read)
        training.join()
        worker.join()
    assert not hung, "a sync's start waited for a forked child"
    assert background.runs >= 1
    assert background.close() is True
