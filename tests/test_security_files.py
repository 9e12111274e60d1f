"""Files planted or changed under our feet, and what a killed command leaves (issue 18).

* a ``.part`` file planted as a symlink is never opened through it;
* a registered checkpoint's local file is used only while it still holds the registered bytes;
* temporary files of a killed ``register``, ``replicate``, ``convert`` or ``download`` are removed
  by the next run or by ``clean --orphans`` (which also aborts stale S3 multipart uploads).

Public entry points only: ``anemoi_ckpt_nb.Catalogue``, ``anemoi_ckpt_nb.open_checkpoint``,
``anemoi_ckpt_nb.convert`` and the ``anemoi-ckpt`` command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from security_helpers import catalogue_with_one_checkpoint, run_cli

from anemoi_ckpt_nb import Catalogue, examples, open_checkpoint




@pytest.fixture
def registered(tmp_path):
    url = tmp_path / "catalogue"
    catalogue, ck = catalogue_with_one_checkpoint(url, tmp_path / "run", weights_bytes=200_000)
    return catalogue, ck, url


# --- 4. planted .part symlinks ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["download", "prefetch"])
def test_a_planted_part_symlink_is_never_written_through(registered, tmp_path, capsys, command):
    catalogue, ck, url = registered
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    target = tmp_path / "target"
    folder = target if command == "download" else target / ck.uuid
    folder.mkdir(parents=True)
    (folder / "a.ckpt.part").symlink_to(victim)
    if command == "download":
        code, out, err = run_cli(capsys, "download", ck.uuid, str(target), "--catalogue", str(url))
    else:
        code, out, err = run_cli(capsys, "prefetch", ck.uuid, "--cache", str(target), "--catalogue", str(url))
    assert victim.read_bytes() == b"precious"
    assert code in (0, 2), err
    if code == 0:
        assert (folder / "a.ckpt").read_bytes() == ck.path.read_bytes()
        assert not (folder / "a.ckpt").is_symlink()


def test_a_cached_file_planted_as_a_symlink_is_replaced_not_followed(registered, tmp_path, capsys):
    catalogue, ck, url = registered
    outside = tmp_path / "outside.ckpt"
    outside.write_bytes(ck.path.read_bytes())  # whole and right: still not ours to hand out
    folder = tmp_path / "cache" / ck.uuid
    folder.mkdir(parents=True)
    (folder / "a.ckpt").symlink_to(outside)
    code, out, err = run_cli(capsys, "prefetch", ck.uuid, "--cache", str(tmp_path / "cache"), "--catalogue", str(url))
    assert code == 0, err
    assert not (folder / "a.ckpt").is_symlink()
    assert (folder / "a.ckpt").read_bytes() == ck.path.read_bytes() and outside.exists()


# --- 6. a registered file overwritten with other bytes of the same size -------------------------


def test_convert_uses_the_registered_bytes_after_the_file_was_overwritten(tmp_path):
    url = tmp_path / "catalogue"
    catalogue = Catalogue.create(url)
    path = tmp_path / "run" / "last.ckpt"
    first = examples.write_training_checkpoint(path, weights_bytes=20_000, seed=1)
    kept = tmp_path / "kept.ckpt"
    kept.write_bytes(path.read_bytes())
    catalogue.register(path)
    # Training saves last.ckpt again: another checkpoint, the same size (the same shapes).
    second = examples.write_training_checkpoint(tmp_path / "next.ckpt", weights_bytes=20_000, seed=2, uuid=first.uuid)
    assert second.path.stat().st_size == path.stat().st_size
    assert second.path.read_bytes() != kept.read_bytes()
    os.replace(second.path, path)

    converted = catalogue.get(first.uuid).convert(tmp_path / "out")
    with open_checkpoint(converted.record.source.path) as out, open_checkpoint(kept) as source:
        for name in out.weights:
            assert (out.tensor(name) == source.tensor("model." + name)).all(), name


# --- 12. leftovers of killed commands ----------------------------------------------------------


def _hidden_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and (p.name.startswith(".tmp.") or p.name.endswith(".tmp"))]


def _kill_when(command: list[str], appeared, *, timeout: float = 120) -> None:
    """Start ``command`` and SIGKILL it as soon as ``appeared()`` is true (or it ends)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if appeared():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _big_checkpoint(tmp_path: Path) -> examples.ExampleCheckpoint:
    # Large enough that copying it takes a while on this machine, small enough for CI disks.
    return examples.write_training_checkpoint(tmp_path / "run" / "big.ckpt", weights_bytes=40_000_000)


CLI = [sys.executable, "-m", "anemoi_ckpt_nb"]


