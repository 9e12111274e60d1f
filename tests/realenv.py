"""The environment with the real anemoi packages, for tests: its python, and commands run there
with THIS checkout's code and entry points.

The anemoi packages pin torch<2.11 and live in their own environment (``.ci/anemoi-env.sh``),
named by ``ANEMOI_CKPT_REAL_ENV`` (its python). That environment may have this project installed
from another checkout, with other entry points: every command here puts this checkout first on
``PYTHONPATH``, and before it a ``dist-info`` holding this checkout's entry points (read from
pyproject.toml), which shadows the installed one for anemoi's registry (``entrypoints`` keeps the
first distribution of a name on the path) and for ``importlib.metadata``.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV_VARIABLE = "ANEMOI_CKPT_REAL_ENV"
REAL = ROOT / "tests" / "data" / "real"


def missing(what: str) -> None:
    """Skip on a developer's machine; fail in CI, which must run the real-package tests."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {what}")
    pytest.skip(what)


def real_python() -> str:
    python = os.environ.get(ENV_VARIABLE)
    if not python or not Path(python).exists():
        missing(f"set {ENV_VARIABLE} to the python of an environment with the real anemoi packages (.ci/anemoi-env.sh)")
    return python


def checkout_entry_points(folder: Path) -> Path:
    """A folder holding a ``dist-info`` with this checkout's name, version and entry points."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = project["name"].replace("-", "_")
    info = folder / f"{name}-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines += [f"[{group}]", *(f"{key} = {value}" for key, value in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return folder


def child_environment(folder: Path, *, first: Sequence[str] = (), base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (``os.environ``) for a child running this checkout's code in another environment.

    ``PYTHONPATH`` is ``first``, then this checkout. ``TMPDIR`` is ``folder/tmp`` (created): the
    real packages leave files in their temporary folder (torch-geometric writes a
    ``*_propagate_*.py`` module for every message-passing layer it builds and never removes it),
    which then go with the test's folder instead of piling up in /tmp. Not for a child whose
    processes share tensors (DataLoader workers): multiprocessing's sockets there would have a path
    longer than AF_UNIX allows.
    """
    tmp = folder / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    path = [*first, str(ROOT)]
    return {**(os.environ if base is None else base), "PYTHONPATH": os.pathsep.join(path), "TMPDIR": str(tmp)}


def environment(folder: Path) -> dict[str, str]:
    """The process environment for a command in the real environment, with this checkout's code
    and entry points (its temporary files in ``folder/tmp``)."""
    return child_environment(folder, first=[str(checkout_entry_points(folder / "entry-points"))])


def run(python: str, args: list[str], folder: Path, *, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python ARGS`` in the real environment (cwd ``folder``), this checkout's code and entry points."""
    return subprocess.run([python, *args], capture_output=True, text=True, cwd=folder,
                          env=environment(folder), timeout=timeout)
