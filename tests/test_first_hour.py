"""The rough edges a new user meets in the first hour (issue 15), one test each; its hints: test_first_hour_hints.py."""

from __future__ import annotations

import json

import pytest

from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def registered(tmp_path, training_checkpoint):
    """A local catalogue with the session's training checkpoint registered as ``mine``."""
    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path, name="mine")
    return catalogue, checkpoint


def test_show_metadata_without_json_prints_the_metadata(capsys, registered):
    catalogue, checkpoint = registered
    code, out, _ = run_cli(capsys, "show", "mine", "--metadata", "--catalogue", catalogue.url)
    assert code == 0
    summary, _, metadata = out.partition("\nmetadata\n")
    assert "uuid" in summary and json.loads(metadata)["uuid"] == checkpoint.metadata()["uuid"]
    # Without --metadata, none of it.
    code, out, _ = run_cli(capsys, "show", "mine", "--catalogue", catalogue.url)
    assert "\nmetadata\n" not in out and '"data_indices"' not in out


def test_site_ls_shows_the_description_it_promises(capsys, tmp_path, registered):
    catalogue, _ = registered
    code, _, _ = run_cli(capsys, "site", "add", "lumi", "--path", str(tmp_path / "lumi"),
                         "--description", "LUMI scratch, purged after 90 days", "--catalogue", catalogue.url)
    assert code == 0
    code, out, _ = run_cli(capsys, "site", "ls", "--catalogue", catalogue.url)
    assert code == 0
    lumi = next(line for line in out.splitlines() if line.startswith("lumi"))
    assert "LUMI scratch, purged after 90 days" in lumi


# --- where things go: folders, names -----------------------------------------------------------


def test_a_trailing_slash_means_a_folder_for_download_and_fetch(capsys, tmp_path, registered, monkeypatch):
    catalogue, checkpoint = registered
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_cli(capsys, "download", "mine", "here/", "--catalogue", catalogue.url)
    assert code == 0
    assert (tmp_path / "here").is_dir() and (tmp_path / "here" / checkpoint.filename).is_file()
    result = catalogue.get("mine").fetch("here2/")
    assert result.path.resolve() == tmp_path / "here2" / checkpoint.filename and result.path.is_file()
    # Without the slash, a missing name is the file's new name, as with cp.
    code, _, _ = run_cli(capsys, "download", "mine", "copy.ckpt", "--catalogue", catalogue.url)
    assert code == 0 and (tmp_path / "copy.ckpt").is_file()


def test_inputs_from_several_run_folders_keep_their_run_folder(capsys, tmp_path, example_project, monkeypatch):
    # anemoi-training's layout: <run id>/anemoi-by_epoch-...ckpt, the same names in every run folder.
    root = example_project["base"][0].path.parent.parent
    runs = {c.path.parent.name for group in example_project.values() for c in group}
    assert len(runs) == 2
    code, out, err = run_cli(capsys, "convert", str(root / "*" / "*epoch_001*.ckpt"), "-o", str(tmp_path / "inference"))
    assert code == 0, err
    written = sorted(p.relative_to(tmp_path / "inference").as_posix() for p in (tmp_path / "inference").rglob("*.ckpt"))
    assert written == sorted(f"{run}/inference-anemoi-by_epoch-epoch_001-step_000100.ckpt" for run in runs)
    # Inputs from one folder stay flat.
    one_run = example_project["forked"][0].path.parent
    code, _, err = run_cli(capsys, "convert", str(one_run / "*.ckpt"), "-o", str(tmp_path / "flat"))
    assert code == 0, err
    assert {p.parent for p in (tmp_path / "flat").rglob("*.ckpt")} == {tmp_path / "flat"}


def test_python_convert_creates_a_missing_output_folder_as_the_command_does(tmp_path, training_checkpoint):
    from anemoi_ckpt_nb import convert

    result = convert(training_checkpoint.path, f"{tmp_path}/inference/")
    assert result.destination.parent == tmp_path / "inference" and result.destination.is_file()


def test_upgrade_into_an_existing_folder_writes_inside_it(capsys, tmp_path, training_checkpoint):
    out = tmp_path / "upgraded"
    out.mkdir()
    code, _, err = run_cli(capsys, "upgrade", str(training_checkpoint.path), f"{out}/")
    assert code == 0, err
    assert (out / training_checkpoint.path.name).is_file()


