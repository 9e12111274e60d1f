"""The file formats of ``torch.save``, read with the restricted unpickler and memory-mapped storages.

* **zip** (torch >= 1.6): ``<top>/data.pkl`` is the pickle; each storage is an
  uncompressed entry ``<top>/data/<key>``. The whole file is mapped once
  (``torch.UntypedStorage.from_file``, private mapping) and every storage is a
  slice of that map at its entry's data offset, so nothing is read until a
  tensor's values are used.
* **legacy** (``_use_new_zipfile_serialization=False``): magic number,
  protocol, system info, the pickle, the list of storage keys, then each
  storage as ``<int64 count><raw bytes>``. Each storage is placed after its
  count, found from the key list that follows the pickle.
* **plain pickle**: one restricted pickle, no storages of its own (tensors in
  it come through ``torch.storage._load_from_bytes``, read the same way from
  the embedded bytes, in memory).

All three are first read without torch (``describe``: tensors are
:class:`~.tensorrefs.TensorRef` descriptions of byte spans of the file, kept
open); what only torch can rebuild (sparse tensors, tensors pickled inside the
pickle, ...) raises :class:`~.tensorrefs.NeedsTorch`, and the file is read with
torch, its storages slices of one memory map.

TorchScript archives and the pre-2017 tar format are refused: the first holds
code, the second is long gone.
"""

from __future__ import annotations

import _thread
import io
import struct
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import CorruptCheckpointError, NotACheckpointError
from anemoi_ckpt_nb.read.arrayrefs import NeedsNumpy
from anemoi_ckpt_nb.read.records import Record
from anemoi_ckpt_nb.read.resolver import Globals
from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch, StorageRecord
from anemoi_ckpt_nb.read.torchpickle import (
    LEGACY_MAGIC_NUMBER,
    Bounded,
    copy_budget,
    load_legacy,
    load_legacy_described,
    loads,
    nested_loader,
)
from anemoi_ckpt_nb.read.torchstorages import Described, Storages, forget_sparse, nested_needs_torch, validate_sparse
from anemoi_ckpt_nb.read.torchzip import EMPTY_ZIP_MAGIC, ZIP_MAGIC, check_names, read_entry, zip_errors, zip_persistent_load
from anemoi_ckpt_nb.read.zipdir import open_archive
from anemoi_ckpt_nb.read.unpickler import DEFAULT_MAX_PICKLE_BYTES, restricted_load

__all__ = ["TorchFile", "load_torch_file", "loads", "sniff"]

PICKLE_PROTO = 0x80
#: First bytes of protocol 0 and 1 pickles (MARK, GLOBAL, empty list/dict/tuple): worth a careful try.
PROTOCOL_0_STARTS = (b"(", b"c", b"]", b"}", b")")


class TorchFile(Record):
    """What a ``torch.save`` file held, rebuilt without running its code.

    Attributes:
        path: the file.
        format: ``"zip"``, ``"legacy"`` or ``"pickle"``.
        raw: what its pickle held.
        globals: the globals its pickle was read with.
        storages: key -> storage.
        storage_by_ptr: ``data_ptr()`` of each storage's first byte -> its key, to tell which tensors share bytes.
        zip: the open archive (zip format only: a :class:`~.zipdir.Archive` or a ``zipfile.ZipFile``), for
            embedded metadata; closed by :meth:`close`.
        top: top-level folder of the archive (zip format only).
        described: read without torch: tensors are :class:`~.tensorrefs.TensorRef` descriptions of ``storages``.
        max_pickle_bytes: the bound the file was read with (to read it again the same way).
        file: the legacy file opened, when read without torch (its described tensors read through it).
    """

    FIELDS = ("path", "format", "raw", "globals", "storages", "storage_by_ptr", "zip", "top", "described",
              "max_pickle_bytes", "file")

    def __init__(
        self,
        path: Path,
        format: str,
        raw: Any,
        globals: Globals,
        storages: dict[str, StorageRecord] | None = None,
        storage_by_ptr: dict[int, str] | None = None,
        zip: Any = None,
        top: str | None = None,
        described: bool = False,
        max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES,
        file: Any = None,
    ) -> None:
        self.path, self.format, self.raw, self.globals = path, format, raw, globals
        self.storages = {} if storages is None else storages
        self.storage_by_ptr = {} if storage_by_ptr is None else storage_by_ptr
        self.zip, self.top, self.described, self.max_pickle_bytes, self.file = zip, top, described, max_pickle_bytes, file

    def fileno(self) -> int:
        """The descriptor of the file as opened (the archive's, or the legacy file's).

        Raises:
            ValueError: it was closed, or read with torch (nothing kept open).
        """
        fp = self.zip.fp if self.zip is not None else self.file
        if fp is None:
            raise ValueError(f"{self.path}: the checkpoint is closed")
        return fp.fileno()

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
            self.zip = None
        if self.file is not None:
            self.file.close()
            self.file = None


