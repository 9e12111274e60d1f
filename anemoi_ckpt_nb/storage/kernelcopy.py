"""Copying byte ranges between open files: by the kernel where it will, else through a reused buffer.

``copy_file_range`` copies without a pass through Python (and clones on file systems that can);
a spool capture (:mod:`anemoi_ckpt_nb.runs.capture`) and a conversion's weights
(:mod:`anemoi_ckpt_nb.conversion.output`) both copy this way, through :class:`RangeCopier`.
:func:`start_writeback` has the disk start writing what was copied before the ``fsync`` asks.
"""

from __future__ import annotations

import errno
import os
from typing import Any

#: copy_file_range errors that mean "not here" (another file system, an old kernel, a file it
#: will not copy), not a failure: the bytes then go through the buffer.
NOT_IN_KERNEL = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF,
                           errno.EPERM})


class RangeCopier:
    """Copies ranges of one open file into another: by the kernel while it accepts, then through one buffer.

    Once the kernel refuses, or copies nothing (at the end of the file, or on a file system that
    copies nothing), this copier reads and writes through a reused buffer of ``chunk`` bytes, which
    also tells a file that really ends.
    """

    def __init__(self, chunk: int) -> None:
        self.in_kernel = hasattr(os, "copy_file_range")
        self._chunk = chunk
        self._view: memoryview | None = None  # made on first need

    def copy(self, source: int, out: int, offset: int, size: int, *, out_offset: int | None = None) -> int:
        """Copy up to ``size`` bytes of ``source`` from ``offset`` into ``out``; return how many (0: ``source`` ends).

        Args:
            out_offset: where in ``out``; None: at its position, which advances.

        Raises:
            OSError: reading or writing failed (other than the kernel declining).
        """
        if self.in_kernel:
            try:
                copied = os.copy_file_range(source, out, size, offset, out_offset)
            except OSError as error:
                if error.errno not in NOT_IN_KERNEL:
                    raise
                copied = 0
            if copied:
                return copied
            self.in_kernel = False  # refused, or nothing copied: the buffer tells whether the file ended
        if self._view is None:
            self._view = memoryview(bytearray(self._chunk))
        view = self._view[: min(size, self._chunk)]
        got = os.preadv(source, [view], offset)
        done = 0
        while done < got:
            if out_offset is None:
                done += os.write(out, view[done:got])
            else:
                done += os.pwrite(out, view[done:got], out_offset + done)
        return got


#: ``sync_file_range(2)``'s flag to start writing dirty pages out, without waiting.
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Any = None  # libc's, looked up on first use; False where there is none


def start_writeback(fd: int, offset: int, size: int) -> bool:
    """Have the kernel start writing ``size`` bytes of ``fd`` from ``offset`` to disk, without waiting.

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which Python's ``os`` does not offer (through
    ctypes, looked up on first use). It guarantees nothing (an ``fsync`` still must follow):
    it only starts earlier the writing an ``fsync`` would start. Returns False where it is not
    available or refused; nothing else changes then.
    """
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            function.restype = ctypes.c_int
            _sync_file_range = function
        except (ImportError, OSError, AttributeError):  # not Linux, or no ctypes
            _sync_file_range = False
    if _sync_file_range is False or size <= 0:
        return False
    return _sync_file_range(fd, offset, size, _SYNC_FILE_RANGE_WRITE) == 0