def test_validate_of_a_registered_checkpoint_suggests_commands_that_work(capsys, tmp_path, registered, monkeypatch):
    import re
    import shlex

    catalogue, checkpoint = registered
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "validate", "mine", "--catalogue", catalogue.url)
    # The upgrade advice names the registered checkpoint: those commands must run as written.
    suggested = [c for c in re.findall(r"`(anemoi-ckpt [^`]+)`", out) if c.split()[1] in ("download", "upgrade")]
    assert any(" upgrade " in command for command in suggested), out
    for command in suggested:
        words = [w.replace("OUT", str(tmp_path / "upgraded.ckpt")) for w in shlex.split(command)[1:]]
        code, _, err = run_cli(capsys, *words, *(["--catalogue", catalogue.url] if words[0] == "download" else []))
        assert code == 0, (command, err)


# --- what the commands say ----------------------------------------------------------------------


def test_a_prefix_shorter_than_four_characters_is_explained(capsys, registered):
    catalogue, checkpoint = registered
    code, _, err = run_cli(capsys, "show", checkpoint.uuid[:3], "--catalogue", catalogue.url)
    assert code == 2 and "4" in err and "characters" in err


def test_registering_again_under_another_name_says_the_name_did_not_change(capsys, registered, training_checkpoint):
    catalogue, checkpoint = registered
    code, out, err = run_cli(capsys, "register", str(training_checkpoint.path), "--name", "other",
                             "--catalogue", catalogue.url)
    assert "mine" in out + err and "other" in err
    assert not out.startswith("registered:")
    assert catalogue.get(checkpoint.uuid).name == "mine"


def test_removing_a_tag_that_is_not_there_says_so(capsys, registered):
    catalogue, checkpoint = registered
    code, out, err = run_cli(capsys, "tag", "--catalogue", catalogue.url, "mine", "-missing", "+new")
    assert code == 0 and "new" in out
    assert "missing" in err and "not" in err


def test_a_second_prefetch_says_it_was_already_cached(capsys, tmp_path, registered):
    catalogue, checkpoint = registered
    args = ["prefetch", "mine", "--cache", str(tmp_path / "cache"), "--catalogue", catalogue.url]
    code, first, _ = run_cli(capsys, *args)
    assert code == 0
    code, second, _ = run_cli(capsys, *args)
    assert code == 0 and "already" in second and "fetched" not in second


def test_prefetch_and_local_path_share_one_cache_folder(capsys, tmp_path, monkeypatch, training_checkpoint):
    monkeypatch.delenv("ANEMOI_CKPT_CACHE", raising=False)
    catalogue = Catalogue.create(tmp_path / "catalogue")
    original = tmp_path / "moved-away.ckpt"
    original.write_bytes(training_checkpoint.path.read_bytes())
    checkpoint = catalogue.register(original, name="mine")
    original.unlink()  # gone from this machine: local_path downloads it
    expected = tmp_path / "xdg-cache" / "anemoi-ckpt-nb" / "checkpoints" / checkpoint.uuid / "moved-away.ckpt"

    assert checkpoint.local_path() == expected
    code, out, _ = run_cli(capsys, "prefetch", "mine", "--catalogue", catalogue.url)
    assert code == 0 and "already" in out and str(expected) in out
    assert [path.name for path in (tmp_path / "xdg-cache").iterdir()] == ["anemoi-ckpt-nb"]


# --- one place that says where things are -----------------------------------------------------


