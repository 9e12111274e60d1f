"""Convert training checkpoints to inference checkpoints: streaming, verified, deterministic.

A Lightning training checkpoint holds the model weights, the optimizer state
(about twice the weights for Adam), loops, callbacks and hyper-parameters. An
inference checkpoint needs only the weights and the metadata. :func:`convert`
writes them in one pass, reading only the weights' bytes where the reader says
they lie (:meth:`CheckpointFile.tensor_span`; the optimizer state is never
unpickled into tensors nor read, except by the sha256 of the whole source for
``converted_from``, computed in other threads meanwhile and skipped when the
caller knows it), with memory bounded by a few 1 MiB chunks (and three 4 MiB
ones for that hash) plus at most one tensor (a non-contiguous one is copied),
whatever the size of the file.

**Names.** anemoi-training saves its inference checkpoint by pickling
``trainer.model.model`` (``AnemoiCheckpoint._torch_drop_down`` in
``anemoi/training/diagnostics/callbacks/checkpoint.py``): the
``AnemoiModelInterface`` held by the Lightning module as its ``model``
attribute. Its ``state_dict`` keys are therefore the Lightning ``state_dict``
keys that start with ``model.``, with that first ``model.`` removed::

    model.model.encoder.emb_nodes_src.weight   ->  model.encoder.emb_nodes_src.weight
    model.pre_processors.normalizer._norm_mul  ->  pre_processors.normalizer._norm_mul
    loss.node_weights (not under model.)       ->  dropped (belongs to the Lightning module)

so ``AnemoiModelInterface.load_state_dict(torch.load(path, weights_only=True))``
accepts the output. The names of an inference checkpoint given as source are
kept as they are.

**Formats.**

* ``anemoi`` (default): a torch zip archive of a plain ``dict`` name -> tensor
  that ``torch.load(path, weights_only=True)`` opens (``mmap=True`` too), with
  the metadata at ``<top>/anemoi-metadata/anemoi.json`` and the supporting
  arrays beside it as anemoi-utils' ``save_metadata`` lays them out, so
  ``anemoi.utils.checkpoints.load_metadata(path, supporting_arrays=True)`` and
  ``anemoi-utils metadata`` read it.
* ``safetensors``: no pickle at all; the metadata JSON under the header key
  ``"anemoi"``, each supporting array a tensor named
  ``anemoi-supporting-arrays/<key>`` (see :mod:`anemoi_ckpt_nb.read.embedded`).

Both get a sidecar ``<file name>.json`` holding the same metadata as the
archive: the training metadata (``hyper_parameters["metadata"]``, supporting
arrays described in ``supporting_arrays_paths`` but kept as arrays in the
archive) with a fresh ``uuid``, ``converted_from`` = ``{uuid, sha256, path}`` of
the training checkpoint and ``conversion`` = ``{tool, version, time, format}``.

**Safety.** Everything is written to a hidden temporary file in the destination
folder, flushed to disk (while it is verified), reopened by the reader and
compared tensor by tensor (CRC-32 of the bytes read back where the reopened file
says each tensor lies, against the bytes read from the source; torch or
safetensors must also open it), and only then renamed into place; the sidecar is renamed
last, so a sidecar always describes a complete archive. A failure or an
interruption leaves nothing under the final names. The output is deterministic:
the same source gives byte-identical weights (only the embedded metadata's
``uuid`` and ``conversion.time`` differ between two conversions).
"""

from __future__ import annotations

import datetime as _dt
import errno
import glob
import json
import os
import sys
import threading
import time
import uuid as _uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anemoi_ckpt_nb.errors import CheckpointChangedError, CheckpointReadError, CkptError, ConvertError

if TYPE_CHECKING:
    from anemoi_ckpt_nb.conversion.files import SourceFile

