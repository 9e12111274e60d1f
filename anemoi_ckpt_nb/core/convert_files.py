"""File plumbing of :mod:`anemoi_ckpt_nb.core.convert`: reading the source, publishing the outputs.

* :class:`SourceFile` reads a source tensor's bytes by file offset into a few
  reused buffers, so that memory stays flat however large the weights are.
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


class SourceFile:
    """Read the tensors of an open checkpoint by file offset into pooled buffers.

    The reader memory-maps the file; reading a tensor through that map would
    leave every page read resident in this process (the RSS would grow to the
    size of the weights). So each tensor's place in the file is found from the
    map itself, in ``/proc/self/maps`` (Linux): the mapping of this file that
    holds the tensor's bytes, and that mapping's file offset. The bytes are
    then read with ``preadv`` into a few reused buffers (:class:`BufferPool`,
    handed back by the hashing thread). A tensor not found in a mapping of the
    file (other systems; byte-swapped, compressed or copied storages) is read
    from its memory instead.

    With :meth:`hash_while_reading`, the whole file is also fed to a sha256 as
    the tensors are read, front to back, so that the source is read once for
    both its weights and its hash.

    Raises:
        OSError: the file cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        from anemoi_ckpt_nb.core.convert_writers import BufferPool

        self.pool = BufferPool()
        self._file = open(path, "rb")
        self._size = os.fstat(self._file.fileno()).st_size
        self._regions = file_mappings(path)
        self._offsets: dict[str, int | None] = {}
        self._digests: Any = None
        self._position = 0

    def close(self) -> None:
        self._file.close()

    def offset_of(self, tensor: Any) -> int | None:
        """Where a contiguous tensor's bytes start in the file, if it is mapped from it."""
        import torch

        if not tensor.is_contiguous() or not self._regions:
            return None
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        for first, last, offset in self._regions:
            if first <= start and end <= last:
                position = offset + start - first
                # A cheap check that the map and the file agree on where the tensor starts.
                probe = min(64, end - start)
                memory = tensor.reshape(-1).view(torch.uint8)[:probe].numpy().tobytes()
                return position if os.pread(self._file.fileno(), probe, position) == memory else None
        return None

    def hash_while_reading(self, checkpoint: Any, names: list[str], digests: Any) -> bool:
        """Feed the whole file to ``digests["source"]`` while ``names`` are read, in that order.

        Possible when every tensor is found in the file and they come front to
        back without overlapping, as Lightning writes the weights.

        Returns:
            Whether it will be done; if not, nothing is fed and the caller hashes the file itself.
        """
        end = 0
        for name in names:
            tensor = checkpoint.tensor(name)
            nbytes = tensor.numel() * tensor.element_size()
            if nbytes == 0:
                continue
            offset = self.offset_of(tensor)
            if offset is None or offset < end:
                self._offsets.clear()
                return False
            self._offsets[name] = offset
            end = offset + nbytes
        self._digests = digests
        return True

    def source_digest(self) -> str:
        """Hash the rest of the file and return the sha256 of all of it (after :meth:`hash_while_reading`)."""
        self._hash_up_to(self._size)
        return self._digests.hexdigest("source")

    def _hash_up_to(self, offset: int) -> None:
        if offset > self._position:
            for view in self.pool.read(self._file.fileno(), self._position, offset - self._position):
                self._digests.feed("source", view)
            self._position = offset

    def reader(self, checkpoint: Any, name: str) -> Callable[[], Iterator[Any]]:
        """The bytes of the checkpoint's tensor ``name``, a chunk at a time, when called."""
        from anemoi_ckpt_nb.core.convert_writers import CHUNK

        def chunks() -> Iterator[Any]:
            import torch

            tensor = checkpoint.tensor(name).detach()
            nbytes = tensor.numel() * tensor.element_size()
            if nbytes == 0:
                return
            offset = self._offsets[name] if name in self._offsets else self.offset_of(tensor)
            if offset is not None:
                del tensor
                fd = self._file.fileno()
                if self._digests is None:
                    yield from self.pool.read(fd, offset, nbytes)
                    return
                self._hash_up_to(offset)
                for view in self.pool.read(fd, offset, nbytes):
                    # Hashed for the source now, for the output once written: the buffer is
                    # handed back after that second use.
                    self._digests.feed("source", view, last_use=False)
                    yield view
                self._position = offset + nbytes
                return
            if not tensor.is_contiguous():
                tensor = tensor.contiguous()  # one tensor's copy: within the memory bound
            data = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            for start in range(0, data.nbytes, CHUNK):
                yield data[start : start + CHUNK]

        return chunks


def file_mappings(path: Path) -> list[tuple[int, int, int]]:
    """``(start, end, file offset)`` of this process's memory maps of ``path`` (empty if unknown)."""
    try:
        stat = path.stat()
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    real = os.path.realpath(path)
    regions = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 5 or not parts[4].isdigit() or int(parts[4]) != stat.st_ino:
            continue
        major, minor = (int(n, 16) for n in parts[3].split(":"))
        # Some file systems (btrfs subvolumes, overlays) report another device here: the path decides.
        if os.makedev(major, minor) != stat.st_dev and (len(parts) < 6 or parts[5].strip() != real):
            continue
        start, end = (int(n, 16) for n in parts[0].split("-"))
        regions.append((start, end, int(parts[2], 16)))
    return regions


def write_sidecar(path: Path, metadata: dict[str, Any]) -> None:
    """Write the metadata JSON to a new file, flushed to disk.

    Raises:
        OSError: it cannot be written (``FileExistsError`` if ``path`` exists).
    """
    with open(path, "x", encoding="utf-8") as file:
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
    """Rename ``tmp`` to ``final`` unless ``final`` exists, atomically where hard links work.

    Raises:
        FileExistsError: ``final`` exists.
    """
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "already exists", str(final)) from None
    except OSError:
        # File systems without hard links: check, then rename (a small race, said here).
        if final.exists():
            raise FileExistsError(errno.EEXIST, "already exists", str(final)) from None
        os.replace(tmp, final)
        return
    unlink_quietly(tmp)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the renames) to disk, where the file system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system lets a folder be synced; the renames are done either way
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
