"""Training sessions of example checkpoints: a run, its resume, a fork, and a small project of all three."""

from __future__ import annotations

import uuid as _uuid
from pathlib import Path
from typing import Any, Literal

from anemoi_ckpt_nb.examples.content import ExampleCheckpoint
from anemoi_ckpt_nb.examples.training import write_training_checkpoint

Relation = Literal["resume", "fork"]


def write_run(
    folder: str | Path,
    *,
    checkpoints: int = 3,
    run_id: str | None = None,
    start_from: ExampleCheckpoint | None = None,
    relation: Relation = "resume",
    weights_bytes: int = 200_000,
    steps_per_epoch: int = 100,
    seed: int = 0,
    **options: Any,
) -> list[ExampleCheckpoint]:
    """Write the checkpoints of one training session, one per epoch.

    Files go to ``folder/<run_id>/anemoi-by_epoch-epoch_EEE-step_SSSSSS.ckpt``
    as anemoi-training names them.

    Args:
        checkpoints: how many epochs to save.
        run_id: for a fresh run; ignored when resuming (the run id is kept).
        start_from: the checkpoint this session starts from, if any.
        relation: ``"resume"`` continues ``start_from``'s run and epochs;
            ``"fork"`` starts a new run (new run id, ``fork_run_id`` set, epochs from 1).
        weights_bytes: about how many bytes of weights each checkpoint holds.
        options: passed on to :func:`write_training_checkpoint`.

    Returns:
        The checkpoints, oldest first.
    """
    if relation not in ("resume", "fork"):
        raise ValueError(f"relation must be 'resume' or 'fork', not {relation!r}")
    parent_uuid = start_from.uuid if start_from else None
    fork_run_id = None
    first_epoch = 1
    if start_from is not None and relation == "resume":
        run_id = start_from.run_id
        first_epoch = start_from.epoch + 1
    elif start_from is not None:
        fork_run_id = start_from.run_id
        run_id = run_id or str(_uuid.uuid4())
    run_id = run_id or str(_uuid.uuid4())
    written = []
    for epoch in range(first_epoch, first_epoch + checkpoints):
        step = epoch * steps_per_epoch
        written.append(
            write_training_checkpoint(
                Path(folder) / run_id / f"anemoi-by_epoch-epoch_{epoch:03d}-step_{step:06d}.ckpt",
                weights_bytes=weights_bytes,
                run_id=run_id,
                parent_uuid=parent_uuid,
                fork_run_id=fork_run_id,
                epoch=epoch,
                global_step=step,
                seed=seed + epoch,
                **options,
            )
        )
    return written


def write_example_project(folder: str | Path, *, weights_bytes: int = 200_000) -> dict[str, list[ExampleCheckpoint]]:
    """A small project: a run of three epochs, a resume of it, and a fork from its second epoch.

    Returns:
        ``{"base": [...], "resumed": [...], "forked": [...]}``, each oldest first.
    """
    base = write_run(folder, checkpoints=3, weights_bytes=weights_bytes)
    resumed = write_run(folder, checkpoints=2, start_from=base[-1], relation="resume", weights_bytes=weights_bytes)
    forked = write_run(folder, checkpoints=2, start_from=base[1], relation="fork", weights_bytes=weights_bytes, seed=100)
    return {"base": base, "resumed": resumed, "forked": forked}