FORMATS = ("anemoi", "safetensors")
SUFFIXES = {"anemoi": ".ckpt", "safetensors": ".safetensors"}
#: Prefix anemoi-training gives inference checkpoints (``_get_inference_checkpoint_filepath``).
OUTPUT_PREFIX = "inference-"
LIGHTNING_PREFIX = "model."
TOOL = "anemoi-ckpt-nb"
OVERWRITE_HINT = "pass --overwrite, or overwrite=True in Python, to replace it"

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)``: bytes of tensors copied so far, and in all."""


@dataclass(frozen=True)
class ConvertResult:
    """What one conversion wrote."""

    source: Path
    destination: Path
    sidecar: Path
    format: str
    #: The fresh uuid of the inference checkpoint.
    uuid: str
    source_uuid: str | None
    source_sha256: str
    #: sha256 and size of the file at ``destination``.
    sha256: str
    size: int
    tensors: int
    weights_bytes: int
    #: Names of the source's state dict that are not model weights and were left out.
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The metadata written into the archive and the sidecar.
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (without the metadata, which is in the sidecar)."""
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "sidecar": str(self.sidecar),
            "format": self.format,
            "uuid": self.uuid,
            "source_uuid": self.source_uuid,
            "source_sha256": self.source_sha256,
            "sha256": self.sha256,
            "size": self.size,
            "tensors": self.tensors,
            "weights_bytes": self.weights_bytes,
            "dropped": list(self.dropped),
            "seconds": round(self.seconds, 3),
        }


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
        return {"ok": False, "source": str(self.source), "error": str(self.error)}


# --- the public functions ----------------------------------------------------------


def convert(
    source: str | Path,
    destination: str | Path,
    *,
    format: str = "anemoi",
    overwrite: bool = False,
    progress: Progress | None = None,
    source_sha256: str | None = None,
) -> ConvertResult:
    """Write the inference checkpoint of a training checkpoint.

    Args:
        source: a Lightning training checkpoint (an Anemoi inference checkpoint
            with a pickled model is accepted too and keeps its names).
        destination: the file to write, or an existing folder to write
            ``inference-<stem>.ckpt`` (``.safetensors``) into.
        format: ``"anemoi"`` (torch zip with embedded metadata) or ``"safetensors"``.
        overwrite: replace an existing destination (and its sidecar).
        progress: called as ``progress(done, total)`` with bytes of tensors copied.
        source_sha256: the source's sha256 if already known (the catalogue
            passes the one it registered); otherwise it is computed while the
            conversion runs, reading the whole source file once.

    Returns:
        What was written, with the sha256 of the output.

    Raises:
        ConvertError: a bad format or destination, an existing destination
            without ``overwrite``, a source that cannot be read or holds no
            weights, no space left, no permission, or a failed verification.
            It names the source and the destination and says what to do.
    """
    source = Path(source)
    target = _destination(source, destination, format)
    checkpoint = _open(source, target)
    try:
        return _convert_open(
            checkpoint, source, target, format=format, overwrite=overwrite, progress=progress, source_sha256=source_sha256
        )
    finally:
        checkpoint.close()


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
            ``inference-<stem>.ckpt`` (``.safetensors``).
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
    from concurrent.futures import ThreadPoolExecutor

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
    for pattern, path in _expand(sources):
        if path is None:
            error = ConvertError(pattern, out, "no file matches", hint="check the path or the glob pattern")
            outcomes.append(ConvertOutcome(Path(pattern), error=error))
            continue
        key = path.resolve()
        if key in seen_sources:
            continue
        seen_sources.add(key)
        target = out / default_name(path, format)
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
    # files must not hold hundreds of open files and maps.
    readable: list[tuple[int, Path, Path]] = []

    def measure(item: tuple[int, Path, Path]) -> None:
        index, path, target = item
        try:
            checkpoint = _open(path, target)
            try:
                totals[index] = sum(info.nbytes for _, _, info in _plan(checkpoint, path, target)[0])
            finally:
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
    run_all(measure, planned)
    readable.sort()
    run_all(convert_one, readable)
    return [outcome for outcome in outcomes if outcome is not None]


