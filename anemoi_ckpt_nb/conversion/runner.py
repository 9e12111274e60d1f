"""The ``anemoi-ckpt`` runner of anemoi-inference: it runs converted files through :func:`.loader.load_model`.

anemoi-inference's default runner loads a model with ``torch.load(path, weights_only=False)``,
so it only runs a pickled model (anemoi-training's ``inference-*.ckpt``, or ``anemoi-ckpt
convert --format pickled``). This runner is the default one with two pieces changed:

- the metadata and supporting arrays are read by the safe reader, so a ``safetensors`` file
  (which anemoi-utils' ``load_metadata`` cannot open: it reads zip archives only) works too;
- the model is built by the installed anemoi-models from the file's own config, graph,
  statistics and weights (``load_model``), never unpickled.

Everything else (inputs, forcings, processors, outputs, rollout) is anemoi-inference's own.
It is registered on the ``anemoi.inference.runners`` entry-point group (pyproject.toml), so a
config with ``runner: anemoi-ckpt`` selects it. This module imports anemoi-inference: only
anemoi-inference's registry imports it.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from anemoi.inference.checkpoint import Checkpoint
from anemoi.inference.runner import RunnerClasses
from anemoi.inference.runners.default import DefaultRunner

from anemoi_ckpt_nb.conversion.loader import load_model

LOG = logging.getLogger(__name__)

#: The name in the entry-point group, and so in a config's ``runner:``.
NAME = "anemoi-ckpt"


def read_metadata(path: str) -> tuple[dict, dict]:
    """``(metadata, supporting_arrays)`` as anemoi-utils' ``load_metadata(path, supporting_arrays=True)`` gives them.

    Read by the safe reader, so it works on every format it reads (safetensors included).
    """
    from anemoi_ckpt_nb.errors import ModelLoadError
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    with open_checkpoint(path) as checkpoint:
        metadata, arrays = checkpoint.metadata, checkpoint.supporting_arrays or {}
    if not isinstance(metadata, dict):
        raise ModelLoadError(path, "it holds no anemoi metadata, which anemoi-inference runs from")
    return metadata, arrays


class ConvertedCheckpoint(Checkpoint):
    """anemoi-inference's checkpoint whose metadata the safe reader reads (any format it reads)."""

    @cached_property
    def _raw_metadata(self) -> tuple[dict, dict]:
        return read_metadata(self.path)


class AnemoiCkptRunner(DefaultRunner):
    """anemoi-inference's default runner, for the files ``anemoi-ckpt convert`` writes (both formats).

    It also runs anemoi-training's training checkpoints and pickled ``inference-*.ckpt``,
    whose pickle the safe reader reads without running it.
    """

    def __init__(self, config: Any, *, classes: RunnerClasses | None = None, **kwargs: Any) -> None:
        classes = (classes or RunnerClasses()).model_copy(update={"checkpoint": ConvertedCheckpoint})
        super().__init__(config, classes=classes, **kwargs)

    @cached_property
    def model(self) -> Any:
        LOG.info("Building the model of %s with anemoi-models (anemoi-ckpt runner)", self.checkpoint.path)
        model = load_model(self.checkpoint.path, device=self.device)
        model.runner = self  # as the default runner does: anemoi-models' predict_step may ask it
        return model
