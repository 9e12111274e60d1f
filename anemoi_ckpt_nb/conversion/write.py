"""Running one conversion: read the source's tensors, write the output in its format, verify it, and check the source did not change meanwhile.

The output appears whole or not at all (a temporary beside it, verified, then published); see :mod:`.files`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import uuid as _uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from anemoi_ckpt_nb.conversion import formats
from anemoi_ckpt_nb.errors import CheckpointChangedError, CkptError, ConvertError

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.conversion.files import SourceFile
from anemoi_ckpt_nb.conversion.plan import (
    ConvertResult,
    Progress,
    _as_convert_error,
    _base_metadata,
    _enrich,
    _Failure,
    _os_error,
    _plan,
    refuse_to_replace,
    sidecar_path,
)


def _open(source: Path, target: Path) -> Any:
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    try:
        return open_checkpoint(source)
    except Exception as error:
        raise _as_convert_error(source, target, error) from error


def _entries(planned: list[tuple[str, str, Any]], files: SourceFile, checkpoint: Any) -> list[Any]:
    """The planned weights as writer entries that read their bytes from ``files``.

    A weight whose CRC-32 the source archive records is copied by the kernel (its bytes never
    pass through this process); the verification proves the output holds bytes of that CRC.
    """
    from anemoi_ckpt_nb.conversion.streams import TensorEntry

    entries = []
    for mapped, name, info in planned:
        crc = checkpoint.tensor_crc32(name)
        entries.append(
            TensorEntry(
                name=mapped,
                dtype=str(info.dtype).removeprefix("torch."),
                shape=tuple(int(n) for n in info.shape),
                nbytes=int(info.nbytes),
                chunks=_guarded(files.reader(name, copy=crc is not None)),
                crc=crc,
            )
        )
    return entries


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
    if format == "pickled":  # the model is built from the converted weights and pickled: needs anemoi-models here
        from anemoi_ckpt_nb.conversion.pickled import convert_pickled

        def weights(path: Path) -> ConvertResult:
            return _convert_open(checkpoint, source, path, format="anemoi", overwrite=False, progress=progress,
                                 source_sha256=source_sha256)

        return convert_pickled(checkpoint, source, target, overwrite=overwrite, convert_weights=weights)
    started = time.monotonic()
    sidecar = sidecar_path(target)
    refuse_to_replace(source, target, sidecar, overwrite=overwrite)
    if sys.byteorder != "little":
        raise ConvertError(source, target, "conversion runs only on little-endian machines")
    planned, dropped = _plan(checkpoint, source, target)
    from anemoi_ckpt_nb.conversion import inputs as model_inputs

    @functools.cache
    def extras() -> tuple[dict[str, Any], Any]:
        """The supporting arrays and the model inputs (graph, statistics): made with numpy, when a
        writer needs them (the anemoi format after the weights, while the output's hash catches up
        with the copy: numpy's import is 0.04 to 0.08 s; safetensors before, for its header)."""
        return checkpoint.supporting_arrays or {}, model_inputs.of_source(checkpoint, source, target)

    from anemoi_ckpt_nb.conversion.files import (
        SourceFile,
        SourceHash,
        publish,
        unlink_quietly,
        write_sidecar,
    )
    from anemoi_ckpt_nb.conversion.output import OutputFile, SourceEnded

    from anemoi_ckpt_nb.storage import temporaries

    new_uuid = str(_uuid.uuid4())
    tmp = target.with_name(f".{target.name}.{new_uuid}.tmp")
    tmp_sidecar = sidecar.with_name(f".{sidecar.name}.{new_uuid}.tmp")
    # What a killed conversion to this name left (no live one: each holds a lock on its own).
    for name in (target.name, sidecar.name):
        temporaries.sweep(target.parent, name_prefix=f".{name}.")
    try:
        files = SourceFile(source, checkpoint)
    except OSError as error:
        raise _os_error(source, target, error) from error
    try:
        # The whole source's sha256 (for converted_from) is computed in threads meanwhile.
        hasher = SourceHash(source) if source_sha256 is None else None
    except OSError as error:
        files.close()
        raise _os_error(source, target, error) from error
    try:
        try:
            entries = _entries(planned, files, checkpoint)
            total = sum(e.nbytes for e in entries)
            base = _base_metadata(checkpoint)

            def metadata_of() -> dict[str, Any]:
                try:
                    sha256 = source_sha256 if hasher is None else hasher.result()
                except OSError as error:
                    raise _SourceError(f"reading it for its sha256 failed: {error}") from error
                return _enrich(base, checkpoint, source, new_uuid, sha256, format)

            counted = _counting(entries, total, progress)
            write = formats._write_anemoi if format == "anemoi" else formats._write_safetensors
            # Exclusive create: the name holds a fresh uuid, so an existing file is not ours. Each
            # temporary stays locked until published, so another run's sweep never takes it.
            with temporaries.create_named(tmp) as held, temporaries.create_named(tmp_sidecar) as held_sidecar:
                with os.fdopen(held.fd, "wb", buffering=0) as file:
                    out = OutputFile(file.fileno(), tmp)
                    try:
                        try:
                            crcs, metadata, written = write(out, target, counted, extras, metadata_of)
                        except SourceEnded as error:
                            if checkpoint.changed_on_disk():
                                raise CheckpointChangedError(source, "it changed on disk while it was being converted") from error
                            raise _SourceError(str(error)) from error
                        # fsync waits for the disk, the read-back and the checks for the CPU: together.
                        out.start_sync()
                        _check_source_unchanged(checkpoint, source, planned, crcs)
                        sha256 = formats._verify(tmp, format, written, crcs, metadata, extras()[1], out,
                                         recheck=lambda: _check_copied_source(files, planned, entries, source))
                        out.sync()
                    finally:
                        out.close()
                write_sidecar(tmp_sidecar, metadata, fd=held_sidecar.fd)
                publish(tmp, tmp_sidecar, target, sidecar, overwrite=overwrite)
        except BaseException:
            if hasher is not None:
                hasher.cancel()
            for path in (tmp, tmp_sidecar):
                unlink_quietly(path)
            raise
        finally:
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
    (A weight copied by the kernel is written with the recorded CRC-32; the
    verification compares its bytes as the output holds them with it, and on a
    mismatch :func:`_check_copied_source` tells a damaged source from a bad copy.)

    Raises:
        CheckpointChangedError: the file was replaced or rewritten since it was opened.
        _Failure: a weight's bytes do not match its recorded CRC-32.
    """
    if checkpoint.changed_on_disk():
        raise CheckpointChangedError(source, "it changed on disk while it was being converted")
    for mapped, name, _ in planned:
        expected = checkpoint.tensor_crc32(name)
        if expected is not None and mapped in crcs and crcs[mapped] != expected:
            _damaged(source, name)


def _check_copied_source(files: SourceFile, planned: list[tuple[str, str, Any]], entries: list[Any], source: Path) -> None:
    """After a failed verification: a weight copied by the kernel whose bytes in the source itself
    differ from the CRC-32 its archive records is the source's fault (damaged or changed), not the copy's."""
    for (_, name, _), entry in zip(planned, entries):
        if entry.crc is not None and files.crc32(name) != entry.crc:
            _damaged(source, name)


def _damaged(source: Path, name: str) -> NoReturn:
    raise _Failure(
        f"the bytes read for {name} do not match the CRC-32 its archive records: "
        "the file is damaged, or changed while it was read",
        hint=f"check it with: anemoi-ckpt inspect {source}; if it is registered, restore it from the catalogue",
    )


def _counting(entries: list[Any], total: int, progress: Progress | None) -> list[Any]:
    """The same entries, their reads reporting progress (bytes copied so far, total)."""
    from anemoi_ckpt_nb.conversion.streams import TensorEntry, chunk_size

    if progress is None:
        return entries
    state = {"done": 0}

    def wrap(read: Callable[[], Iterable[Any]]) -> Callable[[], Iterator[Any]]:
        def chunks() -> Iterator[Any]:
            for chunk in read():
                yield chunk
                state["done"] += chunk_size(chunk)
                progress(state["done"], total)

        return chunks

    progress(0, total)
    return [TensorEntry(e.name, e.dtype, e.shape, e.nbytes, wrap(e.chunks), e.crc) for e in entries]
