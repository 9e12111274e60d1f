"""The training face: a Lightning callback, loaded by anemoi-training from its config, that spools every checkpoint it saves.

May import: ``runs`` (its spool and capture modules only), ``storage``, ``errors``, ``settings``; nothing imports it.

The spool is registered later by ``anemoi-ckpt sync`` (:mod:`.callback`)::

    diagnostics:
      callbacks:
        - _target_: anemoi_ckpt_nb.training.RegisterCheckpoints

It runs inside the training process, so it stays light: importing this package imports nothing,
the callback module imports pytorch-lightning (there when anemoi-training is) and the capture
code of ``runs``, and nothing that talks to a network: registering as it trains runs the
``anemoi-ckpt sync`` command in a child process (:mod:`.background`).
"""

from __future__ import annotations

__all__ = ["RegisterCheckpoints"]


def __getattr__(name: str):
    # Hydra locates `anemoi_ckpt_nb.training.RegisterCheckpoints` by importing this package and
    # asking for the attribute: only then is Lightning imported.
    if name == "RegisterCheckpoints":
        from anemoi_ckpt_nb.training.callback import RegisterCheckpoints

        return RegisterCheckpoints
    raise AttributeError(f"module 'anemoi_ckpt_nb.training' has no attribute {name!r}")
