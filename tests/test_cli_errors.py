"""Errors reach the user as one line on stderr with a meaningful exit status."""

from __future__ import annotations

import pytest

from anemoi_ckpt_nb.cli._errors import EXIT_BUG, EXIT_ERROR, describe, report
from anemoi_ckpt_nb.errors import CheckpointReadError, MissingParentError


def test_our_errors_keep_their_message_and_hint():
    error = MissingParentError("abc", ["def"], hint="anemoi-ckpt register parent.ckpt")
    assert describe(error) == (
        "cannot register abc: its parent def is not in the catalogue (anemoi-ckpt register parent.ckpt)"
    )


def test_a_multi_line_message_of_another_library_becomes_one_line():
    error = ValueError("2 validation errors for Retention\nkeep_last\n  Input should be greater than 0")
    line = describe(error)
    assert "\n" not in line
    assert line == "ValueError: 2 validation errors for Retention keep_last Input should be greater than 0"


def test_os_errors_name_the_file():
    assert describe(FileNotFoundError(2, "No such file or directory", "/x/y.ckpt")) == (
        "/x/y.ckpt: No such file or directory"
    )


def test_report_prints_one_line_and_sets_the_exit_status(capsys, monkeypatch):
    monkeypatch.delenv("ANEMOI_CKPT_DEBUG", raising=False)
    assert report(CheckpointReadError("a.ckpt", "truncated")) == EXIT_ERROR
    assert report(RuntimeError("first\nsecond")) == EXIT_BUG
    err = capsys.readouterr().err.splitlines()
    assert err == ["anemoi-ckpt: error: a.ckpt: truncated", "anemoi-ckpt: error: RuntimeError: first second"]


def test_debug_mode_re_raises_for_the_traceback(monkeypatch):
    monkeypatch.setenv("ANEMOI_CKPT_DEBUG", "1")
    with pytest.raises(RuntimeError):
        report(RuntimeError("boom"))
