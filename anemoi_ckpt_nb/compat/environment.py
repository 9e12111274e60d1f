"""The software a run uses, and the code versions a checkpoint was written with.

:func:`capture_environment` records the Python version, the installed versions
of the packages an Anemoi training run depends on (read from the installed
distributions' metadata, never by importing them: importing torch takes
seconds and may need a GPU driver) and, when given a training-code checkout,
its git commit and whether its tree is dirty.

How it differs, and what that blocks, is :mod:`anemoi_ckpt_nb.runs.drift`.

Package names are import names (``anemoi.models``), as anemoi-utils records
them in ``provenance_training["module_versions"]``.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from anemoi_ckpt_nb.errors import CodeCheckoutError

#: Import name -> distribution name of the packages whose versions are recorded.
TRACKED_PACKAGES: dict[str, str] = {
    "anemoi.models": "anemoi-models",
    "anemoi.training": "anemoi-training",
    "anemoi.graphs": "anemoi-graphs",
    "anemoi.datasets": "anemoi-datasets",
    "anemoi.utils": "anemoi-utils",
    "torch": "torch",
    "torch_geometric": "torch-geometric",
    "pytorch_lightning": "pytorch-lightning",
}


#: Lightning is also shipped inside the ``lightning`` distribution.
_ALTERNATIVE_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {"pytorch_lightning": ("lightning",)}


_VERSION = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class GitState(_Model):
    """The state of a git checkout of the training code."""

    path: str
    commit: str
    dirty: bool
    modified_files: list[str] = Field(default_factory=list)
    untracked_files: list[str] = Field(default_factory=list)


class EnvironmentSnapshot(_Model):
    """What :func:`capture_environment` saw: enough to tell whether a run is reproducible."""

    python: str
    #: Import name -> installed version, ``None`` when not installed.
    packages: dict[str, str | None]
    git: GitState | None = None
    host: str = ""
    captured_at: dt.datetime | None = None


class CheckpointCode(_Model):
    """The code versions a checkpoint was trained with, from its ``provenance_training``."""

    python: str | None = None
    #: Import name -> version.
    modules: dict[str, str] = Field(default_factory=dict)
    #: Import name -> git commit, for packages run from a git checkout.
    git: dict[str, str] = Field(default_factory=dict)
    #: Packages whose checkout had modified or untracked files.
    git_dirty: list[str] = Field(default_factory=list)


def installed_version(import_name: str) -> str | None:
    """The installed version of a package, read from its distribution metadata; nothing is imported.

    Args:
        import_name: ``anemoi.models``, ``torch``, ... (see :data:`TRACKED_PACKAGES`); an import name
            not tracked there is looked up as itself, with dots as dashes (``anemoi.inference`` ->
            anemoi-inference), then by its top-level name.

    Returns:
        The version string, or ``None`` when no distribution provides it.
    """
    from importlib.metadata import PackageNotFoundError, version

    names = (
        TRACKED_PACKAGES.get(import_name, import_name),
        *_ALTERNATIVE_DISTRIBUTIONS.get(import_name, ()),
        import_name,
        import_name.replace(".", "-"),
        import_name.split(".")[0],
    )
    for name in dict.fromkeys(names):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def git_state(path: str | Path) -> GitState:
    """Commit and dirty state of the git checkout containing ``path``.

    Args:
        path: A folder inside the checkout (usually its root).

    Returns:
        The checkout's state; untracked files count as dirty.

    Raises:
        CodeCheckoutError: no ``git`` command, the path does not exist or is not
            inside a git checkout, or the checkout has no commit yet.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CodeCheckoutError(path, "the training-code checkout does not exist", hint="give the path of your anemoi-core clone")
    git = shutil.which("git")
    if git is None:
        raise CodeCheckoutError(
            path,
            "cannot read the code version: the 'git' command is not installed or not on PATH",
            hint="install git (e.g. 'module load git' on HPC) or omit --code-path",
        )

    def run(*args: str) -> str:
        done = subprocess.run([git, "-C", str(path), *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise CodeCheckoutError(
                path,
                f"'git {' '.join(args)}' failed: {detail[0] if detail else 'exit ' + str(done.returncode)}",
                hint="give the root of a git clone of the training code, with at least one commit",
            )
        return done.stdout

    root = run("rev-parse", "--show-toplevel").strip()
    commit = run("rev-parse", "HEAD").strip()
    modified, untracked = [], []
    for line in run("status", "--porcelain", "--untracked-files=normal").splitlines():
        if not line.strip():
            continue
        status, name = line[:2], line[3:]
        (untracked if status == "??" else modified).append(name)
    return GitState(
        path=root,
        commit=commit,
        dirty=bool(modified or untracked),
        modified_files=sorted(modified),
        untracked_files=sorted(untracked),
    )


def capture_environment(*, code_path: str | Path | None = None) -> EnvironmentSnapshot:
    """Record the environment a run would use.

    Args:
        code_path: A git checkout of the training code, if the run uses one.

    Returns:
        The snapshot: Python version, versions of :data:`TRACKED_PACKAGES`
        (``None`` for those not installed) and the checkout's git state.

    Raises:
        CodeCheckoutError: ``code_path`` was given and its git state cannot be read.
    """
    info = sys.version_info
    return EnvironmentSnapshot(
        python=f"{info.major}.{info.minor}.{info.micro}",
        packages={name: installed_version(name) for name in TRACKED_PACKAGES},
        git=git_state(code_path) if code_path is not None else None,
        host=socket.gethostname(),
        captured_at=dt.datetime.now(dt.timezone.utc),
    )


def version_text(value: Any) -> str | None:
    """The version in one ``provenance_training["module_versions"]`` value.

    Args:
        value: ``"1.2.3"`` as older anemoi-utils records it, or
            ``{"version": "1.2.3", "source": {...}}`` as newer releases do.

    Returns:
        The version as text, or ``None`` when none is recorded.
    """
    if isinstance(value, Mapping):
        value = value.get("version")
    return None if value is None else str(value)


def checkpoint_code(provenance: Mapping[str, Any] | BaseModel | None) -> CheckpointCode:
    """The code versions of a checkpoint, from whatever form they come in.

    Args:
        provenance: The metadata's ``provenance_training`` dict, or a catalogue
            record's ``code`` summary (any model with ``python``, ``modules``,
            ``git``, ``git_dirty``), or ``None``.

    Returns:
        A :class:`CheckpointCode` (empty when nothing was recorded).
    """
    if provenance is None:
        return CheckpointCode()
    if isinstance(provenance, BaseModel):
        data = provenance.model_dump()
        return CheckpointCode(
            python=data.get("python"),
            modules={k: str(v) for k, v in (data.get("modules") or {}).items() if v is not None},
            git={k: str(v) for k, v in (data.get("git") or {}).items() if v is not None},
            git_dirty=list(data.get("git_dirty") or []),
        )
    modules = {}
    for name, value in (provenance.get("module_versions") or {}).items():
        text = version_text(value)
        if text is not None:
            modules[name] = text
    git, dirty = {}, []
    for name, value in (provenance.get("git_versions") or {}).items():
        if not isinstance(value, dict):
            continue  # someone else's file: an unexpected shape carries no commit to compare
        info = value.get("git", value)
        if not isinstance(info, dict):
            continue
        if info.get("sha1"):
            git[name] = str(info["sha1"])
        # modified_files/untracked_files are counts or lists depending on anemoi-utils' "full" flag.
        if any(info.get(k) for k in ("modified_files", "untracked_files")):
            dirty.append(name)
    python = provenance.get("python")
    return CheckpointCode(python=None if python is None else str(python), modules=modules, git=git, git_dirty=sorted(dirty))


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` of a version string such as ``2.13.0+cpu``; ``None`` if unparsable."""
    if not text:
        return None
    match = _VERSION.match(text)
    if not match:
        return None
    return tuple(int(g or 0) for g in match.groups())  # type: ignore[return-value]