def test_temporaries_of_a_killed_register_are_removed_by_the_next_run(tmp_path, capsys):
    url = tmp_path / "catalogue"
    Catalogue.create(url)
    big = _big_checkpoint(tmp_path)
    _kill_when([*CLI, "register", str(big.path), "--catalogue", str(url)], lambda: bool(_hidden_temporaries(url / "blobs") if (url / "blobs").exists() else []))
    assert _hidden_temporaries(url), "the kill came too late to leave a temporary: the test proves nothing"
    small = examples.write_training_checkpoint(tmp_path / "run" / "small.ckpt", weights_bytes=20_000)
    code, out, err = run_cli(capsys, "register", str(small.path), "--catalogue", str(url))
    assert code == 0, err
    code, out, err = run_cli(capsys, "clean", "--orphans", "--apply", "--catalogue", str(url))
    assert code == 0, err
    assert _hidden_temporaries(url) == []


def test_temporaries_of_a_killed_replicate_are_removed(tmp_path, capsys):
    url = tmp_path / "catalogue"
    catalogue = Catalogue.create(url)
    big = _big_checkpoint(tmp_path)
    catalogue.register(big.path)
    site = tmp_path / "site"
    catalogue.add_site("shared", path=site)
    _kill_when([*CLI, "replicate", big.uuid, "--to", "shared", "--catalogue", str(url)],
               lambda: bool(_hidden_temporaries(site)) if site.exists() else False)
    assert _hidden_temporaries(site), "the kill came too late to leave a temporary: the test proves nothing"
    code, out, err = run_cli(capsys, "replicate", big.uuid, "--to", "shared", "--catalogue", str(url))
    assert code == 0, err
    assert _hidden_temporaries(site) == []


def test_temporaries_of_a_killed_convert_are_removed_by_the_next_run(tmp_path, capsys):
    big = _big_checkpoint(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _kill_when([*CLI, "convert", str(big.path), "-o", str(out_dir)], lambda: bool(_hidden_temporaries(out_dir)))
    assert _hidden_temporaries(out_dir), "the kill came too late to leave a temporary: the test proves nothing"
    code, out, err = run_cli(capsys, "convert", str(big.path), "-o", str(out_dir))
    assert code == 0, err
    assert _hidden_temporaries(out_dir) == []


def test_a_killed_download_leaves_only_a_resumable_part_that_the_next_run_finishes(tmp_path, capsys):
    url = tmp_path / "catalogue"
    catalogue = Catalogue.create(url)
    big = _big_checkpoint(tmp_path)
    catalogue.register(big.path)
    dest = tmp_path / "dest"
    dest.mkdir()
    _kill_when([*CLI, "download", big.uuid, str(dest), "--catalogue", str(url)],
               lambda: any(p.name.endswith(".part") and p.stat().st_size > 0 for p in dest.iterdir()))
    code, out, err = run_cli(capsys, "download", big.uuid, str(dest), "--catalogue", str(url))
    assert code == 0, err
    assert sorted(p.name for p in dest.iterdir()) == ["big.ckpt"]


@pytest.mark.s3
def test_clean_orphans_aborts_stale_multipart_uploads(s3_url, s3_env, capsys):
    Catalogue.create(s3_url)
    client = s3_env.client()
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    key = f"{prefix}/blobs/sha256/" + "0" * 64
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * (5 * 1024 * 1024))

    def uploads() -> list[str]:
        listed = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/")
        return [u["UploadId"] for u in listed.get("Uploads", [])]

    assert upload in uploads()
    code, dry, err = run_cli(capsys, "clean", "--orphans", "--orphan-age", "0", "--catalogue", s3_url)
    assert code == 0, err
    assert upload in uploads() and key.rsplit("/", 1)[-1] in dry
    code, out, err = run_cli(capsys, "clean", "--orphans", "--orphan-age", "0", "--apply", "--catalogue", s3_url)
    assert code == 0, err
    assert upload not in uploads()


_HOLDER = """
import sys, time
from anemoi_ckpt_nb.storage import temporaries
held = temporaries.create(sys.argv[1])
print(held.path, flush=True)
time.sleep(120)
"""


def test_clean_orphans_never_takes_a_temporary_a_live_process_holds(tmp_path, capsys):
    url = tmp_path / "catalogue"
    Catalogue.create(url)
    folder = url / "blobs" / "sha256"
    folder.mkdir(parents=True)
    dead = folder / ".tmp.killed"
    dead.write_bytes(b"x" * 1000)  # no process holds it: what a kill -9 leaves
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (folder / ".tmp.planted").symlink_to(victim)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        live = Path(holder.stdout.readline().strip())
        assert live.exists()
        code, dry, err = run_cli(capsys, "clean", "--orphans", "--catalogue", str(url))
        assert code == 0, err
        assert ".tmp.killed" in dry and ".tmp.planted" in dry and live.name not in dry
        assert dead.exists()  # a dry run removes nothing
        code, out, err = run_cli(capsys, "clean", "--orphans", "--apply", "--catalogue", str(url))
        assert code == 0, err
        assert not dead.exists() and not (folder / ".tmp.planted").is_symlink()
        assert live.exists() and victim.read_bytes() == b"precious"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # Its writer gone, the same temporary is a leftover like any other.
    code, out, err = run_cli(capsys, "clean", "--orphans", "--apply", "--catalogue", str(url))
    assert code == 0 and not live.exists(), out
