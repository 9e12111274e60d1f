"""Converting many training checkpoints from Python, with a progress bar and a report that displays.

:func:`anemoi_ckpt_nb.conversion.batch.convert_many` does the work and calls back;
this layer adds what a person watching needs: tqdm's bar (the widget in
Jupyter, text on a terminal, nothing in a batch log) and a :class:`ConvertReport`
that shows as a table in a notebook and as lines elsewhere.

    >>> from anemoi_ckpt_nb import convert_many
    >>> report = convert_many(["run/*.ckpt"], "inference/", jobs=2)
    >>> report            # a table in Jupyter: one row per input
    >>> report.failed     # the inputs that failed, with their errors
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ByteProgress:
    """A tqdm bar fed with ``(done, total)`` byte counts; :meth:`write` prints above it."""

    bar: Any

    def update(self, done: int, total: int) -> None:
        if self.bar is None:  # hidden
            return
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def write(self, line: str) -> None:
        if self.bar is None:
            print(line, file=sys.stdout, flush=True)
            return
        self.bar.write(line, file=sys.stdout)


@contextlib.contextmanager
def byte_progress(desc: str, *, show: bool | None = None) -> Iterator[ByteProgress]:
    """A byte-counting progress bar for the duration of the block.

    Args:
        desc: Its label.
        show: True or False to force it; None (default): shown in a notebook
            or on a terminal, hidden in batch logs (stderr redirected).
    """
    if show is None:
        # tqdm's own rule, told before importing it (tqdm.auto brings asyncio: a few hundredths
        # of a second of every conversion's start): the console bar hides when stderr is not a
        # terminal, the notebook's always shows.
        show = sys.stderr.isatty() or "ipykernel" in sys.modules
    if not show:
        yield ByteProgress(None)
        return
    from tqdm.auto import tqdm

    bar = tqdm(
        total=0,
        unit="B",
        unit_scale=True,  # kB/MB/GB of 1000 bytes, as sizes are shown everywhere else
        desc=desc,
        file=sys.stderr,
        leave=False,
    )
    try:
        yield ByteProgress(bar)
    finally:
        bar.close()


class ConvertReport(list):
    """The outcomes of :func:`convert_many`, one per input, in input order (a ``list``).

    Each item is a :class:`~anemoi_ckpt_nb.conversion.batch.ConvertOutcome`: ``ok``,
    ``source``, and ``result`` (a ``ConvertResult``) or ``error``.
    """

    def __init__(self, outcomes: Iterable[Any], *, out_dir: str | Path = "") -> None:
        super().__init__(outcomes)
        self.out_dir = Path(out_dir)

    @property
    def ok(self) -> bool:
        """True when every input was converted."""
        return all(outcome.ok for outcome in self)

    @property
    def results(self) -> list[Any]:
        """The ``ConvertResult`` of each input converted."""
        return [outcome.result for outcome in self if outcome.ok]

    @property
    def failed(self) -> list[Any]:
        """The outcomes of the inputs that failed (``source``, ``error``)."""
        return [outcome for outcome in self if not outcome.ok]

    def __str__(self) -> str:
        from anemoi_ckpt_nb.notebook.text import convert_text

        return convert_text(self)

    def __repr__(self) -> str:
        return f"<ConvertReport {self.out_dir}: {len(self.results)} converted, {len(self.failed)} failed>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        from anemoi_ckpt_nb.notebook.html import convert_report

        return convert_report(self, title=str(self.out_dir))


def convert_many(
    sources: Iterable[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    format: str = "anemoi",
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
    echo: bool = False,
    on_outcome: Callable[[Any], None] | None = None,
) -> ConvertReport:
    """Convert several training checkpoints into ``out_dir``, ``jobs`` at a time, with a progress bar.

    A failure in one input (corrupt, no weights, disk full, permission
    denied) is recorded in its outcome and the others go on.

    Args:
        sources: Paths or glob patterns (``"run/*.ckpt"``); one string is one pattern.
        out_dir: The folder for the outputs (created if missing).
        format: ``"anemoi"`` or ``"safetensors"``.
        jobs: Conversions at once.
        overwrite: Replace existing outputs.
        progress: Show the bar (True), hide it (False), or (None) show it in a
            notebook or on a terminal only.
        echo: Print each input's result line (as ``anemoi-ckpt convert`` does)
            as soon as it is known, above the bar.
        on_outcome: Called with each outcome as soon as it is known.

    Returns:
        A :class:`ConvertReport` (a list of outcomes, in input order).

    Raises:
        ConvertError: a bad format or ``jobs``, or ``out_dir`` cannot be created.
    """
    from anemoi_ckpt_nb.conversion.batch import convert_many as _convert_many
    from anemoi_ckpt_nb.notebook.text import convert_line

    if isinstance(sources, (str, Path)):
        sources = [sources]
    with byte_progress("convert", show=progress) as bar:

        def reported(outcome: Any) -> None:
            if echo:
                bar.write(convert_line(outcome))
            if on_outcome is not None:
                on_outcome(outcome)

        outcomes = _convert_many(
            sources, out_dir, format=format, jobs=jobs, overwrite=overwrite, progress=bar.update, on_outcome=reported
        )
    return ConvertReport(outcomes, out_dir=out_dir)
