"""Hints in the first hour (issue 15): the command line's way for a CLI user, Python's for a Python
caller, in each face's errors and in every literal hint of the package."""

from __future__ import annotations

import json

import pytest

from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.errors import CkptError


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


PYTHON_SPELLINGS = ("Catalogue(", "Catalogue.create(", "rebuild_index()", "=True", "keep_last", "older_than_days")


def _cli_only(err: str) -> None:
    assert not any(spelling in err for spelling in PYTHON_SPELLINGS), err


def test_a_missing_catalogue_hints_init_on_the_cli_and_create_in_python(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(capsys, "ls", "--catalogue", str(missing))
    assert code == 2 and "`anemoi-ckpt init " in err
    _cli_only(err)
    with pytest.raises(FileNotFoundError) as caught:
        Catalogue(missing)
    assert "Catalogue.create(" in str(caught.value) and "anemoi-ckpt" not in str(caught.value)


def test_init_on_an_existing_catalogue_hints_the_option_that_uses_it(capsys, tmp_path):
    url = str(tmp_path / "catalogue")
    assert run_cli(capsys, "init", url)[0] == 0
    code, _, err = run_cli(capsys, "init", url)
    assert code == 2 and "--catalogue" in err and "--exist-ok" in err
    _cli_only(err)
    assert run_cli(capsys, "init", url, "--exist-ok")[0] == 0  # the hint works
    with pytest.raises(CkptError, match="exist_ok=True"):
        Catalogue.create(url)


def test_clean_without_a_rule_hints_the_options(capsys, tmp_path):
    url = str(tmp_path / "catalogue")
    Catalogue.create(url)
    code, _, err = run_cli(capsys, "clean", "--catalogue", url)
    assert code == 2 and "--keep-last" in err and "--older-than" in err
    _cli_only(err)


def test_converting_over_an_existing_file_hints_overwrite_in_each_face(capsys, tmp_path, training_checkpoint):
    from anemoi_ckpt_nb import convert

    out = tmp_path / "inference"
    assert run_cli(capsys, "convert", str(training_checkpoint.path), "-o", str(out))[0] == 0
    code, out_text, err = run_cli(capsys, "convert", str(training_checkpoint.path), "-o", str(out))
    assert code == 1 and "FAILED" in out_text and "--overwrite" in out_text
    _cli_only(out_text + err)
    code, out_text, _ = run_cli(capsys, "convert", str(training_checkpoint.path), "-o", str(out), "--json")
    assert code == 1 and "--overwrite" in json.loads(out_text)["error"]
    _cli_only(out_text)
    with pytest.raises(CkptError, match="overwrite=True") as caught:
        convert(training_checkpoint.path, out)
    assert "--overwrite" not in str(caught.value)


def test_no_hint_in_the_package_spells_python_where_a_command_exists():
    """Every literal hint is what a CLI user may read: Python spellings only in the ``python_hint``
    of the same error, or where no command exists (the listed few)."""
    import ast
    from pathlib import Path

    import anemoi_ckpt_nb

    python_only = {  # no command-line way exists for these
        "raise it with open_checkpoint(path, max_pickle_bytes=...) if you trust the file",
        "store it with runs.record_manifest first",
    }
    root = Path(anemoi_ckpt_nb.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.keyword) and node.arg == "hint" and isinstance(node.value, (ast.Constant, ast.JoinedStr)):
                text = ast.get_source_segment(source, node.value)
                if any(s in text for s in PYTHON_SPELLINGS) and not any(p in text for p in python_only):
                    offenders.append(f"{path.relative_to(root)}:{node.value.lineno}: {text}")
    assert not offenders, "\n".join(offenders)
