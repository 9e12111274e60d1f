"""A catalogue that cannot be reached: ``sync`` stops at once and keeps everything; the training
callback's sync in a child process cannot hold a finished job.

Real parts: the SeaweedFS server stopped under a sync (connections refused), and a server that
accepts connections and never answers (a firewall or a hung proxy: every request waits for its
read time-out), on loopback.
"""

from __future__ import annotations

import logging

import pytest

from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.runs.capture import prepare
from anemoi_ckpt_nb.runs.spool import Spool
from anemoi_ckpt_nb.runs.sync import sync_spool
from anemoi_ckpt_nb.training.background import BackgroundSync


def _spool_of(example_project, path) -> Spool:
    spool = Spool(path)
    for checkpoint in example_project["base"]:
        prepare(spool, checkpoint.path, methods=("copy",)).finish(tags=[])
    return Spool.open(path)


@pytest.mark.s3
def test_sync_stops_at_the_first_entry_when_the_catalogue_is_lost_and_keeps_every_entry(
        example_project, s3_env, s3_url, tmp_path):
    catalogue = Catalogue.create(s3_url)
    spool = _spool_of(example_project, tmp_path / "spool")
    pending = sorted(e.key for e in spool.pending())
    assert len(pending) >= 2
    seen = []
    s3_env.stop()  # the connection is lost after the catalogue was opened
    try:
        report = sync_spool(catalogue.store, spool, on_entry=lambda entry, outcome, detail: seen.append(outcome))
    finally:
        s3_env.start()
    # One entry was tried, none is marked failed (nothing is wrong with them), all stay pending.
    assert "unreachable" in report.stopped and not report.ok
    assert (report.registered, report.failed, report.waiting, seen) == ({}, {}, {}, [])
    assert sorted(report.left) == pending  # the one tried and the others: none registered
    assert sorted(e.key for e in spool.pending()) == pending
    assert [state for _, state, _ in spool.status()] == ["pending"] * len(pending)
    # Once it can be reached again, the next sync registers them all.
    again = sync_spool(catalogue.store, Spool.open(spool.path))
    assert again.ok and not again.stopped and sorted(again.registered) == pending


def test_the_end_of_training_waits_for_a_hung_sync_at_most_end_wait_then_stops_it(
        example_project, silent_endpoint, tmp_path, monkeypatch, caplog):
    for name, value in {"AWS_ENDPOINT_URL": silent_endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                        "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ANEMOI_CKPT_OFFLINE", raising=False)
    spool = _spool_of(example_project, tmp_path / "spool")
    pending = sorted(e.key for e in spool.pending())
    background = BackgroundSync(spool.path, "s3://bucket/catalogue", end_wait=1.0)
    background.kick()
    background.poll()  # a sync starts; its first request waits for a read time-out of a minute
    child = background._process
    assert child is not None and child.poll() is None
    with caplog.at_level(logging.WARNING, logger="anemoi_ckpt_nb.training"):
        assert background.close() is False
    # Stopped, not waited for: the child has ended on SIGTERM (a wait for its time-outs would not).
    assert background.stopped and child.returncode is not None and child.returncode < 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stopped it so the job can end" in warnings[0], warnings
    assert str(spool.path) in warnings[0]
    # Nothing lost: every capture is still pending, and a sync that can reach a catalogue registers it.
    assert sorted(e.key for e in Spool.open(spool.path).pending()) == pending
    local = Catalogue.create(str(tmp_path / "catalogue"))
    report = sync_spool(local.store, Spool.open(spool.path))
    assert report.ok and sorted(report.registered) == pending


def test_end_wait_must_not_be_negative():
    from anemoi_ckpt_nb.training import RegisterCheckpoints

    with pytest.raises(ValueError, match="end_wait must be 0 or more"):
        RegisterCheckpoints(end_wait=-1)
