"""Which classes a file's config may have anemoi-models build (issue 18, docs/threat-model.md).

anemoi-models builds a model with Hydra's ``instantiate``: a ``_target_`` of the config's
``model`` or ``data`` section names a callable that is imported and called with the config's
arguments. The config comes from the file, written by its author: ``_target_: os.system`` with a
command would run it as whoever loads the model. So before anything is built every ``_target_``
of those sections must name a class of one of :data:`ALLOWED` (the model's own layers, torch's
layers and activations, and the output masks anemoi-training files keep under ``model``);
anything else is refused, naming the key and the target, and nothing is imported from it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from anemoi_ckpt_nb.errors import ModelLoadError

#: Module prefixes whose classes a config may name (module and class; never a function).
ALLOWED = ("anemoi.models.", "torch.nn.", "anemoi.training.utils.masks.")
#: The config sections anemoi-models instantiates from.
SECTIONS = ("model", "data")


def _targets(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if key == "_target_":
                yield here, value
            else:
                yield from _targets(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _targets(item, f"{where}[{i}]")


def _locate(target: str) -> Any:
    """What Hydra's ``_locate`` finds for ``target``: import the first part, then attributes or submodules."""
    parts = target.split(".")
    found = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        try:
            found = getattr(found, part)
        except AttributeError:
            if not isinstance(found, ModuleType):
                raise
            found = importlib.import_module(".".join(parts[: i + 1]))
    return found


def _is_allowed_class(target: str) -> bool:
    if not target.startswith(ALLOWED):
        return False  # and nothing is imported for it
    try:  # only under ALLOWED: installed, trusted code
        found = _locate(target)
    except (ImportError, AttributeError, ValueError):
        return True  # Hydra cannot locate it either (anemoi-training's masks where it is not installed)
    # The object reached, not the path: anemoi.models.x.subprocess.Popen is subprocess's class.
    module = getattr(found, "__module__", None) or ""
    return inspect.isclass(found) and f"{module}.".startswith(ALLOWED)


def check_targets(config: dict[str, Any], path: str | Path) -> None:
    """Refuse a config that would have anemoi-models call anything but an allowed class.

    Args:
        config: The config with its interpolations resolved (one could bring in a ``_target_``
            from another section).

    Raises:
        ModelLoadError: a ``_target_`` that is not a string naming a class under :data:`ALLOWED`.
    """
    for section in SECTIONS:
        for where, target in _targets(config.get(section), f"config.{section}"):
            if not isinstance(target, str) or not _is_allowed_class(target):
                raise ModelLoadError(
                    path,
                    f"its config names {target!r} at {where}; building its model would call it, and only "
                    f"classes of {', '.join(p.rstrip('.') for p in ALLOWED)} are built from a file's config",
                    hint="this file was not written by anemoi-training as it is: do not load it unless you trust "
                    "its author (then torch.load or anemoi's own tools run whatever it names)",
                )
