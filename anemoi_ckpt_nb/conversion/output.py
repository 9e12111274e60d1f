"""The converted file as it is written: appended to, copied into by the kernel, and read back behind the writer.

:class:`OutputFile` is what the writers of :mod:`.writers` write to. Small records are
written from memory; a tensor whose bytes lie as one run in the source file is copied
by the kernel (``copy_file_range``: no pass through this process). Every byte is read back
through a second descriptor, opened on the file's name, shortly after it was written: the
sha256 of the whole file is computed from those bytes (the output's hash is the hash of what
the file holds, not of what was meant to be written), and the CRC-32 of each tensor's bytes
as the file holds them, which the verification (:mod:`.verify`) compares with the source's.
The writers only ever append, so what was read back stays what the file holds.

Why this way: on the 2-core test machine, hashing the output is the largest cost after
hashing the source, and sha256 cannot be split. So a thread does nothing but hash, on the
second core, from the first bytes written; the writing thread reads the bytes back into a
few buffers and computes the CRC-32s between its copies (and after them, while the hash
catches up), and asks the disk to start writing what it copied, so that the final ``fsync``
has little left to wait for. Before (6 December), one thread read, CRC'd and hashed (its
CPU time 0.85 s for 940 MB, against 0.53 s for the hash alone now), and the ``fsync``
started only after the weights were copied: with the hash faster, it was the last to end.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.conversion.streams import CHUNK, FileRange, crc32
from anemoi_ckpt_nb.conversion.verify import VerificationError
from anemoi_ckpt_nb.storage.kernelcopy import RangeCopier, start_writeback

#: Bytes the kernel copies per call; the bytes are read back a piece at a time between calls.
COPY_PIECE = 4 * CHUNK
#: Bytes read back into one buffer, one update of the hash: the hashing thread asks for the GIL
#: once per piece (2.5 ms of sha256 here), so the writing thread's Python code delays it little.
READ_PIECE = 4 * CHUNK
#: Buffers between the reading and the hashing: enough that the hash never waits for a read.
BUFFERS = 4
#: Bytes written between two requests to the disk to start writing them out.
WRITEBACK_PIECE = 64 * CHUNK


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
        self._span = 0  # the first span not read back whole
        self._crcs: dict[tuple[int, int], int] = {}
        self._read = 0  # how far the file is read back
        self._flushed = 0  # where the disk was last asked to start writing from
        self._read_error: Exception | None = None  # a failure reading back, raised by finish()
        # Between this thread, which reads back, and the hashing thread, under _changed:
        # Anonymous maps, not bytearrays: a bytearray is zeroed when made (16 MiB: 15 ms here, before
        # the copy can start); a map's pages are given as the first read fills them.
        self._free = [memoryview(mmap.mmap(-1, READ_PIECE)) for _ in range(BUFFERS)]
        self._full: deque[tuple[memoryview, int]] = deque()  # (buffer, bytes in it), in file order
        self._read_all = False  # nothing more to hash than what is in _full
        self._stop = False  # stop hashing now
        self._hash_error: BaseException | None = None
        self._changed = threading.Condition()
        self._digest = hashlib.sha256()
        self._syncs: list[threading.Thread] = []
        self._sync_errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._hash, name="convert-hash", daemon=True)
        self._thread.start()

    # --- writing ---------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        """Append ``data`` (any bytes-like object)."""
        view = memoryview(data).cast("B")
        self._write_all(view)
        self.offset += view.nbytes
        self._keep_up()

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
            self.offset += got
            self._keep_up()

    def watch(self, size: int) -> None:
        """Ask for the CRC-32 of the next ``size`` bytes written, as they read back."""
        if size > 0:
            self._spans.append((self.offset, size))

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

    def _keep_up(self) -> None:
        """After a write: start the disk writing, and read back what is written into the buffers free, never
        waiting for one (the writing goes on; :meth:`finish` reads what is left)."""
        if self.offset - self._flushed >= WRITEBACK_PIECE:
            # Have the disk start writing what is copied: the fsync at the end then has little left
            # to wait for (0.02 s instead of 0.3 s for 940 MB here), where it came after the hash.
            start_writeback(self._fd, self._flushed, self.offset - self._flushed)
            self._flushed = self.offset
        if self._read_error is None and self.offset - self._read >= READ_PIECE:
            try:
                self._read_back(wait=False)
            except Exception as error:  # raised by finish(), as a failure found reading back
                self._read_error = error

    def _read_back(self, *, wait: bool) -> None:
        """Read back up to what is written, and hand the bytes to the hashing thread.

        Args:
            wait: wait for buffers to come back from the hash; else stop when none is free.

        Raises:
            ReadBackError: the file ends before.
        """
        while self._read < self.offset:
            with self._changed:
                while not self._free:
                    if not wait:
                        return
                    if self._hash_error is not None:
                        raise self._hash_error
                    self._changed.wait()
                buffer = self._free.pop()
            try:
                got = os.preadv(self._back, [buffer[: min(READ_PIECE, self.offset - self._read)]], self._read)
                if got == 0:
                    raise ReadBackError(f"the file ends at byte {self._read}, before the {self.offset} bytes written")
                self._crc_spans(buffer[:got], self._read)
            except BaseException:
                with self._changed:
                    self._free.append(buffer)
                raise
            with self._changed:
                self._full.append((buffer, got))
                self._changed.notify_all()
            self._read += got

    def _crc_spans(self, chunk: memoryview, at: int) -> None:
        """Feed ``chunk`` (the bytes at ``at``) to the CRC of the spans it overlaps."""
        end = at + chunk.nbytes
        for start, size in self._spans[self._span :]:
            if start >= end:
                break
            stop = start + size
            if stop > at:
                first, last = max(start, at), min(stop, end)
                self._crcs[(start, size)] = crc32(chunk[first - at : last - at], self._crcs.get((start, size), 0))
            if stop > end:
                break
            self._span += 1

    def _hash(self) -> None:
        """The hashing thread: hash the buffers read back, in order, and give them back."""
        try:
            while True:
                with self._changed:
                    while not self._stop and not self._full and not self._read_all:
                        self._changed.wait()
                    if self._stop or not self._full:
                        return
                    buffer, got = self._full.popleft()
                self._digest.update(buffer[:got])  # without the GIL: the second core's work
                with self._changed:
                    self._free.append(buffer)
                    self._changed.notify_all()
        except BaseException as error:  # raised by finish()
            with self._changed:
                self._hash_error = error
                self._changed.notify_all()

    def finish(self) -> tuple[str, dict[tuple[int, int], int]]:
        """Read back all that is written and wait for its hash.

        Returns:
            The hex sha256 of the whole file as it reads back, and the CRC-32 of each watched
            run of bytes as it reads back, by ``(offset, size)``.

        Raises:
            ReadBackError: the file does not read back as written (or is longer: someone else writes it).
            OSError: reading it back failed.
        """
        if self._read_error is not None:
            raise self._read_error
        self._read_back(wait=True)
        with self._changed:
            self._read_all = True
            self._changed.notify_all()
        self._thread.join()
        if self._hash_error is not None:
            raise self._hash_error
        if self._read != self.offset or os.fstat(self._back).st_size != self.offset:
            raise ReadBackError(f"the file holds {os.fstat(self._back).st_size} bytes, {self.offset} were written")
        return self._digest.hexdigest(), dict(self._crcs)

    def close(self) -> None:
        """Stop hashing and wait for the flushes (also after a failure); the caller closes ``fd``."""
        with self._changed:
            self._stop = True
            self._changed.notify_all()
        self._thread.join()
        self._free.clear()  # the buffers' maps go with their last reference
        self._full.clear()
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
