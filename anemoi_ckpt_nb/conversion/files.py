"""File plumbing of :mod:`anemoi_ckpt_nb.conversion.convert`: reading the source, publishing the outputs.

* :class:`SourceFile` hands out a source tensor's bytes by file offset: as runs of the file
  for the kernel to copy, or read into a reused buffer, so that memory stays flat however
  large the weights are.
* :class:`SourceHash` computes the whole source's sha256 in a thread, meanwhile.
* :func:`publish` renames the verified temporary files into place, the archive
  first and the sidecar last, refusing to replace an existing file unless asked.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.storage._transfer import fsync_dir


class SourceFile:
    """Hand out the tensors of an open checkpoint by file offset.

    The reader memory-maps the file; reading a tensor through that map would
    leave every page read resident in this process (the RSS would grow to the
    size of the weights). So each tensor's place in the file comes from the
    reader (:meth:`CheckpointFile.tensor_span`, computed from the zip or
    safetensors structure), and its bytes are either handed out as runs of this
    file (:class:`~.streams.FileRange`, copied by the kernel) or read with
    ``preadv`` into a reused buffer. A tensor that is not a contiguous run of the
    file's bytes (a non-contiguous view, a byte-swapped or compressed storage) is
    read from memory instead.

    Args:
        path: the checkpoint file.
        checkpoint: the same file, open with :func:`open_checkpoint`.

    Raises:
        OSError: the file cannot be opened.
    """

    def __init__(self, path: Path, checkpoint: Any) -> None:
        self._checkpoint = checkpoint
        self._file = open(path, "rb")

    def close(self) -> None:
        self._file.close()

    def span(self, name: str) -> tuple[int, int] | None:
        """``(offset, nbytes)`` of the tensor ``name`` in the file, or ``None`` to read it from memory."""
        span = self._checkpoint.tensor_span(name)
        if span is None or span[1] == 0:
            return span
        # A cheap check that the file read now is the one the reader opened (not replaced since):
        # the reader reads the file it opened; read_bytes() refuses a file changed on disk.
        offset, nbytes = span
        probe = min(64, nbytes)
        opened = self._checkpoint.opened_bytes(name, probe)
        if os.pread(self._file.fileno(), probe, offset) != opened:
            raise ValueError(f"the bytes of {name} changed on disk since the file was opened")
        return span

    def reader(self, name: str, *, copy: bool = False) -> Callable[[], Iterator[Any]]:
        """The bytes of the checkpoint's tensor ``name``, a chunk at a time, when called.

        Args:
            copy: hand out runs of the file (:class:`~.streams.FileRange`) instead of bytes
                where the tensor is one; only for a tensor whose CRC-32 is known beforehand.
        """
        from anemoi_ckpt_nb.conversion.output import COPY_PIECE
        from anemoi_ckpt_nb.conversion.streams import CHUNK, FileRange, read_chunks

        def chunks() -> Iterator[Any]:
            span = self.span(name)
            if span is not None:
                offset, size = span
                if copy:
                    for start in range(offset, offset + size, COPY_PIECE):
                        yield FileRange(self._file.fileno(), start, min(COPY_PIECE, offset + size - start))
                elif size:
                    yield from read_chunks(self._file.fileno(), offset, size)
                return
            data = memoryview(self._checkpoint.read_bytes(name))  # one tensor's copy: within the memory bound
            for start in range(0, data.nbytes, CHUNK):
                yield data[start : start + CHUNK]

        return chunks

    def crc32(self, name: str) -> int:
        """The CRC-32 of the tensor ``name``'s bytes as the file holds them now."""
        from anemoi_ckpt_nb.conversion.streams import crc32_of

        return crc32_of(self.reader(name)())


