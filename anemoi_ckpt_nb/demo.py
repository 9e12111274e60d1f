"""``anemoi-ckpt demo``: the whole catalogue story on a small example project, in seconds.

Writes a training run, a resume of it and a fork (with
:func:`anemoi_ckpt_nb.examples.write_example_project`), registers them in a
new local catalogue, converts the latest checkpoint to an inference
checkpoint, tags it ``candidate``, and hands back what the CLI prints.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anemoi_ckpt_nb.api import Catalogue, Checkpoint
from anemoi_ckpt_nb.errors import CatalogueError


def _epoch_of(checkpoints: list, uuid: str | None) -> int | str:
    return next((c.epoch for c in checkpoints if c.uuid == uuid), "?")


@dataclass
class DemoResult:
    """What the demo made."""

    folder: Path
    catalogue: Catalogue
    registered: list[Checkpoint]
    latest: Checkpoint
    converted: Checkpoint


def run_demo(
    folder: str | Path | None = None,
    *,
    say: Callable[[str], None] = lambda line: None,
    weights_bytes: int = 200_000,
) -> DemoResult:
    """Run the demo in ``folder`` (default: a new temporary folder), telling each step to ``say``.

    Args:
        folder: Where to put ``checkpoints/``, ``catalogue/`` and ``inference/``;
            must not hold a catalogue already.
        say: Called with one line per step.
        weights_bytes: Size of each example checkpoint's weights.

    Returns:
        The catalogue and the checkpoints made.

    Raises:
        CatalogueError: ``folder`` already holds a demo catalogue.
    """
    from anemoi_ckpt_nb import examples

    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="anemoi-ckpt-demo-"))
    runs, store, out = folder / "checkpoints", folder / "catalogue", folder / "inference"
    if (store / "catalogue.json").exists():
        raise CatalogueError(f"{folder}: a demo catalogue is already there", hint="pick another --dir, or delete that one")
    folder.mkdir(parents=True, exist_ok=True)

    project = examples.write_example_project(runs, weights_bytes=weights_bytes)
    base, resumed, forked = project["base"], project["resumed"], project["forked"]
    total = sum(len(v) for v in project.values())
    say(
        f"wrote {total} training checkpoints under {runs}: run {base[0].run_id[:8]} ({len(base)} epochs), "
        f"a resume of its last epoch ({len(resumed)} more), a fork from its epoch {_epoch_of(base, forked[0].parent_uuid)} "
        f"as run {forked[0].run_id[:8]} ({len(forked)} epochs)"
    )
    catalogue = Catalogue.create(store)
    say(f"created a catalogue in {catalogue.url} (protected tags: {', '.join(catalogue.protected_tags)})")

    registered = catalogue.register_run(runs)
    links = sum(1 for c in registered if c.parents)
    say(f"registered {len(registered)} checkpoints in lineage order; {links} link to the checkpoint they were resumed or forked from")

    latest_file = resumed[-1]
    latest = catalogue.get(latest_file.uuid)
    converted = latest.convert(out)
    say(
        f"converted the latest checkpoint {latest.uuid[:8]} (epoch {latest.epoch}) to {converted.filename} "
        f"in {out}, registered as {converted.uuid[:8]} (converted-from {latest.uuid[:8]})"
    )
    converted.tag("candidate")
    say(f"tagged {converted.uuid[:8]} candidate")
    return DemoResult(folder=folder, catalogue=catalogue, registered=registered, latest=latest, converted=converted)
