"""How bytes move through a conversion: chunks, the zip CRC-32, a reused read buffer.

Every tensor is written in one pass, in chunks handed out by its :class:`TensorEntry`, so
memory stays at a chunk whatever the size of the model. A tensor whose bytes are one run of
the source file, with a CRC-32 its archive records, is handed out as :class:`FileRange` chunks
that the kernel copies; the others as bytes read into a reused buffer, CRC'd as they are
written. The written file is hashed and checked as it reads back (:mod:`.output`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from anemoi_ckpt_nb.storage.crc import crc32

#: How many bytes are read and written at a time. Small enough to stay in the CPU cache
#: between the read, the CRC, the write and the hash: with 8 MiB chunks the same copy ran
#: several times slower on the test machine.
CHUNK = 1024 * 1024


def crc32_of(chunks: Iterable[Any]) -> int:
    """The CRC-32 of bytes-like chunks taken in order."""
    crc = 0
    for chunk in chunks:
        crc = crc32(chunk, crc)
    return crc


@dataclass(frozen=True)
class TensorEntry:
    """One tensor to write: what it is and where its bytes come from.

    ``chunks()`` yields bytes-like objects (``bytes``, ``memoryview``, numpy
    buffers), or :class:`FileRange` chunks when ``crc`` is known, that add up to exactly
    ``nbytes`` of C-contiguous little-endian data.
    """

    name: str
    dtype: str  # torch dtype name: "float32", "bfloat16", ...
    shape: tuple[int, ...]
    nbytes: int
    chunks: Callable[[], Iterable[Any]]
    #: The CRC-32 of the bytes, when known beforehand (the source archive records it): the
    #: writer takes it instead of computing it, and the chunks may be :class:`FileRange` chunks.
    #: The verification proves that the file written holds bytes of this CRC.
    crc: int | None = None


@dataclass(frozen=True)
class FileRange:
    """A chunk given by where its bytes lie in an open file, for the writer to have the kernel copy them."""

    fd: int
    offset: int
    nbytes: int


def chunk_size(chunk: Any) -> int:
    """How many bytes a chunk of :attr:`TensorEntry.chunks` holds."""
    return chunk.nbytes if isinstance(chunk, FileRange) else memoryview(chunk).nbytes


def read_chunks(fd: int, offset: int, size: int, *, chunk: int = CHUNK) -> Iterator[memoryview]:
    """``size`` bytes of ``fd`` from ``offset``, through one reused buffer.

    Each chunk yielded is valid until the next is asked for (its consumer writes or CRCs it
    first): reading into the same buffer again keeps memory flat and avoids the page faults of
    fresh allocations.

    Raises:
        ValueError: the file ends before.
    """
    view = memoryview(bytearray(min(chunk, size)))
    end = offset + size
    while offset < end:
        want = min(chunk, end - offset)
        got = 0
        while got < want:
            n = os.preadv(fd, [view[got:want]], offset + got)
            if n == 0:
                raise ValueError(f"file ends at byte {offset + got}, {end - offset - got} bytes short")
            got += n
        offset += want
        yield view[:want]