def test_info_says_where_each_setting_comes_from(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ANEMOI_CKPT_CATALOGUE")
    monkeypatch.delenv("ANEMOI_CKPT_CACHE", raising=False)
    code, out, _ = run_cli(capsys, "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["catalogue"]["source"] == "default"
    assert info["catalogue"]["value"] == str(tmp_path / "xdg-data" / "anemoi-ckpt-nb" / "catalogue")
    assert info["catalogue"]["exists"] is False
    assert info["cache"]["source"] == "default" and info["cache"]["value"].startswith(str(tmp_path / "xdg-cache"))
    assert info["site"] == {"value": None, "source": "default"}
    assert info["offline"] == {"value": False, "source": "default"}

    monkeypatch.setenv("ANEMOI_CKPT_CATALOGUE", str(tmp_path / "from-env"))
    monkeypatch.setenv("ANEMOI_CKPT_OFFLINE", "1")
    monkeypatch.setenv("ANEMOI_CKPT_SITE", "lumi")
    info = json.loads(run_cli(capsys, "info", "--json")[1])
    assert info["catalogue"] == {"value": str(tmp_path / "from-env"), "source": "environment ANEMOI_CKPT_CATALOGUE",
                                 "exists": False}
    assert info["offline"] == {"value": True, "source": "environment ANEMOI_CKPT_OFFLINE"}
    assert info["site"] == {"value": "lumi", "source": "environment ANEMOI_CKPT_SITE"}

    Catalogue.create(tmp_path / "given")
    code, out, _ = run_cli(capsys, "--catalogue", str(tmp_path / "given"), "info", "--cache", str(tmp_path / "c"))
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert str(tmp_path / "given") in lines["catalogue"] and "option --catalogue" in lines["catalogue"]
    assert str(tmp_path / "c") in lines["cache"] and "option --cache" in lines["cache"]


def test_the_default_catalogue_is_created_by_the_first_write_and_says_where(capsys, tmp_path, monkeypatch,
                                                                            training_checkpoint):
    monkeypatch.delenv("ANEMOI_CKPT_CATALOGUE")
    default = tmp_path / "xdg-data" / "anemoi-ckpt-nb" / "catalogue"
    code, out, err = run_cli(capsys, "ls")
    assert code == 0 and not default.exists(), "a read-only command must not create the catalogue"
    assert str(default) in out + err
    # Nor one that changes checkpoints: there are none in a catalogue that does not exist yet.
    for command in (["tag", "last.ckpt", "+candidate"], ["clean", "--keep-last", "1"], ["site", "ls"]):
        code, out, err = run_cli(capsys, *command)
        assert code == 2 and not default.exists(), command
        assert "the first `anemoi-ckpt register` creates it" in err and "created" not in err, command
    code, out, err = run_cli(capsys, "register", str(training_checkpoint.path))
    assert code == 0 and (default / "catalogue.json").is_file()
    assert f"created the default catalogue at {default}" in err
    code, out, err = run_cli(capsys, "register", str(training_checkpoint.path))
    assert "created" not in err  # said once, on first use


# --- progress: a bar on a terminal, nothing in a log -------------------------------------------


def test_register_progress_counts_each_file_twice_whatever_is_skipped(tmp_path, example_project):
    """Hashed, then stored (uploaded, found stored or not uploaded): the bar's total is known first."""
    files = [c.path for c in example_project["base"]]
    total = 2 * sum(p.stat().st_size for p in files)
    catalogue = Catalogue.create(tmp_path / "catalogue")
    for options in ({}, {}, {"upload": False}):  # new, then already registered, then record-only
        counted: list[int] = []
        catalogue.register_many(files, progress=counted.append, **options)
        assert sum(counted) == total, options
    counted = []
    catalogue.register_many([files[0], files[0]], progress=counted.append)  # the same file twice
    assert sum(counted) == 4 * files[0].stat().st_size


def _run_on_a_terminal(args: list[str], *, terminal: bool) -> tuple[str, str]:
    """Run ``anemoi-ckpt ARGS`` with stderr on a pseudo-terminal (or a pipe); (stdout, stderr)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    command = [sys.executable, "-m", "anemoi_ckpt_nb", *args]
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = process.stdout.read().decode()
    assert process.wait(timeout=300) == 0, err.decode()
    return out, err.decode()


def test_register_shows_a_bar_on_a_terminal_and_nothing_in_a_log(tmp_path, example_project):
    files = [str(c.path) for c in example_project["base"]]
    Catalogue.create(tmp_path / "a"), Catalogue.create(tmp_path / "b")
    out, err = _run_on_a_terminal(["register", *files, "--catalogue", str(tmp_path / "a")], terminal=True)
    assert out.count("registered: ") == 3  # stdout stays what scripts read
    assert "register:   0%|" in err and "B/s" in err
    out, err = _run_on_a_terminal(["register", *files, "--catalogue", str(tmp_path / "b")], terminal=False)
    assert out.count("registered: ") == 3 and "register:" not in err and "%|" not in err


def test_prefetch_shows_a_bar_on_a_terminal_and_nothing_in_a_log(tmp_path, registered):
    catalogue, checkpoint = registered
    label = checkpoint.uuid[:8]
    for cache, terminal in (("a", True), ("b", False)):
        out, err = _run_on_a_terminal(["prefetch", "mine", "--catalogue", catalogue.url,
                                       "--cache", str(tmp_path / cache)], terminal=terminal)
        assert "verified" in out  # stdout stays what scripts read
        if terminal:
            assert f"{label}:   0%|" in err and "B/s" in err
        else:
            assert label not in err and "%|" not in err


# --- the README: one screen, the two commands first ----------------------------------------------


def test_the_readme_fits_one_screen_and_starts_with_its_two_commands():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) <= 60, "the README is one screen: move details to docs/"
    commands = [line.strip() for line in readme.splitlines() if line.startswith("    ")][:2]
    venv = "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
    assert commands == [venv + "pip install -e . && anemoi-ckpt demo", venv + "pip install -e '.[test]' && pytest -n 2"]
    # The test command is the one CI runs, verbatim.
    assert commands[1] in (root / ".ci" / "run").read_text().splitlines()
