"""The rough edges a new user meets in the first hour (issue 15), one test each."""

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
    checkpoint = catalogue.register(training_checkpoint.path, name="mine", upload=False)
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