def sniff(path: Path) -> str:
    """``"zip"``, ``"pickle"``, ``"pickle?"`` (maybe protocol 0), ``"safetensors"``, ``"tar"`` or ``"unknown"``."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (ZIP_MAGIC, EMPTY_ZIP_MAGIC):
        return "zip"
    # Before the pickle checks: a safetensors header length can start with any byte (0x80, "(", "}").
    # A pickle cannot pass this one: its bytes 2 to 7 are opcodes, so the length would be huge.
    if len(head) > 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= 100 * 1024 * 1024 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == bytes([PICKLE_PROTO]):
        return "pickle"
    if head[:1] in PROTOCOL_0_STARTS:
        return "pickle?"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "unknown"


# threading's RLock is _thread's; threading itself is not imported by inspect (issue 16).
_LOAD_LOCK = _thread.RLock()


def load_torch_file(path: Path, *, max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES, describe: bool = False) -> TorchFile:
    """Read a ``torch.save`` file (zip, legacy or plain pickle) safely.

    Args:
        path: the file.
        max_pickle_bytes: refuse pickles larger than this (they are read into memory).
        describe: read without torch, tensors described (:mod:`.tensorrefs`).

    Raises:
        NeedsTorch: with ``describe``, the file needs torch to be read (a sparse or quantized
            tensor, a tensor pickled inside the pickle, ...); nothing was kept open.
        NotACheckpointError: not a torch file (or a TorchScript or tar archive).
        CorruptCheckpointError: truncated or damaged.
        UnsafePickleError: the pickle reached for a refused global; nothing ran.
        CheckpointReadError: the pickle is larger than ``max_pickle_bytes``.
    """
    kind = sniff(path)
    if kind == "tar":
        raise NotACheckpointError(
            path,
            "a tar archive (the PyTorch format of before version 0.4 is not supported)",
            hint="load it with that old torch and torch.save it again",
        )
    if kind not in ("zip", "pickle", "pickle?"):
        raise NotACheckpointError(path, "not a torch checkpoint: neither a zip archive nor a pickle")
    load = _load_zip if kind == "zip" else _load_pickle_file
    try:
        if describe:
            try:  # numpy too described first (arrayrefs); a pickle using numpy otherwise is read with numpy
                return load(path, max_pickle_bytes=max_pickle_bytes, describe=True, describe_numpy=True)
            except NeedsNumpy:
                return load(path, max_pickle_bytes=max_pickle_bytes, describe=True)
        # torch collects the sparse tensors it rebuilds in one list for the whole process
        # (torch._utils._sparse_tensors_to_validate), checked and emptied after a load: two
        # loads at once in threads (convert --jobs) would check, and blame, each other's.
        with _LOAD_LOCK:
            forget_sparse()  # what a load that failed half-way left, not this file's
            return load(path, max_pickle_bytes=max_pickle_bytes)
    except CorruptCheckpointError:
        if kind != "pickle?":
            raise
        raise NotACheckpointError(path, "not a torch checkpoint: neither a zip archive nor a pickle") from None


def _load_zip(path: Path, *, max_pickle_bytes: int, describe: bool = False, describe_numpy: bool = False) -> TorchFile:
    source = str(path)
    try:
        zf = open_archive(path)  # read without zipfile when torch.save wrote it (zipdir), else zipfile's
    except (*zip_errors(), EOFError, ValueError) as error:
        raise CorruptCheckpointError(path, f"truncated or damaged zip archive ({error})") from None
    try:
        names = zf.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
            raise NotACheckpointError(
                path,
                "a TorchScript archive (torch.jit.save); it holds code, which this reader never runs",
                hint="use torch.jit.load only if you trust the file",
            )
        if not pickles:
            raise NotACheckpointError(path, "a zip archive without data.pkl: not a torch checkpoint")
        if len(pickles) > 1:
            raise CorruptCheckpointError(path, f"the archive holds {len(pickles)} data.pkl entries")
        top = pickles[0].split("/", 1)[0]
        check_names(names, top, source)
        data = read_entry(zf, pickles[0], max_pickle_bytes, source)
        swap = False
        if f"{top}/byteorder" in names:
            order = zf.read(f"{top}/byteorder")
            if order not in (b"little", b"big"):
                raise CorruptCheckpointError(path, f"unknown byte order {order[:20]!r}")
            swap = order.decode() != sys.byteorder
        storages = Described(source, path, swap=swap, fd=zf.fp.fileno()) if describe else Storages(source, path=path, swap=swap)
        globals_ = Globals(source, describe=describe, describe_numpy=describe_numpy)
        globals_.copy_budget = copy_budget(len(data))
        globals_.extra[("torch.storage", "_load_from_bytes")] = nested_needs_torch if describe else nested_loader(
            globals_, max_pickle_bytes
        )
        raw = restricted_load(io.BytesIO(data), globals_, persistent_load=zip_persistent_load(zf, top, storages))
        if not describe:
            validate_sparse(path)
    except BaseException:
        zf.close()
        raise
    return TorchFile(
        path=path,
        format="zip",
        raw=raw,
        globals=globals_,
        storages=storages.records,
        storage_by_ptr=storages.by_ptr,
        zip=zf,
        top=top,
        described=describe,
        max_pickle_bytes=max_pickle_bytes,
    )



def _load_pickle_file(
    path: Path, *, max_pickle_bytes: int, describe: bool = False, describe_numpy: bool = False
) -> TorchFile:
    """A plain pickle, or a legacy file (its first pickle is the magic number)."""
    source = str(path)
    globals_ = Globals(source, describe=describe, describe_numpy=describe_numpy)
    globals_.copy_budget = copy_budget(min(path.stat().st_size, max_pickle_bytes))
    globals_.extra[("torch.storage", "_load_from_bytes")] = nested_needs_torch if describe else nested_loader(
        globals_, max_pickle_bytes
    )
    f = open(path, "rb")
    try:
        first = restricted_load(Bounded(f, max_pickle_bytes, source), globals_)
        if type(first) is not int or first != LEGACY_MAGIC_NUMBER:
            if not describe:
                validate_sparse(path)
            f.close()
            return TorchFile(
                path=path, format="pickle", raw=first, globals=globals_, described=describe, max_pickle_bytes=max_pickle_bytes
            )
        if describe:  # the file stays open: described tensors read their bytes through it
            described = Described(source, path, swap=False, fd=f.fileno())
            raw = load_legacy_described(f, globals_, described, max_pickle_bytes)
            return TorchFile(
                path=path, format="legacy", raw=raw, globals=globals_, storages=described.records, file=f,
                described=True, max_pickle_bytes=max_pickle_bytes,
            )
        storages = Storages(source, path=path)
        raw = load_legacy(f, globals_, storages, max_pickle_bytes)
        f.close()
    except BaseException:
        f.close()
        raise
    return TorchFile(
        path=path, format="legacy", raw=raw, globals=globals_, storages=storages.records, storage_by_ptr=storages.by_ptr,
        max_pickle_bytes=max_pickle_bytes,
    )
