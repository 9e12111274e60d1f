"""Old import paths of modules that moved in 0.2 (``anemoi_ckpt_nb.core.*``, ``batch_convert``, ``notebook.magics``).

Importing an old path still works for one release and warns with a
:class:`DeprecationWarning` naming the new one. An old module that was moved
whole is the new module itself (same object: patching it patches the code);
an old module that was split is a read-only view over the new ones.

May import: nothing of the package at import time (it is installed by the package's ``__init__``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
import warnings

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

#: Old dotted prefix -> new module path(s). A name under an old prefix maps to the same
#: name under the new one; several targets mean the old module was split (names are
#: looked up in order). The longest prefix wins.
MOVED: dict[str, tuple[str, ...]] = {
    "anemoi_ckpt_nb.core.errors": ("anemoi_ckpt_nb.errors",),
    "anemoi_ckpt_nb.core.hashing": ("anemoi_ckpt_nb.storage.hashing",),
    "anemoi_ckpt_nb.core.catalogue": ("anemoi_ckpt_nb.catalogue",),
    "anemoi_ckpt_nb.core.catalogue.index": (
        "anemoi_ckpt_nb.catalogue.index",
        "anemoi_ckpt_nb.catalogue.events",
        "anemoi_ckpt_nb.catalogue.reindex",
    ),
    "anemoi_ckpt_nb.core.json_documents": ("anemoi_ckpt_nb.catalogue.documents",),
    "anemoi_ckpt_nb.core.schema": ("anemoi_ckpt_nb.catalogue.schema",),
    "anemoi_ckpt_nb.core.policy": ("anemoi_ckpt_nb.catalogue.policy",),
    "anemoi_ckpt_nb.core.lineage": ("anemoi_ckpt_nb.catalogue.lineage",),
    "anemoi_ckpt_nb.core.anemoi_metadata.export": ("anemoi_ckpt_nb.catalogue.schema_export",),
    "anemoi_ckpt_nb.core.anemoi_metadata": ("anemoi_ckpt_nb.compat.anemoi_metadata",),
    "anemoi_ckpt_nb.core.migrate.modules": ("anemoi_ckpt_nb.read.renames",),
    "anemoi_ckpt_nb.core.migrate.upgrade": ("anemoi_ckpt_nb.compat.upgrade",),
    "anemoi_ckpt_nb.core.migrate.project": ("anemoi_ckpt_nb.catalogue.documents",),
    "anemoi_ckpt_nb.core.migrate": ("anemoi_ckpt_nb.compat.migrate",),
    "anemoi_ckpt_nb.core.validate": ("anemoi_ckpt_nb.compat.validate",),
    "anemoi_ckpt_nb.core.environment": ("anemoi_ckpt_nb.compat.environment", "anemoi_ckpt_nb.runs.drift"),
    "anemoi_ckpt_nb.core.locations": ("anemoi_ckpt_nb.sites.locations", "anemoi_ckpt_nb.catalogue.copies"),
    "anemoi_ckpt_nb.core.sites": ("anemoi_ckpt_nb.sites.registry", "anemoi_ckpt_nb.sites.fetch"),
    "anemoi_ckpt_nb.core.site_fetch": ("anemoi_ckpt_nb.sites.fetch",),
    "anemoi_ckpt_nb.core.site_transfer": ("anemoi_ckpt_nb.sites.transfer",),
    "anemoi_ckpt_nb.core.site_clean": ("anemoi_ckpt_nb.sites.drop",),
    "anemoi_ckpt_nb.core.runs": ("anemoi_ckpt_nb.runs.plans",),
    "anemoi_ckpt_nb.core.run_cache": ("anemoi_ckpt_nb.runs.cache", "anemoi_ckpt_nb.storage.disk"),
    "anemoi_ckpt_nb.core.jobscript": ("anemoi_ckpt_nb.runs.jobscript",),
    "anemoi_ckpt_nb.core.reader": (
        "anemoi_ckpt_nb.read.reader",
        "anemoi_ckpt_nb.read.checkpoint",
        "anemoi_ckpt_nb.read.summary",
        "anemoi_ckpt_nb.read.safetensors_file",
    ),
    "anemoi_ckpt_nb.core.torchfile": ("anemoi_ckpt_nb.read.torchfile",),
    "anemoi_ckpt_nb.core.unpickler": (
        "anemoi_ckpt_nb.read.unpickler",
        "anemoi_ckpt_nb.read.placeholders",
        "anemoi_ckpt_nb.read.resolver",
        "anemoi_ckpt_nb.read.allowlist",
        "anemoi_ckpt_nb.read.rebuilders",
        "anemoi_ckpt_nb.read.bounds",
        "anemoi_ckpt_nb.read.torchfile",
    ),
    "anemoi_ckpt_nb.core.classmap": ("anemoi_ckpt_nb.read.classmap",),
    "anemoi_ckpt_nb.core.embedded": ("anemoi_ckpt_nb.read.embedded",),
    "anemoi_ckpt_nb.core.convert": (
        "anemoi_ckpt_nb.conversion.convert",
        "anemoi_ckpt_nb.conversion.batch",
        "anemoi_ckpt_nb.conversion.plan",
        "anemoi_ckpt_nb.conversion.write",
        "anemoi_ckpt_nb.conversion.formats",
    ),
    "anemoi_ckpt_nb.core.convert_writers": ("anemoi_ckpt_nb.conversion.writers",),
    "anemoi_ckpt_nb.core.convert_files": ("anemoi_ckpt_nb.conversion.files",),
    "anemoi_ckpt_nb.batch_convert": ("anemoi_ckpt_nb.api.batch",),
    "anemoi_ckpt_nb.notebook.magics": ("anemoi_ckpt_nb.cli.magics",),
}


#: MOVED's prefixes, longest first: the longest prefix wins.
_PREFIXES = tuple(sorted(MOVED, key=len, reverse=True))


def new_names(old: str) -> tuple[str, ...] | None:
    """The new module path(s) of an old dotted name, or None if it did not move."""
    if not old.startswith(_PREFIXES):  # every import of the process asks: answer most at once
        return None
    for prefix in _PREFIXES:
        if old == prefix:
            return MOVED[prefix]
        if old.startswith(prefix + "."):
            rest = old[len(prefix):]
            return tuple(target + rest for target in MOVED[prefix][:1])
    return None


class _SplitModule(types.ModuleType):
    """An old module that was split: each name is looked up in the new modules, in order."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Deprecated alias of {', '.join(targets)}.")
        self._targets = targets

    def __getattr__(self, attr: str) -> Any:
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r} (moved to {', '.join(self._targets)})")


class MovedFinder:
    """Finds old module paths and hands back the new modules, with a DeprecationWarning.

    A meta path finder and loader by its methods, not by importlib.abc's classes: importing
    that module imports importlib.resources, tempfile and random, on every start of the CLI.
    """

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if new_names(fullname) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = new_names(spec.name)
        assert targets is not None
        warnings.warn(
            f"{spec.name} moved to {' and '.join(targets)}; the old path works until the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        if len(targets) == 1:
            return importlib.import_module(targets[0])
        return _SplitModule(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        pass  # already executed under its new name


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): the old names must never load a second copy."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
