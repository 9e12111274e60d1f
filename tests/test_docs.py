"""The documentation site builds without a warning, and every snippet in it runs.

The build is the one Read the Docs runs (``sphinx-build -W --keep-going``); the snippets are
found and run by ``tests/docs_snippets.py`` (its docstring says how a page marks a snippet that
cannot run here, or hides the set-up of its example files).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docs_snippets import DOCS, SHOWN_ONLY, PageRunner, pages, snippets

ROOT = DOCS.parent
PAGES_WITH_SNIPPETS = [page for page in pages() if any(s.language in ("shell", "python") for s in snippets(page))]


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-6000:]
    html = (tmp_path / "html" / "cli.html").read_text()
    from anemoi_ckpt_nb.cli import COMMANDS

    for command in COMMANDS:  # every command has its section, generated from its parser
        assert f'id="anemoi-ckpt-{command}"' in html, command
    tutorial = (tmp_path / "html" / "tutorials" / "01-quickstart.html").read_text()
    assert "<svg" in tutorial, "the quickstart's stored lineage graph is not rendered"


@pytest.mark.parametrize("page", PAGES_WITH_SNIPPETS, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_snippet_of_the_page_runs(page, tmp_path, request):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ)
    # A reader's fresh account: defaults under this folder, nothing configured.
    for name in [name for name in env if name.startswith("ANEMOI_CKPT_") and name != "ANEMOI_CKPT_WEED"]:
        del env[name]
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local/share"), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
               COLUMNS="100", DOCS_TEST_ROOT=str(ROOT))
    page_snippets = snippets(page)
    if any("s3://bucket" in snippet.code for snippet in page_snippets if not snippet.not_run_reason):
        server = request.getfixturevalue("s3_server")
        server.start()
        _fresh_bucket(server, "bucket")
        env.update(server.env())
    work = tmp_path / "work"
    work.mkdir()
    runner = PageRunner(work, env)
    for snippet in page_snippets:
        if snippet.not_run_reason is None:
            runner.run(snippet)


def _fresh_bucket(server, name: str) -> None:
    """The pages name ``s3://bucket/...``: an empty bucket of that name on the test server."""
    client = server.client()
    try:
        client.create_bucket(Bucket=name)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.ClientError as error:
        if "BucketAlreadyExists" not in str(error):
            raise
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])


def test_snippets_not_run_say_why():
    """A snippet may be left out only with a reason a reader understands (S3 credentials, SLURM)."""
    for page in pages():
        for snippet in snippets(page):
            if snippet.not_run_reason is not None:
                assert len(snippet.not_run_reason.split()) >= 3, f"{snippet.where}: give the reason in words"
                assert snippet.language in ("shell", "python"), f"{snippet.where}: only code snippets are run"


def test_every_fence_has_a_known_language():
    """A snippet in `console` or `sh-session` would silently escape the tests: name it bash or python."""
    for page in pages():
        for snippet in snippets(page):
            assert snippet.language in ("shell", "python", "directive") or snippet.language in SHOWN_ONLY, (
                f"{snippet.where}: fence language {snippet.language!r}: use bash, python, or text for output"
            )


def test_the_harness_finds_hidden_setup_and_not_run_markers(tmp_path, monkeypatch):
    page = tmp_path / "harness-check.md"
    page.write_text(
        "# t\n\n<!-- docs-test setup\n```bash\ntouch made\n```\n-->\n\n```bash\ntest -f made\n```\n\n"
        "<!-- not-run: needs a SLURM scheduler -->\n```bash\nsbatch job.sh\n```\n\n```python\nx = 1\n```\n"
    )
    found = snippets(page)
    assert [(s.language, s.hidden, s.not_run_reason) for s in found] == [
        ("shell", True, None), ("shell", False, None), ("shell", False, "needs a SLURM scheduler"),
        ("python", False, None),
    ]
    runner = PageRunner(tmp_path, dict(os.environ))
    runner.run(found[0])
    runner.run(found[1])
    with pytest.raises(AssertionError, match="exited"):
        runner.run(found[2])  # sbatch is not here: had it run, the page would fail


def test_every_environment_variable_the_package_reads_is_documented():
    package = ROOT / "anemoi_ckpt_nb"
    used = set()
    for path in package.rglob("*.py"):
        used |= set(re.findall(r"ANEMOI_CKPT_[A-Z_]+[A-Z]", path.read_text()))
    documented = set(re.findall(r"ANEMOI_CKPT_[A-Z_]+[A-Z]", (DOCS / "environment.md").read_text()))
    assert used - documented == set(), "document these in docs/environment.md"


def test_a_snippet_that_installs_packages_is_refused_before_it_runs(tmp_path):
    """Run by the tests, `pip install 'anemoi-ckpt-nb[inference]'` replaced torch in the tests' own venv."""
    page = tmp_path / "installs.md"
    page.write_text("# t\n\n```bash\npip install 'anemoi-ckpt-nb[inference]'\n```\n\n```python\nimport subprocess\n"
                    "subprocess.run(['python', '-m', 'pip', 'install', 'x'])\n```\n")
    runner = PageRunner(tmp_path, dict(os.environ))
    for snippet in snippets(page):
        with pytest.raises(AssertionError, match="installs packages; mark it"):
            runner.run(snippet)
