"""anemoi-ckpt-nb: manage the whole life of Anemoi training checkpoints.

Importing the package is cheap: torch, boto3, pandas and ipywidgets are
imported only by the functions that need them. The public objects are loaded
on first attribute access.
"""

from __future__ import annotations

from anemoi_ckpt_nb import _moved
from anemoi_ckpt_nb._version import __version__

_moved.install()  # old paths (anemoi_ckpt_nb.core.*, batch_convert) keep working for one release

_LAZY = {
    "open_checkpoint": ("anemoi_ckpt_nb.read.reader", "open_checkpoint"),
    "Catalogue": ("anemoi_ckpt_nb.api", "Catalogue"),
    "Checkpoint": ("anemoi_ckpt_nb.api", "Checkpoint"),
    "convert": ("anemoi_ckpt_nb.conversion.convert", "convert"),
    "convert_many": ("anemoi_ckpt_nb.api.batch", "convert_many"),
    "load_model": ("anemoi_ckpt_nb.conversion.loader", "load_model"),
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'anemoi_ckpt_nb' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:  # pragma: no cover - exercised by notebook tests
    """``%load_ext anemoi_ckpt_nb``: register the ``%ckpt`` magics."""
    from anemoi_ckpt_nb.cli.magics import load_ipython_extension as _load

    _load(ipython)
