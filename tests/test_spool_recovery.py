"""The spool when things go wrong: a training process killed mid-capture, a spool that refuses writes.

A killed capture leaves bytes without an entry (an orphan): ``sync`` keeps it while it may be a
capture under way, removes it once unchanged for ``--orphan-age`` hours, and ``--dry-run`` says so
first. A capture that fails is a warning and a retry, bounded: on a real read-only spool (the
subject runs in a child held to the permission bits, ``rootless.py``), made writable again while
the retries go on. A copy cut short by a write error (a file-size limit, as a full disk) leaves no
partial file, and the retry takes it whole. ``anemoi-ckpt info`` shows what a spool holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.runs.capture import prepare
from anemoi_ckpt_nb.runs.spool import FILES, Spool
from rootless import held_to_permissions

ROOT = Path(__file__).resolve().parent.parent


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# The child captures one file and is killed at a known point: after the first chunk of a copy, or
# once a hard link is made, before the worker would write the entry.
KILLED_CAPTURE = textwrap.dedent("""
    import os, sys, time
    from anemoi_ckpt_nb.runs import capture
    from anemoi_ckpt_nb.runs.spool import Spool

    spool, source, method, ready = sys.argv[1:5]
    taken = capture.prepare(Spool(spool), source, methods=(method,))
    if method == "copy":
        read, kernel = os.preadv, getattr(os, "copy_file_range", None)
        def hold(offset):
            if offset:  # one chunk is in the .part file: hold here until killed
                open(ready, "w").close()
                time.sleep(600)
        def preadv(fd, buffers, offset):
            hold(offset)
            return read(fd, buffers, offset)
        def copy_file_range(source, out, count, offset_src, offset_dst):
            hold(offset_src)
            return kernel(source, out, count, offset_src, offset_dst)
        os.preadv = preadv
        if kernel is not None:  # the copy is the kernel's where it can
            os.copy_file_range = copy_file_range
    else:
        open(ready, "w").close()
        time.sleep(600)
    taken.finish()
""")


def _killed_capture(spool: Path, source: Path, method: str, tmp_path: Path) -> None:
    ready = tmp_path / f"ready-{method}"
    child = subprocess.Popen([sys.executable, "-c", KILLED_CAPTURE, str(spool), str(source), method, str(ready)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(ready, child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)


def _age(folder: Path, seconds: float) -> None:
    """Make everything in an orphan's folder look unchanged for ``seconds``."""
    then = time.time() - seconds
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (then, then))


