"""The callback's worker threads: a save waits until every file handed over is taken hold of.

The training thread only hands over the names of the files a save wrote; a thread of the worker
links or opens them. Until it has, the next save must not run: it would replace ``last.ckpt``
(Lightning writes it aside and renames it over), delete files beyond ``num_models_saved`` or
rewrite ``inference-last.ckpt`` in place, and the capture would take the wrong bytes or none.
No Lightning here: the worker is what the callback calls before each hook that may save.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from anemoi_ckpt_nb.runs.spool import Spool
from anemoi_ckpt_nb.training.worker import Worker


def test_a_save_waits_until_the_files_handed_over_are_taken_hold_of(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    run = tmp_path / "run"
    run.mkdir()
    # A file system that keeps the worker busy: opening a FIFO blocks until a writer opens it.
    slow = run / "slow.ckpt"
    os.mkfifo(slow)
    last = run / "last.ckpt"
    last.write_bytes(b"saved at step 10")

    worker = Worker(retry_delays=())
    worker.take(spool, [(slow, {"run_id": "r"}, None)], methods=("copy",))
    worker.take(spool, [(last, {"run_id": "r"}, None)])  # returns at once: the worker takes hold of it
    # Let the worker go on a little later; a save may run only once it has linked last.ckpt.
    threading.Timer(0.3, lambda: os.close(os.open(slow, os.O_WRONLY))).start()
    worker.wait_for_captures_at_risk()
    # The next save (Lightning's way: written aside, renamed over).
    (run / ".last.ckpt.tmp").write_bytes(b"saved at step 20")
    os.replace(run / ".last.ckpt.tmp", last)
    worker.close()

    taken = {Path(path).name: error for (path, _, _), error in worker.outcomes()}
    assert taken == {"slow.ckpt": None, "last.ckpt": None}
    entry = next(e for e in spool.entries() if e.source.endswith("last.ckpt"))
    assert entry.method == "link"
    assert (spool.path / entry.file).read_bytes() == b"saved at step 10"


def test_a_file_that_cannot_be_taken_hold_of_is_reported_and_does_not_hold_a_save(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    worker = Worker(retry_delays=())
    worker.take(spool, [(tmp_path / "gone.ckpt", {"run_id": "r"}, "k1")])
    worker.wait_for_captures_at_risk()
    outcomes = worker.outcomes()
    worker.close()
    assert [(path.name, key, type(error)) for (path, _, key), error in outcomes] == [
        ("gone.ckpt", "k1", FileNotFoundError)]
    assert worker.outcomes() == [] and spool.entries() == []


def test_a_save_that_rewrites_a_file_in_place_waits_until_its_bytes_are_copied(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    run = tmp_path / "run"
    run.mkdir()
    first, last = run / "inference-epoch_001.ckpt", run / "inference-last.ckpt"
    first.write_bytes(b"model at epoch 1")
    last.write_bytes(b"model at step 10" * 1000)
    # The copying thread is held up (after its first entry) until a little later.
    go_on = threading.Event()
    worker = Worker(retry_delays=(), on_finished=lambda entry: go_on.wait())
    worker.take(spool, [(first, {"run_id": "r"}, None), (last, {"run_id": "r"}, None)])
    threading.Timer(0.3, go_on.set).start()
    worker.wait_for_captures_at_risk()
    # The next save (torch.save to the same path: truncated, then written).
    with open(last, "r+b") as fh:
        fh.truncate(0)
        fh.write(b"model at step 20")
    worker.close()

    entries = {Path(e.source).name: e for e in spool.entries()}
    assert entries[last.name].method == "copy"  # never linked: a link would change with it
    assert (spool.path / entries[last.name].file).read_bytes() == b"model at step 10" * 1000
    assert (spool.path / entries[first.name].file).read_bytes() == b"model at epoch 1"


def test_the_copy_a_save_waits_for_is_made_before_the_other_captures_of_its_save(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    run = tmp_path / "run"
    run.mkdir()
    names = ["last.ckpt", "inference-epoch_001.ckpt", "inference-last.ckpt"]  # as the callback hands them over
    for name in names:
        (run / name).write_bytes(name.encode())
    finished = []
    worker = Worker(retry_delays=(), on_finished=lambda entry: finished.append(Path(entry.source).name))
    worker.take(spool, [(run / name, {"run_id": "r"}, None) for name in names])
    worker.close()
    assert finished == ["inference-last.ckpt", "last.ckpt", "inference-epoch_001.ckpt"]
    # The keys keep the order the files were handed over in (the spool lists entries by key).
    assert [Path(e.source).name for e in spool.entries()] == names
