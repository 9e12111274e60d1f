"""What a conversion does before and while the kernel copies the weights (issue 16: `convert` with the hash known).

The weights' copy is what the output's hash follows, so everything before it is on the command's
critical path: numpy (for the supporting arrays and the model inputs) is imported after the copy,
a single input's pickle is read once, and the disk starts writing the copy before the final fsync.
The command's process asks OpenBLAS (loaded by numpy) for no threads of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.conversion import batch, output
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.storage.hashing import sha256_file

FIRST_COPY = r"""
import os, sys
from anemoi_ckpt_nb.conversion.convert import convert
real, seen = os.copy_file_range, []
def spy(*args):
    seen.append("numpy" in sys.modules)
    return real(*args)
os.copy_file_range = spy
result = convert(sys.argv[1], sys.argv[2])
print(seen[0], "numpy" in sys.modules, result.metadata["supporting_arrays_paths"] != {})
"""


#: The convert command as the console script runs it (``main()`` reads ``sys.argv``), or as a caller
#: that goes on does (``main([...])``); at its end, the process's threads and its OpenBLAS setting.
CLI_THREADS = r"""
import os, sys
from anemoi_ckpt_nb.cli import main
argv = ["convert", sys.argv[2], "-o", sys.argv[3]]
if sys.argv[1] == "script":
    sys.argv = ["anemoi-ckpt", *argv]
    status = main()
else:
    status = main(argv)
print(status, len(os.listdir("/proc/self/task")), "numpy" in sys.modules, os.environ.get("OPENBLAS_NUM_THREADS"))
"""


@pytest.fixture
def source(tmp_path):
    return examples.write_training_checkpoint(tmp_path / "t.ckpt", weights_bytes=3_000_000).path


def test_numpy_is_imported_only_after_the_weights_are_copied(source, tmp_path):
    """A process of its own: numpy must not be imported yet when the first weight is copied."""
    done = subprocess.run([sys.executable, "-c", FIRST_COPY, str(source), str(tmp_path / "out")],
                          capture_output=True, text=True, check=True)
    before_copy, at_end, has_arrays = done.stdout.split()
    assert (before_copy, at_end, has_arrays) == ("False", "True", "True")  # the arrays were written, with numpy


def test_a_single_input_is_opened_once_and_each_of_a_batch_twice(source, tmp_path, monkeypatch):
    opened = []
    real = batch._open

    def counting(path, target):
        opened.append(path)
        return real(path, target)

    monkeypatch.setattr(batch, "_open", counting)
    [one] = batch.convert_many([source], tmp_path / "one")
    assert one.ok and opened == [source]

    other = examples.write_training_checkpoint(tmp_path / "u.ckpt", weights_bytes=100_000, seed=1).path
    opened.clear()
    outcomes = batch.convert_many([source, other], tmp_path / "two")
    assert all(outcome.ok for outcome in outcomes)
    assert sorted(opened) == sorted([source, source, other, other])  # measured and closed, then converted


def test_the_disk_starts_writing_the_copy_before_the_fsync(source, tmp_path, monkeypatch):
    events = []
    real_writeback, real_fsync = output.start_writeback, os.fsync

    def writeback(fd, offset, size):
        started = real_writeback(fd, offset, size)
        events.append(("writeback", offset, size, started))
        return started

    def fsync(fd):
        events.append(("fsync",))
        return real_fsync(fd)

    monkeypatch.setattr(output, "WRITEBACK_PIECE", 1 << 20)
    monkeypatch.setattr(output, "start_writeback", writeback)
    monkeypatch.setattr(os, "fsync", fsync)
    result = convert(source, tmp_path / "out")

    asked = [event for event in events if event[0] == "writeback"]
    assert len(asked) >= 2 and events.index(asked[-1]) < events.index(("fsync",))
    assert all(started for *_, started in asked)  # sync_file_range is there on Linux
    ends = [0] + [offset + size for _, offset, size, _ in asked]
    assert [offset for _, offset, _, _ in asked] == ends[:-1]  # one run from the file's start, nothing twice
    assert result.sha256 == sha256_file(result.destination)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2,
                    reason="counts a Linux process's threads; OpenBLAS starts none on one core")
def test_the_convert_command_leaves_no_thread_behind_numpy_included(source, tmp_path):
    """OpenBLAS, which numpy loads, would start a thread per core (spinning a while for work)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", CLI_THREADS, "script", str(source), str(tmp_path / "out")],
                          capture_output=True, text=True, check=True, env=env)
    assert done.stdout.split()[-4:] == ["0", "1", "True", "1"]  # status, threads, numpy, OPENBLAS_NUM_THREADS


def test_a_caller_that_goes_on_keeps_its_environment(source, tmp_path, monkeypatch):
    """main([...]) (the magics' and tests' way in) and the Python API set nothing: a notebook's kernel
    would keep it, and every process it starts would inherit it."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", CLI_THREADS, "list", str(source), str(tmp_path / "cli")],
                          capture_output=True, text=True, check=True, env=env)
    assert done.stdout.split()[-4:][::2] == ["0", "True"] and done.stdout.split()[-1] == "None"
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    convert(source, tmp_path / "api")
    assert "OPENBLAS_NUM_THREADS" not in os.environ


@pytest.mark.parametrize("format", ["anemoi", "safetensors"])
def test_the_output_is_reopened_and_checked_while_its_hash_catches_up(source, tmp_path, monkeypatch, format):
    """Its structure, metadata and model inputs are checked before waiting for the read-back and its hash."""
    from anemoi_ckpt_nb.read import reader

    events = []
    real_open, real_finish = reader.open_checkpoint, output.OutputFile.finish

    def opening(path, *args, **kwargs):
        events.append(("open", os.path.basename(path)))
        return real_open(path, *args, **kwargs)

    def finish(self):
        events.append(("finish",))
        return real_finish(self)

    monkeypatch.setattr(reader, "open_checkpoint", opening)
    monkeypatch.setattr(output.OutputFile, "finish", finish)
    result = convert(source, tmp_path / "out", format=format)
    reopened = [event for event in events if event[0] == "open" and event[1].startswith(".")]  # the temporary
    assert reopened and events.index(reopened[0]) < events.index(("finish",))
    assert events.count(("finish",)) == 1
    assert result.sha256 == sha256_file(result.destination)