def default_name(source: str | Path, format: str = "anemoi") -> str:
    """``inference-<stem>.ckpt`` or ``inference-<stem>.safetensors``, as anemoi-training names them."""
    return f"{OUTPUT_PREFIX}{Path(source).stem}{SUFFIXES[format]}"


def sidecar_path(destination: str | Path) -> Path:
    """The JSON sidecar of an output file: ``<file name>.json``."""
    destination = Path(destination)
    return destination.with_name(destination.name + ".json")


def map_name(name: str, kind: str = "training") -> str | None:
    """The inference name of a state dict entry, or ``None`` when it is not a model weight.

    ``model.<rest>`` -> ``<rest>`` for a training checkpoint (anemoi-training
    pickles the Lightning module's ``model`` attribute); other names are dropped.
    An inference checkpoint's names are kept.
    """
    if kind != "training":
        return name
    if name.startswith(LIGHTNING_PREFIX) and len(name) > len(LIGHTNING_PREFIX):
        return name[len(LIGHTNING_PREFIX) :]
    return None


# --- planning ----------------------------------------------------------------------


def _check_format(format: str, source: object, destination: object) -> None:
    if format not in FORMATS:
        raise ConvertError(
            source, destination, f"unknown format {format!r}", hint=f"use one of: {', '.join(FORMATS)}"
        )


def _destination(source: Path, destination: str | Path, format: str) -> Path:
    _check_format(format, source, destination)
    target = Path(destination)
    if target.is_dir():
        return target / default_name(source, format)
    # "out/" or "out" that does not exist is a folder someone forgot to create, not a file name.
    if str(destination).endswith(("/", os.sep)) or not target.suffix:
        raise ConvertError(source, target, f"the folder {target} does not exist", hint=f"create it: mkdir -p {target}")
    if not target.parent.is_dir():
        raise ConvertError(
            source, target, f"the folder {target.parent} does not exist", hint=f"create it: mkdir -p {target.parent}"
        )
    if format == "anemoi" and target.suffix == ".safetensors":
        raise ConvertError(source, target, "a .safetensors name for the anemoi format", hint="add --format safetensors")
    if format == "safetensors" and target.suffix != ".safetensors":
        raise ConvertError(source, target, "the safetensors format needs a .safetensors name", hint="rename the destination")
    return target


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


def _open(source: Path, target: Path) -> Any:
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    try:
        return open_checkpoint(source)
    except Exception as error:
        raise _as_convert_error(source, target, error) from error


def _plan(checkpoint: Any, source: Path, target: Path) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """``(output name, source name, TensorInfo)`` of the weights to write, in file order, and the names left out.

    Raises:
        ConvertError: the source is not a training or inference checkpoint, or holds no weights.
    """
    kind = checkpoint.kind
    if kind not in ("training", "inference"):
        raise ConvertError(
            source,
            target,
            f"is a {kind} file, not a training checkpoint",
            hint="it has no Lightning state_dict to convert; inspect it with: anemoi-ckpt inspect " + str(source),
        )
    planned: list[tuple[str, str, Any]] = []
    dropped: list[str] = []
    for name, info in checkpoint.weights.items():
        mapped = map_name(name, kind)
        if mapped is None:
            dropped.append(name)
            continue
        if getattr(info, "layout", "strided") != "strided":
            raise ConvertError(
                source,
                target,
                f"the weight {name} is a {info.layout} tensor; inference checkpoints hold dense tensors only",
                hint="make it dense in the model (tensor.to_dense()) before saving, or keep it out of the state_dict",
            )
        _check_not_broadcast(checkpoint, name, info, source, target)
        planned.append((mapped, name, info))
    if not planned:
        raise ConvertError(
            source,
            target,
            "holds no model weights (no state_dict entry under 'model.')",
            hint="inspect it with: anemoi-ckpt inspect " + str(source),
        )
    return planned, dropped