class SourceHash:
    """The sha256 of a whole file, computed in threads while the caller does other work.

    One thread reads the file front to back into a few reused 4 MiB buffers,
    another hashes them (file reads and hashlib release the GIL). The reads go
    around the page cache (``O_DIRECT``) where the system and the file system
    allow it: every byte is needed once, so the cache's copy and bookkeeping are
    pure cost (on the 2-core test machine they doubled the CPU time of hashing a
    cold 2.8 GB checkpoint), and the user's cached files are not evicted by it.
    Elsewhere the file is read the ordinary way. What the page cache already holds
    (a checkpoint just written or inspected) is taken from it (``RWF_NOWAIT`` reads,
    which fail instead of waiting for the disk), not read from the disk again.

    A sha256 remembered for the file (:mod:`anemoi_ckpt_nb.storage.hashing`: it was
    registered, converted or upgraded before, unchanged since) is taken as it is,
    without reading; one computed here is remembered the same way.

    Args:
        path: the file to hash.

    Raises:
        OSError: the file cannot be opened.
    """

    CHUNK = 4 * 1024 * 1024
    BUFFERS = 3

    def __init__(self, path: Path) -> None:
        import hashlib
        import queue
        import threading

        from anemoi_ckpt_nb.storage.hashing import cache_enabled, cached_sha256

        self._fd, self._direct = _open_for_reading(path, direct=True)
        self._cached_fd = _cache_reader(self._fd) if self._direct else None
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._stat = os.fstat(self._fd)
        self._cache = cache_enabled()
        if self._cache and (known := cached_sha256(self._fd, self._stat)) is not None:
            self._close()
            self._digest, self._reader, self._hasher = known, None, None
            return
        self._sha256 = hashlib.sha256()
        self._free: queue.Queue[Any] = queue.Queue()
        for _ in range(self.BUFFERS):
            self._free.put(self._buffer())
        self._full: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="convert-source-read", daemon=True)
        self._hasher = threading.Thread(target=self._hash, name="convert-source-sha256", daemon=True)
        self._reader.start()
        self._hasher.start()

    def _buffer(self) -> Any:
        """A read buffer of ``CHUNK`` bytes: an anonymous map, page-aligned as direct reads need."""
        import mmap

        return mmap.mmap(-1, self.CHUNK)

    def _read(self) -> None:
        offset = 0
        try:
            while True:
                buffer = self._free.get()
                if self._stop.is_set():
                    self._full.put(None)
                    return
                count = self._pread(buffer, offset)
                self._full.put((buffer, count))
                if count == 0:
                    return
                offset += count
        except BaseException as error:  # handed to the hashing thread, then to result()
            self._full.put(error)

    def _pread(self, buffer: Any, offset: int) -> int:
        if self._cached_fd is not None:
            try:  # all of the chunk from the page cache, or nothing
                count = os.preadv(self._cached_fd, [buffer], offset, os.RWF_NOWAIT)
                if count == len(buffer) or offset + count >= self._stat.st_size:
                    return count
            except BlockingIOError:
                pass
            except OSError:  # RWF_NOWAIT refused by this file system: the disk, around the cache
                os.close(self._cached_fd)
                self._cached_fd = None
        try:
            return os.preadv(self._fd, [buffer], offset)
        except OSError as error:
            if not self._direct or error.errno != errno.EINVAL:
                raise
        # The file system accepted O_DIRECT at open but refuses the read: read it the ordinary
        # way, through the same descriptor (so the same file, even if the path was replaced).
        import fcntl

        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~getattr(os, "O_DIRECT", 0))
        self._direct = False
        return os.preadv(self._fd, [buffer], offset)

    def _hash(self) -> None:
        from anemoi_ckpt_nb.storage.hashing import record_sha256

        try:
            while True:
                item = self._full.get()
                if item is None:  # cancelled
                    return
                if isinstance(item, BaseException):
                    self._error = item
                    return
                buffer, count = item
                if count == 0:
                    self._digest = self._sha256.hexdigest()
                    if self._cache:  # only if the file did not change while it was read
                        record_sha256(self._fd, self._digest, self._stat)
                    return
                with memoryview(buffer) as view:
                    self._sha256.update(view[:count])
                self._free.put(buffer)
        finally:
            # Wake the reader if it waits for a buffer (this thread failed), then, once it has
            # put its last item, the descriptor is free to close.
            self._stop.set()
            self._free.put(None)
            self._reader.join()
            self._close()

    def _close(self) -> None:
        os.close(self._fd)
        if self._cached_fd is not None:
            os.close(self._cached_fd)

    def result(self) -> str:
        """Wait for the hash and return it (hex).

        Raises:
            OSError: reading the file failed.
        """
        if self._hasher is not None:
            self._hasher.join()
        if self._error is not None:
            raise self._error
        if self._digest is None:
            raise RuntimeError("the source hash was cancelled")
        return self._digest

    def cancel(self) -> None:
        """Stop the threads (after a failure), and wait for them: at most a chunk's read and hash."""
        if self._hasher is None:
            return
        self._stop.set()
        self._hasher.join()


