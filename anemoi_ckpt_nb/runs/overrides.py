"""The anemoi-training overrides that start a fork or resume, for either configuration layout, quoted as Hydra reads them.

The overrides follow anemoi-training's own names. From anemoi-training 0.8
(the ``system`` config schema)::

    resume: training.run_id=<run> training.fork_run_id=null system.input.warm_start=<file>
            training.load_weights_only=false
    fork:   training.run_id=<new run> training.fork_run_id=<parent run>
            system.input.warm_start=<file> training.load_weights_only=true

Before 0.8 (the ``hardware`` config) the checkpoint is found at
``<hardware.paths.checkpoints>/<fork_run_id or run_id>/<hardware.files.warm_start>``,
so the training step links the cached file there first, and a fork's new run
id is chosen by anemoi-training (or MLflow), not by us::

    resume: training.run_id=<run> hardware.paths.checkpoints=<dir> hardware.files.warm_start=<name>
            training.load_weights_only=false
    fork:   training.fork_run_id=<parent run> hardware.paths.checkpoints=<dir>
            hardware.files.warm_start=<name> training.load_weights_only=true
"""

from __future__ import annotations

import re
from pathlib import Path

from anemoi_ckpt_nb.compat.environment import EnvironmentSnapshot, parse_version
from anemoi_ckpt_nb.errors import RunPlanError
from anemoi_ckpt_nb.runs.drift import Mode
from anemoi_ckpt_nb.runs.manifest import Layout

#: The anemoi-training release that moved ``hardware.*`` to ``system.*``.
SYSTEM_LAYOUT_SINCE = (0, 8, 0)

_HYDRA_SAFE = re.compile(r"^[\w./:@+-]+$", re.ASCII)
#: Unquoted, Hydra reads these as booleans or null (any case); numbers are caught by ``float``.
_HYDRA_KEYWORDS = frozenset({"true", "false", "null"})


def _hydra_typed(text: str) -> bool:
    """Whether Hydra would read ``text``, unquoted, as something other than a string."""
    if text.lower() in _HYDRA_KEYWORDS:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def hydra_value(value: object) -> str:
    """A value as a Hydra command-line override reads it back exactly.

    Strings that Hydra would misparse (special or non-ASCII characters) or
    read as another type (``42``, ``1e5``, ``true``) are single-quoted. In a
    quoted value Hydra treats a backslash as an escape only before a quote,
    and OmegaConf only before ``${`` (which it would otherwise resolve), so
    only those backslashes are doubled.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _HYDRA_SAFE.match(text) and (isinstance(value, (int, float)) or not _hydra_typed(text)):
        return text
    text = re.sub(r"(\\*)(\$\{)", lambda m: m[1] * 2 + "\\" + m[2], text)
    text = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m[1] * 2, text)
    return f"'{text}'"


def choose_layout(environment: EnvironmentSnapshot, layout: Layout | None = None) -> tuple[Layout, str]:
    """Which anemoi-training configuration layout the overrides use, and why.

    Args:
        environment: The run's environment (its anemoi-training version decides).
        layout: An explicit choice, which wins.

    Returns:
        ``(layout, reason)``.
    """
    if layout is not None:
        if layout not in ("system", "hardware"):
            raise RunPlanError(
                "layout", f"unknown configuration layout {layout!r}",
                hint="use 'system' (anemoi-training >= 0.8) or 'hardware'",
            )
        return layout, "chosen explicitly"
    version = environment.packages.get("anemoi.training")
    parsed = parse_version(version)
    if parsed is None:
        return "system", "anemoi-training is not installed here; assuming >= 0.8 (system.* configuration)"
    if parsed < SYSTEM_LAYOUT_SINCE:
        return "hardware", f"anemoi-training {version} < 0.8 reads hardware.paths/hardware.files"
    return "system", f"anemoi-training {version} >= 0.8 reads system.input"


def training_overrides(
    *,
    mode: Mode,
    layout: Layout,
    run_id: str | None,
    parent_run_id: str | None,
    checkpoint: Path,
    load_weights_only: bool,
    checkpoints_dir: Path | None = None,
) -> tuple[list[str], Path | None]:
    """The anemoi-training overrides that start the run (see the module docstring).

    Returns:
        ``(overrides, stage_link)``: ``stage_link`` is where the ``hardware``
        layout expects the checkpoint (None for ``system``).
    """
    head: list[str] = []
    if mode == "resume":
        head = [f"training.run_id={hydra_value(run_id)}", "training.fork_run_id=null"]
    elif layout == "system":
        head = [f"training.run_id={hydra_value(run_id)}"]
        if parent_run_id:
            head.append(f"training.fork_run_id={hydra_value(parent_run_id)}")
    else:
        head = [f"training.fork_run_id={hydra_value(parent_run_id)}"]
    weights = f"training.load_weights_only={hydra_value(load_weights_only)}"
    if layout == "system":
        return [*head, f"system.input.warm_start={hydra_value(str(checkpoint))}", weights], None
    assert checkpoints_dir is not None
    folder = str(parent_run_id if mode == "fork" else run_id)
    # The run id comes from someone else's checkpoint: it must name one folder, not a path.
    if not folder or folder in (".", "..") or "/" in folder or "\x00" in folder:
        raise RunPlanError(folder, "this run id cannot be a folder name under the checkpoints folder",
                           hint="use the 'system' layout (anemoi-training >= 0.8), which needs no link")
    link = checkpoints_dir / folder / checkpoint.name
    return [
        *head,
        f"hardware.paths.checkpoints={hydra_value(str(checkpoints_dir))}",
        f"hardware.files.warm_start={hydra_value(checkpoint.name)}",
        weights,
    ], link
