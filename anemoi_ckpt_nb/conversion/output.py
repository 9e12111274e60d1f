"""The converted file as it is written: appended to, copied into by the kernel, and read back behind the writer.

:class:`OutputFile` is what the writers of :mod:`.writers` write to. Small records are
written from memory; a tensor whose bytes lie as one run in the source file is copied
by the kernel (``copy_file_range``: no pass through this process). A thread reads every
byte back through a second descriptor, opened on the file's name, shortly after it was
written: it computes the sha256 of the whole file (the output's hash is the hash of what
the file holds, not of what was meant to be written) and the CRC-32 of each tensor's
bytes as the file holds them, which the verification (:mod:`.verify`) compares with the
source's. The writers only ever append, so what the thread read stays what the file holds.

Why this way: on the 2-core test machine, hashing the output is the largest cost after
hashing the source. Reading it back behind the writer lets the hash run on the second core
while the kernel copies, instead of after the copy; and one read-back pass both hashes the
file and checks it, where before the bytes were hashed as they were written and read back
again to be checked.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.conversion.streams import CHUNK, FileRange, crc32
from anemoi_ckpt_nb.conversion.verify import VerificationError
from anemoi_ckpt_nb.storage.kernelcopy import RangeCopier

#: Bytes the kernel copies per call: the read-back thread follows a piece at a time, and
#: progress is reported as often.
COPY_PIECE = 4 * CHUNK


class SourceEnded(ValueError):
    """The source file ended before the bytes to copy from it (it was truncated, or is damaged)."""


class ReadBackError(VerificationError):
    """The file does not read back as it was written (shorter or longer, or not the same file)."""


class OutputFile:
    """Append to a new file through ``fd``; read it back, behind the writer, through its name.

    Args:
        fd: the new file, open for writing at offset 0 (the caller closes it).
        path: its name, reopened to read it back (it must be the same file).

    Raises:
        OSError: the file cannot be reopened.
        ReadBackError: ``path`` names another file than ``fd``.
    """

    def __init__(self, fd: int, path: str | os.PathLike) -> None:
        self._fd = fd
        self._back = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        ours, back = os.fstat(fd), os.fstat(self._back)
        if (ours.st_dev, ours.st_ino) != (back.st_dev, back.st_ino):
            os.close(self._back)
            raise ReadBackError(f"{path}: the file read back is not the one written")
        self.path = Path(path)
        self.offset = 0
        self._copier = RangeCopier(COPY_PIECE)  # through a buffer where the kernel cannot copy
        self._spans: list[tuple[int, int]] = []  # (start, size) of the byte runs whose CRC-32 is wanted
        self._crcs: dict[tuple[int, int], int] = {}
        self._digest = hashlib.sha256()
        self._buffer = memoryview(bytearray(CHUNK))
        self._read = 0  # how far the thread has read
        self._written = 0
        self._done = False
        self._stop = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._syncs: list[threading.Thread] = []
        self._sync_errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._follow, name="convert-read-back", daemon=True)
        self._thread.start()

    # --- writing ---------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        """Append ``data`` (any bytes-like object)."""
        view = memoryview(data).cast("B")
        self._write_all(view)
        self._advance(view.nbytes)

    def _write_all(self, view: memoryview) -> None:
        done = 0
        while done < view.nbytes:
            done += os.write(self._fd, view[done:])

    def copy(self, source: int, offset: int, size: int) -> None:
        """Append ``size`` bytes of the open file ``source`` from ``offset``, copied by the kernel where it can.

        Raises:
            SourceEnded: ``source`` ends before.
            OSError: reading or writing failed.
        """
        done = 0
        while done < size:
            want = min(COPY_PIECE, size - done)
            got = self._copier.copy(source, self._fd, offset + done, want)
            if got == 0:
                raise SourceEnded(f"file ends at byte {offset + done}, {size - done} bytes short")
            done += got
            self._advance(got)

    def watch(self, size: int) -> None:
        """Ask for the CRC-32 of the next ``size`` bytes written, as they read back."""
        if size > 0:
            with self._changed:
                self._spans.append((self.offset, size))

    def _advance(self, count: int) -> None:
        self.offset += count
        with self._changed:
            self._written += count
            self._changed.notify()

    def start_sync(self) -> None:
        """Start flushing what is written so far to disk, in a thread; :meth:`sync` waits for it."""

        def sync() -> None:
            try:
                os.fsync(self._fd)
            except BaseException as error:  # raised by sync()
                self._sync_errors.append(error)

        thread = threading.Thread(target=sync, name="convert-fsync", daemon=True)
        thread.start()
        self._syncs.append(thread)

    def sync(self) -> None:
        """Flush everything written to disk (waiting for the flushes started before); raise the first failure."""
        self.start_sync()
        for thread in self._syncs:
            thread.join()
        if self._sync_errors:
            raise self._sync_errors[0]

    # --- reading back ----------------------------------------------------------------------

    def _follow(self) -> None:
        span = 0  # the first span not finished
        try:
            while True:
                with self._changed:
                    while not self._stop and not self._done and self._written <= self._read:
                        self._changed.wait()
                    if self._stop or self._written <= self._read:
                        return
                    limit = self._written
                for chunk in self._read_back(limit):
                    self._digest.update(chunk)
                    span += self._crc_spans(self._spans[span:], chunk, self._read)
                    self._read += chunk.nbytes
        except BaseException as error:  # raised by finish()
            self._error = error

    def _read_back(self, limit: int) -> Iterator[memoryview]:
        """The bytes from where the reading is to ``limit``, a chunk at a time, through one reused buffer.

        (Mapping the file instead, to hash the page cache's pages without a copy, was measured
        slower: the faults and unmaps cost more than the copy.)

        Raises:
            ReadBackError: the file ends before.
        """
        view = self._buffer
        start = self._read
        while start < limit:
            got = os.preadv(self._back, [view[: min(CHUNK, limit - start)]], start)
            if got == 0:
                raise ReadBackError(f"the file ends at byte {start}, before the {limit} bytes written")
            yield view[:got]
            start += got

    def _crc_spans(self, spans: list[tuple[int, int]], chunk: memoryview, at: int) -> int:
        """Feed ``chunk`` (the bytes at ``at``) to the CRC of the spans it overlaps; return how many it finished."""
        finished = 0
        end = at + chunk.nbytes
        for start, size in spans:
            if start >= end:
                break
            stop = start + size
            if stop > at:
                first, last = max(start, at), min(stop, end)
                self._crcs[(start, size)] = crc32(chunk[first - at : last - at], self._crcs.get((start, size), 0))
            if stop <= end:
                finished += 1
            else:
                break
        return finished

    def finish(self) -> tuple[str, dict[tuple[int, int], int]]:
        """Wait until everything written is read back.

        Returns:
            The hex sha256 of the whole file as it reads back, and the CRC-32 of each watched
            run of bytes as it reads back, by ``(offset, size)``.

        Raises:
            ReadBackError: the file does not read back as written (or is longer: someone else writes it).
            OSError: reading it back failed.
        """
        with self._changed:
            self._done = True
            self._changed.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._read != self.offset or os.fstat(self._back).st_size != self.offset:
            raise ReadBackError(f"the file holds {os.fstat(self._back).st_size} bytes, {self.offset} were written")
        return self._digest.hexdigest(), dict(self._crcs)

    def close(self) -> None:
        """Stop reading back and wait for the flushes (also after a failure); the caller closes ``fd``."""
        with self._changed:
            self._stop = True
            self._changed.notify()
        self._thread.join()
        for thread in self._syncs:
            thread.join()
        if self._back >= 0:
            os.close(self._back)
            self._back = -1


def write_payload(out: OutputFile, name: str, chunks: Iterable[Any], size: int, crc: int | None) -> int:
    """Write exactly ``size`` bytes from ``chunks``; return their CRC-32 (``crc`` when given).

    Raises:
        ValueError: the chunks add up to another size than announced, or a :class:`FileRange`
            comes without a known CRC.
    """
    computed = 0
    written = 0
    for chunk in chunks:
        if isinstance(chunk, FileRange):
            if crc is None:
                raise ValueError(f"{name}: bytes to copy need their CRC-32 known beforehand")
            if written + chunk.nbytes > size:
                raise ValueError(f"{name}: more than the {size} bytes announced")
            out.copy(chunk.fd, chunk.offset, chunk.nbytes)
            written += chunk.nbytes
            continue
        view = memoryview(chunk).cast("B")
        if written + view.nbytes > size:
            raise ValueError(f"{name}: more than the {size} bytes announced")
        if crc is None:
            computed = crc32(view, computed)
        out.write(view)
        written += view.nbytes
    if written != size:
        raise ValueError(f"{name}: {written} bytes instead of the {size} announced")
    return computed if crc is None else crc