#: The most bytes a weight whose elements overlap in the file (an expanded, stride-0 view)
#: may be written out as: its dense copy is made in memory, and a file that claims a huge
#: shape over a few stored bytes would otherwise exhaust it.
MAX_BROADCAST_BYTES = 64 * 1024 * 1024


def _check_not_broadcast(checkpoint: Any, name: str, info: Any, source: Path, target: Path) -> None:
    """Refuse a weight that would grow far beyond the bytes the file holds for it.

    Raises:
        ConvertError: a view whose dense size exceeds its storage and :data:`MAX_BROADCAST_BYTES`.
    """
    if info.nbytes <= MAX_BROADCAST_BYTES or checkpoint.tensor_span(name) is not None:
        return  # small, or a plain run of the file's bytes
    stored = checkpoint.tensor(name).untyped_storage().nbytes()
    if info.nbytes > stored:
        from anemoi_ckpt_nb.read.reader import format_bytes

        raise ConvertError(
            source,
            target,
            f"the weight {name} is a view of {format_bytes(stored)} stored that would be written out as "
            f"{format_bytes(info.nbytes)} (its elements overlap: an expanded tensor)",
            hint="save it as a contiguous tensor (tensor.contiguous()) in the model, or leave it out of the state_dict",
        )


def _entries(planned: list[tuple[str, str, Any]], files: SourceFile) -> list[Any]:
    """The planned weights as writer entries that read their bytes from ``files``."""
    from anemoi_ckpt_nb.conversion.writers import TensorEntry

    return [
        TensorEntry(
            name=mapped,
            dtype=str(info.dtype).removeprefix("torch."),
            shape=tuple(int(n) for n in info.shape),
            nbytes=int(info.nbytes),
            chunks=_guarded(files.reader(name)),
        )
        for mapped, name, info in planned
    ]


def _guarded(read: Callable[[], Iterable[Any]]) -> Callable[[], Iterator[Any]]:
    """Tell source failures (raised while reading) from destination ones (raised while writing)."""

    def chunks() -> Iterator[Any]:
        try:
            yield from read()
        except (_SourceError, CheckpointChangedError):
            raise
        except (OSError, ValueError, RuntimeError, CkptError) as error:
            raise _SourceError(str(error)) from error

    return chunks


class _SourceError(Exception):
    """Reading the source failed mid-way (as opposed to writing the destination)."""