def _open_for_reading(path: Path, *, direct: bool) -> tuple[int, bool]:
    """A read-only descriptor of ``path``, and whether it reads around the page cache."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    o_direct = getattr(os, "O_DIRECT", 0)
    if direct and o_direct:
        try:
            return os.open(path, flags | o_direct), True
        except OSError as error:
            if error.errno != errno.EINVAL:  # tmpfs and some others refuse O_DIRECT this way
                raise
    return os.open(path, flags), False


def _cache_reader(fd: int) -> int | None:
    """A second, ordinary descriptor of the file ``fd`` has open (the same file, even if its path
    was replaced since), for reads from the page cache; ``None`` where that cannot be had."""
    if not hasattr(os, "RWF_NOWAIT"):
        return None
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def write_sidecar(path: Path, metadata: dict[str, Any], *, fd: int | None = None) -> None:
    """Write the metadata JSON to a new file, flushed to disk.

    Args:
        fd: the new file, already created (and locked) as ``path``; else ``path`` is created.

    Raises:
        OSError: it cannot be written (``FileExistsError`` if ``path`` exists).
    """
    with (open(fd, "w", encoding="utf-8") if fd is not None else open(path, "x", encoding="utf-8")) as file:
        json.dump(metadata, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())


def publish(tmp: Path, tmp_sidecar: Path, target: Path, sidecar: Path, *, overwrite: bool) -> None:
    """Rename the archive, then its sidecar, into place.

    A sidecar that is present always describes the archive beside it: an old
    sidecar is removed before its archive is replaced, and the new one comes last.

    Raises:
        FileExistsError: ``target`` or ``sidecar`` exists and ``overwrite`` is false.
        OSError: a rename failed.
    """
    if overwrite:
        unlink_quietly(sidecar)
        os.replace(tmp, target)
    else:
        rename_new(tmp, target)
    try:
        if overwrite:
            os.replace(tmp_sidecar, sidecar)
        else:
            rename_new(tmp_sidecar, sidecar)
    except BaseException:
        if not overwrite:
            unlink_quietly(target)  # ours: created just above, under an exclusive link
        raise
    fsync_dir(target.parent)


def rename_new(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final`` unless ``final`` exists: atomically by a hard link, else by
    ``renameat2(RENAME_NOREPLACE)``, else (neither supported) check then rename.

    Raises:
        FileExistsError: ``final`` exists.
    """
    from anemoi_ckpt_nb.storage.createonly import CreateOnlyUnsupported, rename_noreplace

    try:
        os.link(tmp, final)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "already exists", str(final)) from None
    except OSError:
        try:  # a file system without hard links
            rename_noreplace(tmp, final)
            return
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "already exists", str(final)) from None
        except CreateOnlyUnsupported:
            pass
        # Neither: check, then rename. Two conversions racing for one new name could both pass
        # the check; the later one's output then replaces the earlier's (each is complete).
        if final.exists():
            raise FileExistsError(errno.EEXIST, "already exists", str(final)) from None
        os.replace(tmp, final)
        return
    unlink_quietly(tmp)


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
