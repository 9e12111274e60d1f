"""Realistic Anemoi checkpoints, written with ``torch.save``, for tests, benchmarks and the demo.

May import: ``anemoi_ckpt_nb.read`` only (to embed the metadata); torch, numpy, pydantic, omegaconf and safetensors inside functions.

The files have the anatomy described in DESIGN.md: a Lightning dict with
``epoch``, ``global_step``, ``pytorch-lightning_version``, ``state_dict``
(weights prefixed ``model.``), ``loops``, ``callbacks``, ``optimizer_states``
(Adam: ``exp_avg`` and ``exp_avg_sq`` per parameter), ``lr_schedulers``,
``hyper_parameters``, ``task_state`` and ``migrations``.

``hyper_parameters`` holds what anemoi-training's ``save_hyperparameters``
keeps: a real omegaconf ``DictConfig`` (or a pydantic schema object), an
``IndexCollection``, a torch_geometric ``HeteroData`` graph, statistics,
supporting arrays and the ``metadata`` dict. The anemoi and torch_geometric
classes are made in throw-away modules that exist only while ``torch.save``
runs, exactly as a reader on another machine meets them: referred to by the
pickle, absent from the reader's environment.

The metadata is also embedded as ``anemoi-metadata/anemoi.json`` with its
supporting arrays, as anemoi-training does through anemoi-utils.

Conventions followed (from anemoi-training 0.17 with torch >= 2.6): every
saved checkpoint gets a fresh ``uuid`` (U1) in ``hyper_parameters["metadata"]``
and the inference file saved beside it carries U1 too; the training file's
embedded anemoi.json then gets a second fresh uuid (U2, ``embedded_uuid``). A
session started from a checkpoint sets ``parent_uuid`` to that checkpoint's U1
in every checkpoint it writes; a resume keeps the ``run_id``, a fork gets a
new one and records ``fork_run_id``. A pickled inference model keeps what
torch-geometric's message passing keeps: type annotations
(``types.GenericAlias``, ``typing.Union``), ``inspect._empty`` and its
``Inspector`` objects.
"""

from __future__ import annotations

from anemoi_ckpt_nb.examples.content import (
    DEFAULT_MODULE_VERSIONS,
    FORCINGS,
    VARIABLES,
    ExampleCheckpoint,
    make_metadata,
    make_weights,
)
from anemoi_ckpt_nb.examples.modules import throwaway_modules
from anemoi_ckpt_nb.examples.runs import Relation, write_example_project, write_run
from anemoi_ckpt_nb.examples.training import write_training_checkpoint
from anemoi_ckpt_nb.examples.weights_only import write_inference_checkpoint, write_safetensors, write_state_dict

# The names tests and benchmarks used when this was one module.
_throwaway_modules = throwaway_modules
_make_weights = make_weights

__all__ = [
    "DEFAULT_MODULE_VERSIONS",
    "FORCINGS",
    "VARIABLES",
    "ExampleCheckpoint",
    "Relation",
    "make_metadata",
    "write_example_project",
    "write_inference_checkpoint",
    "write_run",
    "write_safetensors",
    "write_state_dict",
    "write_training_checkpoint",
]
