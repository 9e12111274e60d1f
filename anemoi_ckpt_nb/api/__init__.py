"""The public objects: :class:`Catalogue` and :class:`Checkpoint`, thin faces that delegate to the packages below, and :func:`convert_many`.

May import: every package below it (``notebook`` to display, ``runs``, ``sites``, ``catalogue``, ``conversion``, ``compat``, ``read``, ``storage``, ``errors``, ``settings``); never ``cli``.

Each name is imported on first use: ``anemoi-ckpt convert`` needs only :mod:`.batch`, and the
catalogue's modules (pydantic) would add about a tenth of a second to every conversion's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_LAZY = {
    "ConvertReport": "anemoi_ckpt_nb.api.batch",
    "convert_many": "anemoi_ckpt_nb.api.batch",
    "Catalogue": "anemoi_ckpt_nb.api.catalogue",
    "Checkpoint": "anemoi_ckpt_nb.api.checkpoint",
    "checkpoint_line": "anemoi_ckpt_nb.api.checkpoint",
    "ENV_CATALOGUE": "anemoi_ckpt_nb.api.opening",
    "default_url": "anemoi_ckpt_nb.api.opening",
}

__all__ = ["ENV_CATALOGUE", "Catalogue", "Checkpoint", "ConvertReport", "checkpoint_line", "convert_many", "default_url"]

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.api.batch import ConvertReport, convert_many
    from anemoi_ckpt_nb.api.catalogue import Catalogue
    from anemoi_ckpt_nb.api.checkpoint import Checkpoint, checkpoint_line
    from anemoi_ckpt_nb.api.opening import ENV_CATALOGUE, default_url


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'anemoi_ckpt_nb.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
