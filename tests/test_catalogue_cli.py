"""The catalogue commands, run as a user runs them: ``anemoi-ckpt ...`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "anemoi_ckpt_nb", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("anemoi-ckpt: error: ")
    return lines[0]


def test_demo_tells_each_step_then_shows_lineage_and_listing(tmp_path):
    out = cli("demo", "--dir", str(tmp_path / "demo")).stdout
    steps = [line for line in out.splitlines() if line.startswith("- ")]
    assert [s.split()[1] for s in steps] == ["wrote", "created", "registered", "converted", "tagged"]
    assert "registered 7 checkpoints" in steps[2]
    assert "<==" in out and "(converted-from)" in out and "(forked-from)" in out and "(resumed-from)" in out
    assert "UUID" in out and "candidate" in out
    listed = json.loads(cli("--catalogue", str(tmp_path / "demo" / "catalogue"), "ls", "--tag", "candidate", "--json").stdout)
    assert len(listed) == 1 and listed[0]["kind"] == "inference"
    again = cli("demo", "--dir", str(tmp_path / "demo"), check=False)
    assert "already there" in one_line_error(again)


def test_register_list_show_tag_lineage_download_clean(tmp_path):
    project = examples.write_example_project(tmp_path / "checkpoints", weights_bytes=20_000)
    base, resumed, forked = project["base"], project["resumed"], project["forked"]
    url = str(tmp_path / "catalogue")

    missing = cli("register", str(resumed[0].path), "--catalogue", url, check=False)
    assert "no catalogue here" in one_line_error(missing) and "anemoi-ckpt init" in missing.stderr
    assert "catalogue ready" in cli("init", url).stdout

    refused = one_line_error(cli("register", str(resumed[0].path), "--catalogue", url, check=False))
    assert base[-1].uuid in refused and f"anemoi-ckpt register {base[-1].path}" in refused

    out = cli("register", "--run-folder", str(tmp_path / "checkpoints"), "--catalogue", url, "--tag", "nightly").stdout
    assert out.count("registered: ") == 7
    assert cli("register", str(base[0].path), "--catalogue", url).stdout.startswith("already registered: ")

    listed = json.loads(cli("--catalogue", url, "ls", "--json").stdout)
    assert len(listed) == 7 and all(e["tags"] == ["nightly"] for e in listed)
    table = cli("ls", "--catalogue", url, "--run", forked[0].run_id[:8]).stdout
    assert table.splitlines()[0].split()[:3] == ["UUID", "KIND", "RUN"] and "2 checkpoints in" in table

    # A protected tag is changed only with a confirmation, as the tag editor's box asks; nothing else changes.
    unconfirmed = cli("tag", "--catalogue", url, base[0].uuid[:8], "+production-ready", "-nightly", check=False)
    assert unconfirmed.returncode == 2
    assert "'production-ready' is a protected tag: confirm to add it" in one_line_error(unconfirmed)
    assert f"anemoi-ckpt tag --confirm-protected {base[0].uuid[:8]} +production-ready" in unconfirmed.stderr
    assert json.loads(cli("show", base[0].uuid, "--catalogue", url, "--json").stdout)["tags"] == ["nightly"]
    tagged = cli("tag", "--catalogue", url, base[0].uuid[:8], "+production-ready", "-nightly", "candidate",
                 "--confirm-protected").stdout
    assert tagged.strip().endswith("tags candidate, production-ready")
    removing = one_line_error(cli("tag", "--catalogue", url, base[0].uuid, "-production-ready", check=False))
    assert "'production-ready' is a protected tag: confirm to remove it" in removing
    shown = json.loads(cli("show", base[0].uuid[:8], "--catalogue", url, "--json").stdout)
    assert shown["uuid"] == base[0].uuid and shown["tags"] == ["candidate", "production-ready"]
    assert [(e["action"], e["tag"]) for e in shown["tag_history"]] == [
        ("add", "nightly"), ("add", "production-ready"), ("add", "candidate"), ("remove", "nightly"),
    ]
    assert not any(line.startswith("parent ") for line in cli("show", base[0].uuid, "--catalogue", url).stdout.splitlines())
    assert "resumed-from" in cli("show", resumed[1].uuid, "--catalogue", url).stdout
    assert "no tag changes" in one_line_error(cli("tag", "--catalogue", url, base[0].uuid, check=False))

    tree = cli("lineage", forked[1].uuid, "--catalogue", url).stdout
    marked = [line for line in tree.splitlines() if "<==" in line]
    # The fork's second save continues from its first, which was forked from base[1].
    assert len(marked) == 1 and forked[1].uuid[:8] in marked[0] and "(continued-from)" in marked[0]
    assert "(forked-from)" in next(line for line in tree.splitlines() if forked[0].uuid[:8] in line)
    family = json.loads(cli("lineage", forked[1].uuid, "--catalogue", url, "--json").stdout)
    assert family["ancestors"] == [forked[0].uuid, base[1].uuid, base[0].uuid] and family["descendants"] == []
    # The JSON holds the tree printed: the same checkpoints, the same links; the records' own links too.
    assert sorted(family["family"]) == sorted(c.uuid for c in [*base, *resumed, *forked])
    shown = [next(word for word in line.split() if word[0] not in "│├└") for line in tree.splitlines()]
    assert sorted(shown) == sorted(u[:8] for u in family["family"])
    assert family["links"][forked[1].uuid] == [{"uuid": forked[0].uuid, "relation": "continued-from"}]
    assert family["parents"][forked[1].uuid] == [{"uuid": base[1].uuid, "relation": "forked-from"}]

    dest = tmp_path / "fetched.ckpt"
    assert Path(cli("download", resumed[1].uuid, str(dest), "--catalogue", url).stdout.strip()) == dest
    assert dest.read_bytes() == resumed[1].path.read_bytes()

    dry = cli("clean", "--catalogue", url, "--keep-last", "1").stdout
    assert dry.count("would delete: ") == 2 and "--apply" in dry
    assert "protected by tag production-ready" in dry and "registered descendant" in dry
    assert len(json.loads(cli("ls", "--catalogue", url, "--json").stdout)) == 7
    applied = cli("clean", "--catalogue", url, "--keep-last", "1", "--apply").stdout
    assert applied.count("deleted: ") == 2
    assert len(json.loads(cli("ls", "--catalogue", url, "--json").stdout)) == 5
    assert "no retention rule" in one_line_error(cli("clean", "--catalogue", url, check=False))


def test_default_catalogue_comes_from_the_environment(tmp_path, training_checkpoint):
    # conftest points ANEMOI_CKPT_CATALOGUE at a fresh folder for each test.
    cli("register", str(training_checkpoint.path), "--name", "mine")
    assert Path(os.environ["ANEMOI_CKPT_CATALOGUE"], "catalogue.json").exists()
    assert json.loads(cli("show", "mine", "--json").stdout)["uuid"] == training_checkpoint.uuid


@pytest.mark.s3
def test_cli_on_s3(s3_url, training_checkpoint):
    cli("init", s3_url)
    cli("--catalogue", s3_url, "register", str(training_checkpoint.path), "--tag", "candidate")
    listed = json.loads(cli("--catalogue", s3_url, "ls", "--tag", "candidate", "--json").stdout)
    assert [e["uuid"] for e in listed] == [training_checkpoint.uuid]


@pytest.mark.parametrize(
    ("command", "option", "value", "rule"),
    [("init", "--keep-last", "0", "0 is not 1 or more"), ("clean", "--older-than", "-1", "-1 is not above 0"),
     ("clean", "--keep-last", "x", "'x' is not a number")],
)
def test_retention_options_are_checked_when_parsed(tmp_path, command, option, value, rule):
    # Before: the policy model refused them later, as a multi-line ValidationError with exit 3.
    done = cli(command, "--catalogue", str(tmp_path / "catalogue"), option, value, check=False)
    assert done.returncode == 2 and "ValidationError" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"anemoi-ckpt {command}: error: argument {option}: {rule}"


def test_init_refuses_an_invalid_protected_tag_and_writes_nothing(tmp_path):
    # Tagging refuses such a name, so a protected tag like it would protect nothing.
    url = tmp_path / "catalogue"
    line = one_line_error(cli("init", str(url), "--protect", "keep", "--protect", "bad tag<", check=False))
    assert "invalid tag 'bad tag<'" in line
    assert not url.exists()


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", [["ls"], ["--help"], ["ls", "--help"]])
def test_a_closed_pipe_stops_quietly(tmp_path, buffered, command):
    url = str(tmp_path / "catalogue")
    cli("init", url)
    env = dict(os.environ)
    # Buffered is a user's shell (the output leaves at exit); CI sets PYTHONUNBUFFERED: both must pass.
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    # As `anemoi-ckpt ls | head -0`: the reader is gone before the command prints.
    process = subprocess.Popen([sys.executable, "-m", "anemoi_ckpt_nb", "--catalogue", url, *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert stderr == ""
    # argparse itself ignores a closed pipe while it prints --help, and exits 0.
    assert process.wait(timeout=300) == (0 if "--help" in command and not buffered else 141)


def test_a_registered_checkpoint_validates_from_the_catalogue_copy_of_its_metadata(tmp_path, training_checkpoint):
    from anemoi_ckpt_nb.api import Catalogue

    url = str(tmp_path / "catalogue")
    checkpoint = Catalogue.create(url).register(training_checkpoint.path, upload=False)
    report = checkpoint.validate()
    assert report.metadata_source == "catalogue" and report.path == f"{checkpoint.uuid} ({checkpoint.filename})"
    assert report.format == "training" and report.migrations
    # The command prints the same report.
    printed = json.loads(cli("validate", checkpoint.uuid[:8], "--catalogue", url, "--json", check=False).stdout)
    assert printed["path"] == report.path and printed["migrations"] == report.migrations
