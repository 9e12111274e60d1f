"""A tqdm progress bar as a storage progress callback (tqdm imported on use)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from anemoi_ckpt_nb.storage._transfer import part_path
from anemoi_ckpt_nb.storage.base import ProgressCallback

__all__ = ["part_path", "progress_bar", "resumed_bytes"]


def resumed_bytes(dest: str | Path) -> int:
    """Bytes an interrupted download of ``dest`` left in ``<dest>.part`` (0 if none).

    Use it as a progress bar's ``initial``: a resumed download only reports
    the bytes it still fetches.
    """
    try:
        return part_path(dest).stat().st_size
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def progress_bar(
    total: int, *, desc: str = "", initial: int = 0, disable: bool | None = None
) -> Iterator[ProgressCallback]:
    """A byte-counting tqdm bar, yielded as a callback for ``upload_file`` / ``download_file``.

    Args:
        total: Bytes of the whole transfer.
        desc: Label shown before the bar.
        initial: Bytes already done (see :func:`resumed_bytes`).
        disable: True hides the bar; None (default) hides it when stderr is not a terminal.

    Returns:
        A context manager yielding the callback; the bar closes on exit.
    """
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        initial=min(initial, total),
        desc=desc,
        unit="B",
        unit_scale=True,
        # kB/MB of 1000 bytes, as every size the project prints (read.summary.format_bytes).
        unit_divisor=1000,
        disable=disable,
        leave=False,
    ) as bar:
        yield bar.update