class _Failure(Exception):
    """A failure explained in words; becomes a ConvertError naming source and destination."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# --- the conversion ----------------------------------------------------------------


def _convert_open(
    checkpoint: Any,
    source: Path,
    target: Path,
    *,
    format: str,
    overwrite: bool,
    progress: Progress | None,
    source_sha256: str | None = None,
) -> ConvertResult:
    started = time.monotonic()
    sidecar = sidecar_path(target)
    if source.resolve() == target.resolve():
        raise ConvertError(source, target, "the destination is the source", hint="choose another destination")
    if not overwrite:
        for path, what in ((target, "the destination"), (sidecar, f"its sidecar {sidecar.name}")):
            if path.exists():
                raise ConvertError(source, target, f"{what} already exists", hint=OVERWRITE_HINT)
    if sys.byteorder != "little":
        raise ConvertError(source, target, "conversion runs only on little-endian machines")
    planned, dropped = _plan(checkpoint, source, target)
    arrays = checkpoint.supporting_arrays or {}

    from anemoi_ckpt_nb.conversion.files import SourceFile, SourceHash, publish, unlink_quietly, write_sidecar
    from anemoi_ckpt_nb.conversion.writers import Digests

    new_uuid = str(_uuid.uuid4())
    tmp = target.with_name(f".{target.name}.{new_uuid}.tmp")
    tmp_sidecar = sidecar.with_name(f".{sidecar.name}.{new_uuid}.tmp")
    try:
        files = SourceFile(source, checkpoint)
    except OSError as error:
        raise _os_error(source, target, error) from error
    try:
        # The whole source's sha256 (for converted_from) is computed in a thread meanwhile.
        hasher = SourceHash(source) if source_sha256 is None else None
    except OSError as error:
        files.close()
        raise _os_error(source, target, error) from error
    digests = Digests(("output",), release=files.pool.give_back)
    try:
        try:
            entries = _entries(planned, files)
            total = sum(e.nbytes for e in entries)
            base = _base_metadata(checkpoint)

            def metadata_of() -> dict[str, Any]:
                try:
                    sha256 = source_sha256 if hasher is None else hasher.result()
                except OSError as error:
                    raise _SourceError(f"reading it for its sha256 failed: {error}") from error
                return _enrich(base, checkpoint, source, new_uuid, sha256, format)

            counted = _counting(entries, total, progress)
            write = _write_anemoi if format == "anemoi" else _write_safetensors
            # Exclusive create: the name holds a fresh uuid, so an existing file is not ours.
            with open(tmp, "xb") as file:
                sha256, crcs, metadata, written = write(file, target, counted, arrays, metadata_of, digests)
                _check_source_unchanged(checkpoint, source, planned, crcs)
                _verify_while_syncing(file, lambda: _verify(tmp, format, written, crcs, metadata))
            write_sidecar(tmp_sidecar, metadata)
            publish(tmp, tmp_sidecar, target, sidecar, overwrite=overwrite)
        except BaseException:
            if hasher is not None:
                hasher.cancel()
            for path in (tmp, tmp_sidecar):
                unlink_quietly(path)
            raise
        finally:
            digests.close()
            files.close()
    except ConvertError:
        raise
    except _Failure as error:
        raise ConvertError(source, target, error.message, hint=error.hint) from error
    except CheckpointChangedError as error:
        raise ConvertError(source, target, error.reason, hint=CHANGED_HINT) from error
    except _SourceError as error:
        raise ConvertError(
            source,
            target,
            f"the source is truncated or corrupt: {error}",
            hint="check it with: anemoi-ckpt inspect " + str(source),
        ) from error
    except OSError as error:
        raise _os_error(source, target, error) from error
    except ValueError as error:  # a writer found sizes that do not add up
        raise ConvertError(source, target, str(error), hint="check the source with: anemoi-ckpt inspect " + str(source)) from error
    return ConvertResult(
        source=source,
        destination=target,
        sidecar=sidecar,
        format=format,
        uuid=new_uuid,
        source_uuid=metadata["converted_from"]["uuid"],
        source_sha256=metadata["converted_from"]["sha256"],
        sha256=sha256,
        size=target.stat().st_size,
        tensors=len(entries),
        weights_bytes=total,
        dropped=dropped,
        seconds=time.monotonic() - started,
        metadata=metadata,
    )


#: What to do about a source that changed while it was converted.
CHANGED_HINT = "wait until the program writing it has finished (or convert a finished checkpoint), then retry"


def _check_source_unchanged(
    checkpoint: Any, source: Path, planned: list[tuple[str, str, Any]], crcs: dict[str, int]
) -> None:
    """The source must still be the file opened, and the bytes read those its archive records.

    A training job rewriting ``last.ckpt`` in place while it is converted would
    otherwise give an output, and a ``converted_from.sha256``, of a mix of two
    files. The CRC-32 of each weight read (computed while writing) is compared
    with the one the zip archive records for it, which also catches a damaged source.

    Raises:
        CheckpointChangedError: the file was replaced or rewritten since it was opened.
        _Failure: a weight's bytes do not match its recorded CRC-32.
    """
    if checkpoint.changed_on_disk():
        raise CheckpointChangedError(source, "it changed on disk while it was being converted")
    for mapped, name, _ in planned:
        expected = checkpoint.tensor_crc32(name)
        if expected is not None and mapped in crcs and crcs[mapped] != expected:
            raise _Failure(
                f"the bytes read for {name} do not match the CRC-32 its archive records: "
                "the file is damaged, or changed while it was read",
                hint=f"check it with: anemoi-ckpt inspect {source}; if it is registered, restore it from the catalogue",
            )


def _counting(entries: list[Any], total: int, progress: Progress | None) -> list[Any]:
    """The same entries, their reads reporting progress (bytes copied so far, total)."""
    from anemoi_ckpt_nb.conversion.writers import TensorEntry

    if progress is None:
        return entries
    state = {"done": 0}

    def wrap(read: Callable[[], Iterable[Any]]) -> Callable[[], Iterator[Any]]:
        def chunks() -> Iterator[Any]:
            for chunk in read():
                yield chunk
                state["done"] += memoryview(chunk).nbytes
                progress(state["done"], total)

        return chunks

    progress(0, total)
    return [TensorEntry(e.name, e.dtype, e.shape, e.nbytes, wrap(e.chunks)) for e in entries]


def _base_metadata(checkpoint: Any) -> dict[str, Any]:
    """The source's metadata as plain JSON data (a deep copy), without its array paths."""
    metadata = checkpoint.metadata or {}
    try:
        plain = json.loads(json.dumps(metadata, default=_json_default))
    except (TypeError, ValueError) as error:
        raise _Failure(f"the metadata cannot be written as JSON: {error}") from error
    plain.pop("supporting_arrays_paths", None)
    return plain


