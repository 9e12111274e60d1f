"""``%ckpt`` magics in a real IPython shell: every subcommand, help, and errors as one sentence."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("IPython")

from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from anemoi_ckpt_nb import examples  # noqa: E402
from anemoi_ckpt_nb.api import Catalogue  # noqa: E402
from anemoi_ckpt_nb.cli import magics  # noqa: E402
from anemoi_ckpt_nb.notebook.graph import LineageGraph  # noqa: E402


@pytest.fixture
def shell():
    """A real IPython shell with the extension loaded; cleared afterwards."""
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "anemoi_ckpt_nb")
    yield ip
    InteractiveShell.clear_instance()


@pytest.fixture
def run(tmp_path):
    """A base run of two checkpoints and a resume of the last one, not registered yet."""
    base = examples.write_run(tmp_path / "runs" / "base", checkpoints=2, weights_bytes=50_000)
    resumed = examples.write_run(tmp_path / "runs" / "resumed", checkpoints=1, start_from=base[-1],
                                 relation="resume", weights_bytes=50_000)
    return base, resumed


def ckpt(shell, line: str):
    return shell.run_line_magic("ckpt", line)


def test_load_ext_registers_the_magic(shell):
    assert "ckpt" in shell.magics_manager.magics["line"]


def test_ckpt_alone_prints_help_listing_every_command(shell, capsys):
    assert ckpt(shell, "") is None
    out = capsys.readouterr().out
    for command in ("ls", "show", "register", "convert", "tag", "lineage", "fork", "resume", "validate", "use"):
        assert f"\n  {command} " in out, command
    assert "list checkpoints in the catalogue" in out  # the CLI's own help text


def test_command_help_is_the_cli_help_and_does_not_exit(shell, capsys):
    assert ckpt(shell, "ls --help") is None
    out = capsys.readouterr().out
    assert out.startswith("usage: %ckpt ls") and "--tag TAG" in out


def test_use_register_ls_show_tag_lineage(shell, tmp_path, run, capsys):
    base, resumed = run
    url = str(tmp_path / "catalogue")
    catalogue = ckpt(shell, f"use {url} --create")
    assert isinstance(catalogue, Catalogue) and catalogue.url.endswith("catalogue")
    assert os.environ["ANEMOI_CKPT_CATALOGUE"] == url
    ckpt(shell, "use")
    assert f"default catalogue: {url}" in capsys.readouterr().out

    ckpt(shell, f"register --run-folder {tmp_path / 'runs'} --tag candidate")
    out = capsys.readouterr().out
    assert out.count("registered: ") == 3

    listing = ckpt(shell, "ls --kind training --tag candidate")
    assert sorted(listing.frame["uuid"]) == sorted(c.uuid for c in [*base, *resumed])
    assert "3 checkpoints" in listing._repr_html_() and repr(listing).startswith(f"{listing.title}: 3 checkpoints")
    assert list(ckpt(shell, f"ls --run {resumed[0].run_id[:8]} --text epoch_003").frame["uuid"]) == [resumed[0].uuid]
    ckpt(shell, "ls --json")
    assert '"uuid": "' in capsys.readouterr().out

    shown = ckpt(shell, f"show {base[-1].uuid[:8]}")
    assert shown.uuid == base[-1].uuid
    assert "ackpt-wrap" in shown._repr_html_()

    ckpt(shell, f"tag {base[-1].uuid} +reviewed -candidate")
    assert "tags reviewed" in capsys.readouterr().out
    assert Catalogue(url).get(base[-1].uuid).tags == ["reviewed"]
    # The one rule of protected tags: a confirmation, in the notebook's words.
    with pytest.raises(UsageError, match=r"'production-ready' is a protected tag: confirm to add it") as info:
        ckpt(shell, f"tag {base[-1].uuid} +production-ready")
    assert f"`%ckpt tag --confirm-protected {base[-1].uuid[:8]} +production-ready`" in str(info.value)
    assert "anemoi-ckpt" not in str(info.value)
    assert Catalogue(url).get(base[-1].uuid).tags == ["reviewed"]
    ckpt(shell, f"tag --confirm-protected {base[-1].uuid} +production-ready")
    assert Catalogue(url).get(base[-1].uuid).tags == ["production-ready", "reviewed"]

    graph = ckpt(shell, f"lineage {base[-1].uuid[:8]}")
    assert isinstance(graph, LineageGraph)
    # The family, as `anemoi-ckpt lineage` prints it: the run's saves in order, and the resume.
    assert {n.id for n in graph.model.nodes} == {*(c.uuid for c in base), resumed[0].uuid}
    assert {(e.parent, e.child, e.relation) for e in graph.model.edges} == {
        (base[0].uuid, base[1].uuid, "continued-from"), (base[1].uuid, resumed[0].uuid, "resumed-from"),
    }
    ckpt(shell, f"lineage {base[-1].uuid[:8]} --json")
    assert f'"descendants": [\n    "{resumed[0].uuid}"' in capsys.readouterr().out


def test_convert_as_the_cli(shell, tmp_path, training_checkpoint, capsys):
    ckpt(shell, f"convert {training_checkpoint.path} -o {tmp_path / 'out'}")
    out = capsys.readouterr().out
    assert f"converted {training_checkpoint.path} -> " in out, out
    assert len(list((tmp_path / "out").glob("inference-*.ckpt"))) == 1


def test_validate_as_the_cli(shell, training_checkpoint, capsys):
    ckpt(shell, f"validate {training_checkpoint.path}")
    out = capsys.readouterr().out
    assert str(training_checkpoint.path) in out or training_checkpoint.path.name in out


@pytest.mark.parametrize("mode", ["fork", "resume"])
def test_fork_and_resume_print_the_training_command(shell, tmp_path, training_checkpoint, capsys, mode):
    url = str(tmp_path / "catalogue")
    ckpt(shell, f"use {url} --create")
    checkpoint = Catalogue(url).register(training_checkpoint.path)
    ckpt(shell, f"{mode} {checkpoint.uuid} --cache {tmp_path / 'cache'} --allow-drift --no-prefetch")
    out = capsys.readouterr().out
    assert f"# {mode} of {checkpoint.uuid}: run manifest" in out
    assert "anemoi-training train" in out


def test_errors_are_one_sentence_usage_errors(shell, tmp_path):
    with pytest.raises(UsageError, match=r"unknown command 'bogus'; use one of ls, show"):
        ckpt(shell, "bogus")
    with pytest.raises(UsageError, match=r"%ckpt ls: argument --kind: invalid choice"):
        ckpt(shell, "ls --kind nope")
    with pytest.raises(UsageError, match=r"%ckpt show: the following arguments are required: ID"):
        ckpt(shell, "show")
    with pytest.raises(UsageError, match=r"no catalogue here"):
        ckpt(shell, f"use {tmp_path / 'none'}")
    ckpt(shell, f"use {tmp_path / 'empty'} --create")
    with pytest.raises(UsageError, match=r"no checkpoint 'nope' in the catalogue") as info:
        ckpt(shell, "show nope")
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    # Hints name what a notebook user types (before: `anemoi-ckpt ls`).
    assert "`%ckpt ls" in str(info.value) and "anemoi-ckpt ls" not in str(info.value)
    with pytest.raises(UsageError, match="No closing quotation"):
        ckpt(shell, 'show "unclosed')


def test_debug_variable_shows_the_real_error(shell, tmp_path, monkeypatch):
    ckpt(shell, f"use {tmp_path / 'empty'} --create")
    monkeypatch.setenv("ANEMOI_CKPT_DEBUG", "1")
    with pytest.raises(LookupError):
        ckpt(shell, "show nope")


def test_the_router_names_every_subcommand_of_the_issue():
    assert list(magics.ROUTES) == ["ls", "show", "register", "convert", "tag", "lineage", "fork", "resume", "validate", "use"]


def test_notebook_hints_use_the_magic_or_a_shell_command():
    assert magics.notebook_hint("see `anemoi-ckpt ls --tag x`") == "see `%ckpt ls --tag x`"
    assert magics.notebook_hint("run `anemoi-ckpt info`") == "run `!anemoi-ckpt info`"  # no %ckpt info
    assert magics.notebook_hint("the anemoi-ckpt-nb package") == "the anemoi-ckpt-nb package"


def test_ls_without_a_catalogue_creates_nothing_and_says_how_to_choose_one(shell, tmp_path, monkeypatch, capsys):
    from anemoi_ckpt_nb import settings

    monkeypatch.delenv("ANEMOI_CKPT_CATALOGUE")
    default = settings.default_catalogue_path()
    assert not default.exists()
    assert ckpt(shell, "ls") is None
    out = capsys.readouterr().out
    assert "no catalogue configured" in out and "`%ckpt use URL`" in out and "--create" in out
    assert not default.exists() and not default.parent.exists()  # before: created there and shown empty
    assert ckpt(shell, "ls --json") is None and capsys.readouterr().out.strip() == "[]"
    # A catalogue named in $ANEMOI_CKPT_CATALOGUE that is not there yet: said, not created either.
    monkeypatch.setenv("ANEMOI_CKPT_CATALOGUE", str(tmp_path / "later"))
    assert ckpt(shell, "ls") is None
    assert "nothing registered yet" in capsys.readouterr().out and not (tmp_path / "later").exists()
    with pytest.raises(UsageError, match="no catalogue here"):
        ckpt(shell, f"ls --catalogue {tmp_path / 'named'}")
