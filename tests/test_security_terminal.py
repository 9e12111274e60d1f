"""Names from files and catalogues never reach the terminal as control sequences (issue 18).

A run id holding a window-title OSC and a clear-screen sequence is registered, then every
command that shows it (``inspect``, ``ls``, ``show``, ``lineage``) is run as a user runs it:
what it prints carries the sequence escaped (``\\x1b``), never raw.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from anemoi_ckpt_nb import Catalogue, examples

HOSTILE_RUN = "run\x1b]0;owned\x07\x1b[2J\x9b31m\u202eend"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anemoi_ckpt_nb", *args],
        capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )


@pytest.fixture(scope="module")
def hostile_catalogue(tmp_path_factory):
    folder = tmp_path_factory.mktemp("terminal")
    ck = examples.write_training_checkpoint(folder / "a.ckpt", weights_bytes=20_000, run_id=HOSTILE_RUN)
    catalogue = Catalogue.create(folder / "catalogue")
    catalogue.register(ck.path, name="evil\x1b[2Jname")
    return ck, folder / "catalogue"


@pytest.mark.parametrize("command", ["inspect", "ls", "show", "lineage"])
def test_control_sequences_from_a_run_id_are_printed_escaped(hostile_catalogue, command):
    ck, url = hostile_catalogue
    if command == "inspect":
        result = cli("inspect", str(ck.path))
    elif command == "ls":
        result = cli("ls", "--catalogue", str(url))
    else:
        result = cli(command, ck.uuid, "--catalogue", str(url))
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr
    assert not any(raw in shown for raw in RAW), repr(shown)
    if command in ("inspect", "show"):
        assert "\\x1b]0;owned\\x07" in shown


def test_an_error_quoting_a_hostile_name_is_escaped(hostile_catalogue):
    ck, url = hostile_catalogue
    result = cli("show", "no\x1b[2Jsuch\rthing", "--catalogue", str(url))
    assert result.returncode == 2
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert "\\x1b[2J" in result.stderr
