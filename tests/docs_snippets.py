"""Find the shell and Python snippets of the documentation pages, in order, and run them.

A page's snippets are its fenced code blocks in ``bash`` (or ``sh``, ``shell``) and ``python``.
Other languages (``text``, ``json``, ``toml``) show output or files and are not run. Two HTML
comments, which the rendered site does not show, change that:

``<!-- not-run: REASON -->``
    on the line just before a fence: the snippet is shown but not run, for the few that cannot run
    here (real S3 credentials, a SLURM scheduler). The reason is required; the tests check it.

``<!-- docs-test setup`` ... ``-->``
    a fenced snippet inside the comment is run at that place but not shown: the example files a
    page's snippets use, without cluttering the page.

The snippets of one page share one temporary folder (the working directory), one environment
(an ``export`` in a shell snippet is seen by the next snippets, shell or Python) and one Python
namespace, as a reader typing them in order would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
SHELL = {"bash", "sh", "shell"}
PYTHON = {"python", "py", "python3"}
#: Fence languages that are shown as they are: outputs, files, formats.
SHOWN_ONLY = {"text", "json", "toml", "yaml", "ini", "dot", "none", ""}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
_SETUP_START = re.compile(r"^\s*<!--\s*docs-test setup\s*$")


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int  # 1-based, of the opening fence
    language: str  # "shell", "python" or the fence's own word when shown only
    code: str
    hidden: bool = False
    not_run_reason: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _language(info: str) -> str:
    word = info.strip().split()[0] if info.strip() else ""
    if word.startswith("{") and word.endswith("}"):  # {code-block} python
        parts = info.split()
        word = parts[1] if len(parts) > 1 else ""
    if word in SHELL:
        return "shell"
    if word in PYTHON:
        return "python"
    return word


def snippets(path: Path) -> list[Snippet]:
    """Every fenced block of a page, hidden set-up blocks included, in reading order."""
    lines = path.read_text().splitlines()
    page = path.relative_to(DOCS.parent).as_posix() if path.is_relative_to(DOCS.parent) else path.name
    found: list[Snippet] = []
    hidden = False
    reason: str | None = None
    number = 0
    while number < len(lines):
        line = lines[number]
        if _SETUP_START.match(line):
            hidden = True
        elif hidden and line.strip() == "-->":
            hidden = False
        elif match := _NOT_RUN.match(line):
            reason = match["reason"]
        elif match := _FENCE.match(line):
            fence, start = match["fence"], number
            body = []
            number += 1
            while number < len(lines) and not lines[number].strip().startswith(fence):
                body.append(lines[number])
                number += 1
            code = "\n".join(body) + "\n"
            language = _language(match["info"])
            if language == "{anemoi-ckpt-reference}":
                language = "directive"
            found.append(Snippet(page, start + 1, language, code, hidden, reason))
            reason = None
        elif line.strip():
            reason = None  # a not-run marker applies to the fence right after it only
        number += 1
    return found


README = DOCS.parent / "README.md"


def pages() -> list[Path]:
    """The site's pages, and the README, whose tour is the first thing a new user runs."""
    return [README, *sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)]


INSTALLS = re.compile(r"""\b(pip3?|conda|mamba)\b[\s,'"]+(install|uninstall)\b""")


class PageRunner:
    """Runs one page's snippets in order in ``folder`` with the environment ``env``."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder = folder
        self.env = dict(env)
        self.namespace: dict[str, object] = {"__name__": "__docs__"}

    def run(self, snippet: Snippet) -> None:
        if INSTALLS.search(snippet.code):
            # Run here, it would install into the tests' own environment (anemoi-models pulls torch<2.11).
            raise AssertionError(f"{snippet.where}: installs packages; mark it <!-- not-run: REASON -->")
        if snippet.language == "shell":
            self._shell(snippet)
        elif snippet.language == "python":
            self._python(snippet)

    def _shell(self, snippet: Snippet) -> None:
        env_file = self.folder / ".snippet-env"
        script = f"set -euo pipefail\n{snippet.code}\nenv -0 > {env_file}\n"
        completed = subprocess.run(
            ["bash", "-c", script], cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=600
        )
        if completed.returncode != 0:
            raise AssertionError(
                f"{snippet.where}: shell snippet exited {completed.returncode}\n--- snippet\n{snippet.code}"
                f"--- stdout\n{completed.stdout[-4000:]}\n--- stderr\n{completed.stderr[-4000:]}"
            )
        pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        self.env = {key: value for key, value in pairs if key not in ("PWD", "OLDPWD", "SHLVL", "_")}

    def _python(self, snippet: Snippet) -> None:
        # Python snippets run in this process (a reader's session), with the page's folder and environment.
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        os.environ.clear()
        os.environ.update(self.env)
        os.chdir(self.folder)
        try:
            exec(compile(snippet.code, snippet.where, "exec"), self.namespace)
        except Exception as error:
            raise AssertionError(f"{snippet.where}: Python snippet failed: {error!r}\n--- snippet\n{snippet.code}") from error
        finally:
            self.env = dict(os.environ)
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
            sys.stdout.flush()