def _json_default(value: Any) -> Any:
    # numpy scalars slip into metadata dicts; arrays do not belong there (they are supporting arrays).
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _enrich(
    base: dict[str, Any], checkpoint: Any, source: Path, new_uuid: str, sha256: str, format: str
) -> dict[str, Any]:
    from anemoi_ckpt_nb import __version__

    metadata = dict(base)
    metadata["uuid"] = new_uuid
    metadata["converted_from"] = {
        "uuid": checkpoint.uuid or base.get("uuid"),
        "sha256": sha256,
        "path": str(source.resolve()),
    }
    metadata["conversion"] = {
        "tool": TOOL,
        "version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "format": format,
    }
    return metadata


def _write_anemoi(
    file: Any,
    target: Path,
    entries: list[Any],
    arrays: dict[str, Any],
    metadata_of: Callable[[], dict[str, Any]],
    digests: Any,
) -> tuple[str, dict[str, int], dict[str, Any], list[Any]]:
    from anemoi_ckpt_nb.read import embedded
    from anemoi_ckpt_nb.conversion.writers import HashingFile, TorchZipWriter

    # torch names the top folder after the file: the final name, not the temporary one.
    top = target.stem
    out = HashingFile(file, digests)
    writer = TorchZipWriter(out, top)
    crcs = writer.add_tensors(entries)
    # The metadata comes after the weights, where save_metadata appends it (and the source
    # hash it holds has had the whole copy to be computed).
    metadata, extra = embedded.embedded_entries(top, metadata_of(), arrays)
    for entry, data in extra:
        writer.add_bytes(entry.removeprefix(top + "/"), data)
    writer.finish()
    # The supporting arrays are checked by zipfile's own CRCs when the verification reads them.
    return out.finish(), crcs, metadata, entries