def test_a_capture_cut_short_by_a_kill_is_an_orphan_sync_removes_once_old(example_project, tmp_path, capsys):
    catalogue = Catalogue.create(str(tmp_path / "catalogue"))
    spool = Spool(tmp_path / "spool", catalogue=catalogue.url)
    saved = example_project["base"][0].path
    entry = prepare(spool, saved).finish()  # a capture that went well
    big = tmp_path / "big.ckpt"
    big.write_bytes(os.urandom(1024) * (20 * 1024))  # 20 MiB: more than one chunk of the copy
    _killed_capture(spool.path, big, "copy", tmp_path)
    _killed_capture(spool.path, example_project["base"][1].path, "link", tmp_path)

    orphans = {o.names[0]: o for o in spool.orphans()}
    assert set(orphans) == {".big.ckpt.part", example_project["base"][1].path.name}
    assert 0 < orphans[".big.ckpt.part"].size < big.stat().st_size  # cut short mid-copy
    assert main(["sync", str(spool.path), "--list"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("orphan ") == 2 and f"done" not in listed and "pending" in listed

    # Young orphans may be captures under way: kept, said so; the good entry is registered.
    assert main(["sync", str(spool.path)]) == 0
    out = capsys.readouterr().out
    assert "1 registered" in out and out.count("orphan kept:") == 2 and "maybe a capture under way" in out
    assert all(o.path.is_dir() for o in orphans.values())
    assert spool.is_done(entry.key)

    # The copy cut short is two days old: a dry run names it and removes nothing ...
    _age(orphans[".big.ckpt.part"].path, 2 * 86400)
    assert main(["sync", str(spool.path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"orphan to remove: {orphans['.big.ckpt.part'].path}" in out and "nothing done" in out
    assert "orphan kept:" in out and orphans[".big.ckpt.part"].path.is_dir()
    # ... sync removes it and keeps the young one; with --orphan-age 0 that one goes too.
    assert main(["sync", str(spool.path)]) == 0
    out = capsys.readouterr().out
    assert "1 orphan(s) removed" in out and not orphans[".big.ckpt.part"].path.exists()
    assert orphans[example_project["base"][1].path.name].path.is_dir()
    assert main(["sync", str(spool.path), "--orphan-age", "0"]) == 0
    assert "1 orphan(s) removed" in capsys.readouterr().out
    assert spool.orphans() == [] and not any((spool.path / FILES).iterdir())
    assert saved.is_file() and example_project["base"][1].path.is_file()  # the run's own files are untouched
    assert len(catalogue.entries()) == 1


# The worker, in a child held to the permission bits: its first capture meets a read-only
# entries/ folder, made writable again after the first failure; the second one never does.
RETRIED_CAPTURE = textwrap.dedent("""
    import json, logging, os, sys, time
    from pathlib import Path
    from anemoi_ckpt_nb.runs.capture import prepare
    from anemoi_ckpt_nb.runs.spool import Spool
    from anemoi_ckpt_nb.training.worker import Worker

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    spool, first, second = Spool(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    spool.ensure()
    entries = spool.path / "entries"
    entries.mkdir()
    os.chmod(entries, 0o555)

    def until(check):
        deadline = time.monotonic() + 120
        while not check():
            assert time.monotonic() < deadline
            time.sleep(0.02)

    worker = Worker(retry_delays=(0.3, 0.3, 60))
    worker.submit(prepare(spool, first, methods=("copy",)), {"run_id": "r1"})
    until(lambda: worker.retried)
    first.unlink()  # copied at the first attempt: only the entry is left to write
    os.chmod(entries, 0o755)
    until(lambda: worker.finished)
    os.chmod(entries, 0o555)
    worker.retry_delays = (0.1, 0.1)
    worker.submit(prepare(spool, second, methods=("link",)), {"run_id": "r2"})
    until(lambda: worker.failed)
    worker.close()
    print(json.dumps({"finished": [e.key for e in worker.finished], "retried": worker.retried, "failed": worker.failed}))
""")


def test_a_failed_capture_is_retried_until_the_spool_takes_it_and_given_up_after_the_last_try(example_project, tmp_path):
    first, second = tmp_path / "last.ckpt", tmp_path / "anemoi-by_epoch-epoch_001.ckpt"
    first.write_bytes(example_project["base"][0].path.read_bytes())
    second.write_bytes(example_project["base"][1].path.read_bytes())
    expected = first.read_bytes()
    spool = Spool(tmp_path / "spool")
    done = subprocess.run([sys.executable, "-c", RETRIED_CAPTURE, str(spool.path), str(first), str(second)],
                          capture_output=True, text=True, timeout=300, preexec_fn=held_to_permissions(),
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.chmod(spool.path / "entries", 0o755)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    log = done.stderr
    assert "permission denied" in log and "trying again in 0.3 s (attempt 2 of 4)" in log
    (entry,) = spool.entries()
    assert result["finished"] == [entry.key] and entry.run_id == "r1"
    assert (spool.path / entry.file).read_bytes() == expected and entry.sha256  # whole, though the source is gone
    # Bounded: three attempts, then a warning naming the file, and its captured bytes let go.
    assert len(result["failed"]) == 1 and str(second) in result["failed"][0]
    assert f"could not capture {second} into the spool after 3 attempt(s)" in log
    assert spool.orphans() == [] and [p.name for p in (spool.path / FILES).iterdir()] == [entry.key]
    assert second.is_file()  # the run's file itself is left alone


def test_info_shows_what_the_spool_holds(example_project, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANEMOI_CKPT_SPOOL", raising=False)
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spool"] == {"value": None, "source": "default"}
    spool = Spool(tmp_path / "spool", catalogue="s3://bucket/catalogue")
    files = [c.path for c in example_project["base"]]
    entries = [prepare(spool, path, methods=("copy",)).finish() for path in files]
    _killed_capture(spool.path, files[0], "link", tmp_path)
    monkeypatch.setenv("ANEMOI_CKPT_SPOOL", str(spool.path))
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["spool"]
    assert info["value"] == str(spool.path) and info["source"] == "environment ANEMOI_CKPT_SPOOL"
    assert info["pending"] == len(files) and info["failed"] == 0 and info["done"] == 0
    assert info["pending_bytes"] == sum(p.stat().st_size for p in files)
    assert info["oldest_pending"] == entries[0].captured_at and info["orphans"] == 1
    assert info["catalogue"] == "s3://bucket/catalogue"

    assert main(["info", "--spool", str(tmp_path / "nothing-yet")]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("spool"))
    assert str(tmp_path / "nothing-yet") in line and "no spool there yet" in line
    assert main(["info"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("spool"))
    assert f"{len(files)} pending" in line and "oldest captured " + entries[0].captured_at in line
    assert "1 orphan" in line and "anemoi-ckpt sync" in line


# The child copies a file into the spool under a file-size limit (RLIMIT_FSIZE, soft) below its size:
# the write fails as on a full disk (EFBIG, SIGXFSZ ignored), then the limit is lifted and it tries again.
FULL_CAPTURE = textwrap.dedent("""
    import json, os, resource, signal, sys
    from anemoi_ckpt_nb.runs.capture import prepare
    from anemoi_ckpt_nb.runs.spool import FILES, Spool

    spool, source = Spool(sys.argv[1]), sys.argv[2]
    taken = prepare(spool, source, methods=("copy",))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        taken.finish(run_id="r1")
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = None
    left = sorted(p.name for p in (spool.path / FILES / taken.key).iterdir())
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    entry = taken.finish(run_id="r1")
    print(json.dumps({"error": error, "left": left, "file": entry.file, "sha256": entry.sha256}))
""")


def test_a_copy_that_fails_midway_leaves_no_partial_file_and_a_retry_takes_it_whole(example_project, tmp_path):
    source = tmp_path / "last.ckpt"
    source.write_bytes(example_project["base"][0].path.read_bytes())
    assert source.stat().st_size > 64 * 1024  # larger than the limit the child sets
    spool = Spool(tmp_path / "spool")
    done = subprocess.run([sys.executable, "-c", FULL_CAPTURE, str(spool.path), str(source)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error"] and "too large" in result["error"].lower(), result
    assert result["left"] == []  # no .last.ckpt.part: the failed copy took its partial bytes away
    (entry,) = spool.entries()
    assert entry.file == result["file"] and (spool.path / entry.file).read_bytes() == source.read_bytes()
    assert entry.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert spool.orphans() == []
