"""Converting many checkpoints at once: glob patterns expanded, ``jobs`` conversions at a time, one outcome per input.

A failure in one input is recorded in its :class:`ConvertOutcome` and the others go on; the face with a progress bar
and a displayable report is :func:`anemoi_ckpt_nb.api.batch.convert_many`.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.conversion.plan import (
    ConvertResult,
    Progress,
    _as_convert_error,
    _check_format,
    _os_error,
    _plan,
    default_name,
)
from anemoi_ckpt_nb.conversion.write import _convert_open, _open
from anemoi_ckpt_nb.errors import ConvertError, describe_error


@dataclass(frozen=True)
class ConvertOutcome:
    """The result of one input of :func:`convert_many`, or the error that stopped it."""

    source: Path
    result: ConvertResult | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.result is not None:
            return {"ok": True, **self.result.to_dict()}
        # The command line's words: --json is what `anemoi-ckpt convert` prints.
        return {"ok": False, "source": str(self.source), "error": describe_error(self.error)}


def convert_many(
    sources: Iterable[str | Path],
    out_dir: str | Path,
    *,
    format: str = "anemoi",
    jobs: int = 1,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_outcome: Callable[[ConvertOutcome], None] | None = None,
) -> list[ConvertOutcome]:
    """Convert several training checkpoints into one folder, ``jobs`` at a time.

    A failure in one input is recorded in its outcome and the others go on.

    Args:
        sources: paths or glob patterns (``run/*.ckpt``); a pattern that matches
            nothing is an error outcome; the same file given twice is converted once.
        out_dir: the folder for the outputs (created if missing); each is named
            ``inference-<stem>.ckpt`` (``.safetensors``). Inputs from several folders
            keep their folders below the one they share: ``runs/<run id>/x.ckpt`` goes to
            ``<out_dir>/<run id>/inference-x.ckpt`` (anemoi-training names the files
            of every run alike); inputs from one folder go straight into ``out_dir``.
        format: ``"anemoi"`` or ``"safetensors"``.
        jobs: conversions running at once (threads: the work is I/O, hashing
            and copying, which release the GIL).
        overwrite: replace existing outputs.
        progress: called as ``progress(done, total)`` over all inputs.
        on_outcome: called with each outcome as soon as it is known.

    Returns:
        One outcome per input, in input order.

    Raises:
        ConvertError: a bad format or ``jobs``, or ``out_dir`` cannot be created.
    """
    _check_format(format, "", out_dir)
    if jobs < 1:
        raise ConvertError("", out_dir, f"jobs must be at least 1, not {jobs}", hint="use --jobs 1 or more")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _os_error("", out, error) from error

    outcomes: list[ConvertOutcome | None] = []
    planned: list[tuple[int, Path, Path]] = []
    seen_sources: set[Path] = set()
    seen_targets: dict[Path, Path] = {}
    expanded = list(_expand(sources))
    folders = {path.resolve().parent for _, path in expanded if path is not None}
    shared = Path(os.path.commonpath(folders)) if len(folders) > 1 else None
    for pattern, path in expanded:
        if path is None:
            error = ConvertError(pattern, out, "no file matches", hint="check the path or the glob pattern")
            outcomes.append(ConvertOutcome(Path(pattern), error=error))
            continue
        key = path.resolve()
        if key in seen_sources:
            continue
        seen_sources.add(key)
        below = path.resolve().parent.relative_to(shared) if shared is not None else Path()
        target = out / below / default_name(path, format)
        if target in seen_targets:
            error = ConvertError(
                path,
                target,
                f"has the same output name as {seen_targets[target]}",
                hint="convert inputs with the same file name into separate folders",
            )
            outcomes.append(ConvertOutcome(path, error=error))
            continue
        seen_targets[target] = path
        planned.append((len(outcomes), path, target))
        outcomes.append(None)

    lock = threading.Lock()
    done: dict[int, int] = {}
    totals: dict[int, int] = {}

    def report(index: int, outcome: ConvertOutcome) -> None:
        with lock:
            outcomes[index] = outcome
            if on_outcome is not None:
                on_outcome(outcome)

    for outcome in outcomes:
        if outcome is not None and on_outcome is not None:
            on_outcome(outcome)

    # Open every input first, so the progress total is known before copying starts and an
    # unreadable input is reported at once. Each is closed again: a batch of hundreds of
    # files must not hold hundreds of open files and maps. A single input stays open for
    # its conversion (reading its pickle again took 0.01 to 0.02 s of the command's 1 s).
    readable: list[tuple[int, Path, Path]] = []
    kept: dict[int, Any] = {}

    def measure(item: tuple[int, Path, Path]) -> None:
        index, path, target = item
        try:
            checkpoint = _open(path, target)
            try:
                totals[index] = sum(info.nbytes for _, _, info in _plan(checkpoint, path, target)[0])
            except BaseException:
                checkpoint.close()
                raise
            if len(planned) == 1:
                kept[index] = checkpoint
            else:
                checkpoint.close()
        except Exception as error:  # recorded per input; the others go on
            report(index, ConvertOutcome(path, error=_as_convert_error(path, target, error)))
            return
        with lock:
            readable.append(item)

    def convert_one(item: tuple[int, Path, Path]) -> None:
        index, path, target = item

        def on_progress(copied: int, _total: int) -> None:
            if cancelled.is_set():
                raise KeyboardInterrupt  # another input was interrupted: stop, and clean up
            with lock:
                done[index] = copied
                copied_all, total_all = sum(done.values()), sum(totals.values())
            if progress is not None:
                progress(copied_all, total_all)

        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # <out_dir>/<run id>/ for inputs of several runs
            checkpoint = kept.pop(index, None)
            if checkpoint is None:
                checkpoint = _open(path, target)
            try:
                result = _convert_open(checkpoint, path, target, format=format, overwrite=overwrite, progress=on_progress)
            finally:
                checkpoint.close()
            outcome = ConvertOutcome(path, result=result)
        except Exception as error:  # recorded per input; the others go on
            outcome = ConvertOutcome(path, error=_as_convert_error(path, target, error))
        with lock:
            done[index] = totals.get(index, 0)
        report(index, outcome)

    def run_all(work: Callable[[tuple[int, Path, Path]], None], items: list[tuple[int, Path, Path]]) -> None:
        if jobs == 1:
            for item in items:  # in this thread, so that Ctrl-C stops the conversion at once
                work(item)
            return
        from concurrent.futures import ThreadPoolExecutor  # (with logging: 4 ms that one job does without)

        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="convert") as pool:
            futures = [pool.submit(work, item) for item in items]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                cancelled.set()  # the running ones stop at their next chunk and remove their files
                for future in futures:
                    future.cancel()
                raise

    cancelled = threading.Event()
    try:
        run_all(measure, planned)
        readable.sort()
        run_all(convert_one, readable)
    finally:
        for checkpoint in kept.values():  # not converted: interrupted
            checkpoint.close()
    return [outcome for outcome in outcomes if outcome is not None]


def _expand(sources: Iterable[str | Path]) -> Iterator[tuple[str, Path | None]]:
    for source in sources:
        text = str(source)
        if isinstance(source, str) and glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                yield text, None
            for match in matches:
                yield text, Path(match)
        else:
            yield text, Path(source)
