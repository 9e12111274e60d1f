"""How bytes move through a conversion: chunks, the zip CRC-32, sha256 on a helper thread, reusable read buffers.

Every tensor is written in one pass, in chunks handed out by its :class:`TensorEntry`, so
memory stays at a few chunks whatever the size of the model. The sha256 of everything written
is computed on the fly (in a helper thread, so it overlaps the I/O on a second core), and so is
each tensor's CRC-32, which the caller compares with what it reads back.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

#: How many bytes are read and written at a time. Small enough to stay in the CPU cache
#: between the read, the CRC, the write and the hash: with 8 MiB chunks the same copy ran
#: several times slower on the test machine.
CHUNK = 1024 * 1024


def _crc32_function() -> Callable[..., int]:
    """The zip CRC-32: ISA-L's (about 20 GB/s with carry-less multiply) when installed, else zlib's (4 GB/s).

    Both compute the same CRC-32 (the zip and gzip polynomial). Every byte
    converted is CRC'd twice (when written, and when read back for the
    verification), so on a machine where one core does all the work this is
    half a second per GB saved.
    """
    try:
        from isal.isal_zlib import crc32
    except ImportError:  # isal has no wheel for this platform: the standard library's
        return zlib.crc32
    return crc32


crc32 = _crc32_function()


@dataclass(frozen=True)
class TensorEntry:
    """One tensor to write: what it is and where its bytes come from.

    ``chunks()`` yields bytes-like objects (``bytes``, ``memoryview``, numpy
    buffers) that add up to exactly ``nbytes`` of C-contiguous little-endian data.
    """

    name: str
    dtype: str  # torch dtype name: "float32", "bfloat16", ...
    shape: tuple[int, ...]
    nbytes: int
    chunks: Callable[[], Iterable[Any]]


class Digests:
    """sha256 digests fed from a helper thread, each in the order its chunks are given.

    hashlib releases the GIL on large buffers, so hashing overlaps the caller's
    reads and writes where a second core is free. The queue is bounded, so at
    most a few chunks are in flight.

    Args:
        names: the digests to keep.
        release: called from the thread with each chunk fed with ``last_use``
            once it is hashed (a :class:`BufferPool` takes its buffers back this way).
    """

    def __init__(self, names: Iterable[str], *, release: Callable[[memoryview], None] | None = None) -> None:
        self._digests = {name: hashlib.sha256() for name in names}
        self._release = release
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="convert-sha256", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            name, view, last_use = item
            self._digests[name].update(view)
            if last_use and self._release is not None:
                self._release(view)
            self._queue.task_done()
        self._queue.task_done()

    def feed(self, name: str, data: Any, *, last_use: bool = True) -> None:
        """Hash ``data`` into digest ``name``; it must not change until hashed (``release`` says when)."""
        self._queue.put((name, memoryview(data).cast("B"), last_use))

    def hexdigest(self, name: str) -> str:
        """The digest of everything fed to ``name`` so far (waits for the thread to catch up)."""
        self._queue.join()
        return self._digests[name].hexdigest()

    def close(self) -> None:
        """Stop the thread (also after a failure)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()


class HashingFile:
    """A binary file that counts the bytes written and feeds them to a digest.

    Args:
        file: the file to write to.
        digests: where the bytes are hashed, under ``name``.
    """

    def __init__(self, file: BinaryIO, digests: Digests, name: str = "output") -> None:
        self._file = file
        self._digests = digests
        self._name = name
        self.offset = 0

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self._file.write(view)
        self.offset += view.nbytes
        self._digests.feed(self._name, view)

    def finish(self) -> str:
        """Flush, and return the hex sha256 of all bytes written."""
        self._file.flush()
        return self._digests.hexdigest(self._name)


class BufferPool:
    """A few reusable chunk buffers for reading a file by offset.

    Reading into the same buffers again keeps memory flat and avoids the page
    faults of fresh allocations. A buffer goes back to the pool when the
    hashing thread is done with it (pass :meth:`give_back` as the ``release``
    of :class:`Digests`).
    """

    def __init__(self, *, count: int = 12, size: int = CHUNK) -> None:
        self._size = size
        self._count = count
        self._buffers: dict[int, bytearray] = {}  # made on first need: small files need one or two
        self._free: queue.Queue[bytearray] = queue.Queue()

    def give_back(self, view: memoryview) -> None:
        owner = view.obj
        if id(owner) in self._buffers:
            view.release()
            self._free.put(owner)  # type: ignore[arg-type]

    def _take(self) -> bytearray:
        if self._free.empty() and len(self._buffers) < self._count:
            buffer = bytearray(self._size)
            self._buffers[id(buffer)] = buffer
            return buffer
        return self._free.get()

    def read(self, fd: int, offset: int, size: int) -> Iterator[memoryview]:
        """``size`` bytes of ``fd`` from ``offset``, a pooled buffer at a time.

        Raises:
            ValueError: the file ends before.
        """
        end = offset + size
        while offset < end:
            buffer = self._take()
            want = min(self._size, end - offset)
            view = memoryview(buffer)[:want]
            got = 0
            while got < want:
                n = os.preadv(fd, [view[got:]], offset + got)
                if n == 0:
                    self._free.put(buffer)
                    raise ValueError(f"file ends at byte {offset + got}, {end - offset - got} bytes short")
                got += n
            offset += want
            yield view
