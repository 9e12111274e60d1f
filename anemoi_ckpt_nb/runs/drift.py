"""Code drift at fork or resume: the checkpoint's code versions against the environment that will run it, and what blocks.

A resume needs the code that wrote the checkpoint (:data:`RESUME_CRITICAL` packages must match); a fork tolerates
newer minors. :func:`compare_environment` says what differs and how much it matters, :func:`enforce` refuses.

:func:`compare_environment` classifies each difference from a checkpoint's
``provenance_training``:

* **blocking for a resume**: a different major or minor version of
  anemoi-models or anemoi-training. A resume restores the optimizer state and
  the Lightning loops into the very same model classes; across such versions
  the layers, the state-dict names or the config schema may have changed.
* **blocking whenever the policy requires a clean tree**: uncommitted changes
  in the training-code checkout, since the run could not be reproduced from a
  commit.
* **warnings**: patch-level differences, other packages, Python, another
  commit of the code, and a package that is not installed here (its version
  cannot be checked; the training step checks again where it runs). For a
  fork, which loads the weights only, the anemoi-models/-training major or
  minor differences are warnings too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from anemoi_ckpt_nb.compat.environment import (
    TRACKED_PACKAGES,
    CheckpointCode,
    EnvironmentSnapshot,
    _Model,
    checkpoint_code,
    parse_version,
)
from anemoi_ckpt_nb.errors import DriftError

#: Packages whose major.minor must match for a resume.
RESUME_CRITICAL: tuple[str, ...] = ("anemoi.models", "anemoi.training")


Mode = Literal["fork", "resume"]


Severity = Literal["blocking", "warning"]


class Difference(_Model):
    """One way the environment differs from the checkpoint's."""

    #: ``package``, ``python`` or ``git``.
    what: str
    #: The package import name, ``python``, or the checkout path.
    name: str
    checkpoint: str | None = None
    environment: str | None = None
    severity: Severity
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.name}: checkpoint {self.checkpoint or '-'}, environment {self.environment or '-'} "
            f"({self.severity}: {self.reason})"
        )


class DriftReport(_Model):
    """Every difference found by :func:`compare_environment`, blocking ones first."""

    mode: Mode
    differences: list[Difference] = Field(default_factory=list)

    @property
    def blocking(self) -> list[Difference]:
        return [d for d in self.differences if d.severity == "blocking"]

    @property
    def warnings(self) -> list[Difference]:
        return [d for d in self.differences if d.severity == "warning"]


def _compare_package(name: str, recorded: str, installed: str | None, mode: Mode) -> Difference | None:
    def diff(severity: Severity, reason: str) -> Difference:
        return Difference(what="package", name=name, checkpoint=recorded, environment=installed, severity=severity, reason=reason)

    if installed is None:
        return diff("warning", "not installed in this environment, so its version cannot be checked here")
    if installed == recorded:
        return None
    a, b = parse_version(recorded), parse_version(installed)
    if a is None or b is None:
        return diff("warning", "versions differ and cannot be compared")
    if a[:2] != b[:2]:
        if name in RESUME_CRITICAL and mode == "resume":
            return diff("blocking", "different major or minor version: a resume restores optimizer and model state into these classes")
        return diff("warning", "different major or minor version")
    if a != b:
        return diff("warning", "different patch version")
    return diff("warning", "different build or pre-release")


def compare_environment(
    provenance: Mapping[str, Any] | BaseModel | CheckpointCode | None,
    environment: EnvironmentSnapshot,
    *,
    mode: Mode,
    require_clean: bool = False,
) -> DriftReport:
    """Every difference between a checkpoint's code versions and an environment.

    Args:
        provenance: The checkpoint's ``provenance_training`` (or a record's code
            summary, or a :class:`CheckpointCode`).
        environment: The environment the run will use, from :func:`capture_environment`
            (tests pass a made-up snapshot here rather than faking installs).
        mode: ``"resume"`` or ``"fork"``; decides what is blocking (module docstring).
        require_clean: Uncommitted changes in the code checkout are blocking.

    Returns:
        The report; nothing is raised here (see :func:`enforce`).
    """
    code = provenance if isinstance(provenance, CheckpointCode) else checkpoint_code(provenance)
    differences: list[Difference] = []
    for name in sorted(set(code.modules) & set(TRACKED_PACKAGES)):
        found = _compare_package(name, code.modules[name], environment.packages.get(name), mode)
        if found is not None:
            differences.append(found)
    if code.python and environment.python and parse_version(code.python) != parse_version(environment.python):
        a, b = parse_version(code.python), parse_version(environment.python)
        level = "minor" if a and b and a[:2] != b[:2] else "patch"
        differences.append(
            Difference(what="python", name="python", checkpoint=code.python, environment=environment.python,
                       severity="warning", reason=f"different Python {level} version")
        )
    git = environment.git
    if git is not None:
        if git.dirty:
            changed = git.modified_files + git.untracked_files
            shown = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
            differences.append(
                Difference(
                    what="git", name=git.path, checkpoint=None, environment=f"{git.commit[:12]} + changes",
                    severity="blocking" if require_clean else "warning",
                    reason=f"the code checkout has uncommitted changes ({shown})"
                    + ("; the policy requires a clean tree" if require_clean else ""),
                )
            )
        recorded = code.git.get("anemoi.training")
        if recorded and recorded != git.commit:
            differences.append(
                Difference(what="git", name=git.path, checkpoint=recorded[:12], environment=git.commit[:12],
                           severity="warning", reason="another commit of the training code than the checkpoint's anemoi.training")
            )
    differences.sort(key=lambda d: (d.severity != "blocking", d.what, d.name))
    return DriftReport(mode=mode, differences=differences)


def enforce(report: DriftReport, *, allow_drift: bool, subject: str) -> None:
    """Refuse a run whose report has blocking differences, unless drift is allowed.

    Args:
        report: From :func:`compare_environment`.
        allow_drift: Let the run go ahead; the caller records the drift.
        subject: What is being started, for the message (``"resume of <uuid>"``).

    Raises:
        DriftError: blocking differences and ``allow_drift`` is false; lists every
            difference, blocking ones first.
    """
    if report.blocking and not allow_drift:
        raise DriftError(
            f"refusing the {subject}: the environment differs from the checkpoint's in "
            f"{len(report.blocking)} way(s) that matter",
            [str(d) for d in report.differences],
            hint="install the versions the checkpoint was trained with, commit your changes, "
            "or pass --allow-drift to record the drift in the run manifest and go ahead",
        )