def _write_safetensors(
    file: Any,
    target: Path,
    entries: list[Any],
    arrays: dict[str, Any],
    metadata_of: Callable[[], dict[str, Any]],
    digests: Any,
) -> tuple[str, dict[str, int], dict[str, Any], list[Any]]:
    from anemoi_ckpt_nb.read import embedded
    from anemoi_ckpt_nb.conversion.writers import HashingFile, SafetensorsWriter, TensorEntry, safetensors_order

    tensors, paths = embedded.safetensors_arrays(arrays)
    array_entries = [
        TensorEntry(name, array.dtype.name, tuple(array.shape), array.nbytes, _array_chunks(array)) for name, array in tensors
    ]
    # The metadata is in the header, which comes first: the source hash must be known now.
    metadata = dict(metadata_of())
    metadata["supporting_arrays_paths"] = paths
    ordered = safetensors_order(entries + array_entries)
    try:
        writer = SafetensorsWriter(ordered, {embedded.SAFETENSORS_METADATA_KEY: json.dumps(metadata)})
    except ValueError as error:
        raise _Failure(str(error), hint="use --format anemoi for this dtype") from error
    out = HashingFile(file, digests)
    crcs = writer.write(out)
    return out.finish(), crcs, metadata, ordered


def _array_chunks(array: Any) -> Callable[[], list[Any]]:
    """A supporting array's bytes as one chunk (they are small: a few values per grid point)."""
    import numpy as np

    data = array.reshape(-1).view(np.uint8)
    return lambda: [data] if data.nbytes else []


def _verify_while_syncing(file: Any, verify: Callable[[], None]) -> None:
    """Flush ``file`` to disk in a thread while ``verify()`` reads it back; raise the first failure.

    fsync waits for the disk, the verification for the CPU: done one after the
    other they add up, done together the shorter one is hidden.
    """
    failures: list[BaseException] = []

    def sync() -> None:
        try:
            os.fsync(file.fileno())
        except BaseException as error:  # handed to the caller below
            failures.append(error)

    thread = threading.Thread(target=sync, name="convert-fsync", daemon=True)
    thread.start()
    try:
        verify()
    finally:
        thread.join()  # the file stays open until the sync is done, whatever happened
    if failures:
        raise failures[0]


# --- verification, publication ------------------------------------------------------


def _verify(path: Path, format: str, entries: list[Any], crcs: dict[str, int], metadata: dict[str, Any]) -> None:
    from anemoi_ckpt_nb.read import embedded
    from anemoi_ckpt_nb.conversion.writers import VerificationError, verify_safetensors, verify_torch_zip

    try:
        if format == "anemoi":
            verify_torch_zip(path, entries, crcs, metadata)
        else:
            verify_safetensors(path, entries, crcs, {embedded.SAFETENSORS_METADATA_KEY: json.dumps(metadata)})
    except VerificationError as error:
        raise _Failure(f"verification failed: {error}", hint="the disk or memory may be faulty; try again") from error


# --- errors ------------------------------------------------------------------------


def _os_error(source: object, target: Path, error: OSError) -> ConvertError:
    folder = target.parent if target.suffix else target
    if error.errno == errno.EEXIST:
        return ConvertError(source, target, f"{error.filename or target} appeared meanwhile", hint=OVERWRITE_HINT)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ConvertError(
            source, target, f"no space left in {folder}", hint="free some space there, or convert into another folder with -o"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConvertError(
            source, target, f"permission denied: {error.filename or folder}", hint="choose a folder you can write to with -o"
        )
    if error.errno == errno.EFBIG:
        return ConvertError(
            source, target, "file too large for this file system or process limit", hint="check `ulimit -f`, or use another folder"
        )
    return ConvertError(source, target, f"{error.strerror or error}: {error.filename or target}")


def _as_convert_error(source: object, target: object, error: BaseException) -> Exception:
    if isinstance(error, ConvertError):
        return error
    if isinstance(error, CheckpointReadError):
        message = error.message.removeprefix(f"{error.path}: ")  # the source is named already
        return ConvertError(
            source, target, f"cannot read the source: {message}", hint=error.hint or f"check it with: anemoi-ckpt inspect {source}"
        )
    if isinstance(error, CkptError):
        return ConvertError(source, target, error.message, hint=error.hint)
    if isinstance(error, OSError):
        return _os_error(source, Path(str(target)), error)
    if isinstance(error, Exception):
        return error
    raise error
