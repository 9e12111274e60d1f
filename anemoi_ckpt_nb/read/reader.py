"""Open any Anemoi checkpoint safely and cheaply: :func:`open_checkpoint`.

Kinds of file:

* ``"training"``: a Lightning checkpoint (``torch.save`` of a dict with
  ``state_dict``, ``optimizer_states``, ``hyper_parameters``, ...);
* ``"inference"``: anemoi-training's inference checkpoint, the whole model
  pickled; its weights are collected from the pickled module tree, with the
  dotted names ``model.state_dict()`` would give;
* ``"state-dict"``: ``torch.save`` of a plain mapping of names to tensors;
* ``"safetensors"``: a ``.safetensors`` file, metadata under the header key ``anemoi``.

Nothing from the file is run (see :mod:`.unpickler`), no anemoi package is
needed, and tensors are memory-mapped: opening a 10 GB checkpoint reads its
pickle and metadata, not its weights or optimizer state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import (
    CheckpointChangedError,
    CheckpointNotFoundError,
    CheckpointReadError,
    CorruptCheckpointError,
    NotACheckpointError,
)

LIGHTNING_MARKERS = ("pytorch-lightning_version", "optimizer_states", "hyper_parameters", "global_step", "epoch")

#: :attr:`CheckpointFile.label` of each kind, for files not written by the converter.
KIND_LABELS = {
    "training": "training checkpoint",
    "inference": "inference checkpoint (whole model pickled)",
    "state-dict": "state dict (weights only)",
    "safetensors": "safetensors (weights only)",
}


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape, dtype and size of one tensor, known without reading its values."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    #: Bytes the file holds for it (a sparse tensor: its indices and values).
    nbytes: int
    #: ``"strided"`` (dense), or a sparse layout such as ``"sparse_coo"`` or ``"sparse_csr"``.
    layout: str = "strided"

    @property
    def numel(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count


class CheckpointFile:
    """An open checkpoint: what it holds, with tensors memory-mapped and loaded on demand.

    Made by :func:`open_checkpoint`. Attributes are computed on opening; the
    tensor values are only read when used.

    Attributes:
        path: the file.
        kind: ``"training"``, ``"inference"``, ``"state-dict"`` or ``"safetensors"``.
        format: ``"zip"``, ``"legacy"``, ``"pickle"`` or ``"safetensors"``.
        metadata: the embedded ``anemoi.json`` (else ``ai-models.json``), else
            ``hyper_parameters["metadata"]`` as plain data, else ``None``.
        metadata_source: where the metadata came from: ``"anemoi.json"``,
            ``"ai-models.json"``, ``"hyper_parameters"``, ``"model"``, ``"safetensors"`` or ``None``.
        supporting_arrays: name -> numpy array (a nested dict per dataset for multi-dataset).
        weights: name -> :class:`TensorInfo`, in file order.
        total_bytes, weights_bytes, optimizer_bytes, other_bytes: the file's size and its split.
        parameter_count: elements in the weights (parameters and buffers; shared tensors counted once).
        epoch, global_step: from the Lightning dict, else from the metadata.
        uuid, run_id, parent_uuid: from the metadata.
        opaque_classes: ``(module, name)`` of the classes the pickle named and the reader did not rebuild,
            and of the functions it keeps as inert references (``torch.nn.functional.gelu``).
        raw: the unpickled top-level object: plain data and inert placeholders (``None`` for safetensors).
        label: what the file is, in words (see :attr:`label`).
    """

    def __init__(self, path: Path, kind: str, fmt: str) -> None:
        self.path = path
        self.kind = kind
        self.format = fmt
        self.metadata: dict | None = None
        self.metadata_source: str | None = None
        self.supporting_arrays: dict = {}
        self.weights: dict[str, TensorInfo] = {}
        self.total_bytes = 0
        self.weights_bytes = 0
        self.optimizer_bytes = 0
        self.other_bytes = 0
        self.parameter_count = 0
        self.epoch: int | None = None
        self.global_step: int | None = None
        self.uuid: str | None = None
        self.run_id: str | None = None
        self.parent_uuid: str | None = None
        self.opaque_classes: list[tuple[str, str]] = []
        self.raw: Any = None
        self._tensors: dict[str, Any] = {}
        self._make_tensor: Any = None  # safetensors: name -> tensor, made on demand
        self._span: Any = None  # name -> (offset, nbytes) | None, set by the opener
        self._crc: Any = None  # name -> the archive's CRC-32 of its bytes | None, set by the opener
        #: ``os.stat`` of the file when it was opened: a caller reading it again can tell it was replaced or rewritten.
        self.opened_stat: os.stat_result | None = None
        self._closers: list[Any] = []
        self._closed = False

    # -- tensors
    def tensor(self, name: str) -> Any:
        """The tensor ``name`` (memory-mapped: its values are read when used).

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed.
            CheckpointChangedError: the file changed on disk since it was opened (reading a
                memory map past a truncated end would kill the process instead).
        """
        self._check(name)
        if self.changed_on_disk():
            raise CheckpointChangedError(
                self.path,
                "it changed on disk since it was opened (rewritten, replaced or truncated)",
                hint="open it again once the program writing it has finished",
            )
        if name in self._tensors:
            return self._tensors[name].detach()
        return self._make_tensor(name)

    def tensor_span(self, name: str) -> tuple[int, int] | None:
        """Where the bytes of the weight ``name`` lie in the file, as ``(offset, nbytes)``.

        Computed from the file's structure, without reading any tensor: for a
        torch zip archive, the storage entry's data offset (its local header's
        offset + 30 + the name and extra lengths read from that header) plus the
        tensor's ``storage_offset * itemsize``; for a legacy torch file, the
        storage's place after its element count; for safetensors, the header's
        ``data_offsets``. The bytes there are exactly ``tensor(name)``'s values,
        C-contiguous, in the machine's byte order, so a caller may read them with
        plain file reads instead of through the memory map.

        Returns:
            ``None`` when the tensor is not a contiguous run of the file's bytes:
            a non-contiguous view, a storage held in memory (plain pickles,
            compressed entries, tensors pickled inside the pickle) or one
            byte-swapped from a file of the other byte order.

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed.
        """
        self._check(name)
        return self._span(name) if self._span is not None else None

    def tensor_crc32(self, name: str) -> int | None:
        """The CRC-32 the zip archive records for the bytes of the weight ``name``.

        Lets a caller that read those bytes (:meth:`tensor_span`) check them: a
        mismatch means the file changed since it was opened, or is damaged.

        Returns:
            ``None`` unless the weight is exactly one whole, stored (uncompressed)
            entry of a torch zip archive in this machine's byte order.

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed.
        """
        self._check(name)
        return self._crc(name) if self._crc is not None else None

    def changed_on_disk(self) -> bool:
        """Whether the file at :attr:`path` is no longer the one opened, or was rewritten since
        (another inode, size or modification time)."""
        if self.opened_stat is None:
            return False
        try:
            now = self.path.stat()
        except OSError:
            return True
        before = self.opened_stat
        return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != (
            before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns
        )

    def _check(self, name: str) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the checkpoint is closed")
        if name not in self.weights:
            close = [n for n in self.weights if name in n or n in name][:3]
            raise KeyError(f"{self.path}: no weight {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))

    def iter_weights(self) -> Iterator[tuple[str, Any]]:
        """``(name, tensor)`` for every weight, in file order."""
        for name in self.weights:
            yield name, self.tensor(name)

    @property
    def label(self) -> str:
        """What the file is, for people: ``kind`` says how it was read, this says what it is for.

        A file written by ``anemoi-ckpt convert`` is read as a ``"state-dict"`` (a torch zip
        of the weights) or ``"safetensors"``, which is what the catalogue and the converter's own
        check key on; its metadata's ``conversion`` record makes it an inference checkpoint.
        """
        metadata = self.metadata if isinstance(self.metadata, dict) else {}
        conversion = metadata.get("conversion")
        if self.kind in ("state-dict", "safetensors") and isinstance(conversion, dict):
            source = metadata.get("converted_from")
            source_uuid = source.get("uuid") if isinstance(source, dict) else None
            label = f"inference checkpoint (weights only, converted by {conversion.get('tool') or 'a converter'}"
            return label + (f" from {source_uuid})" if source_uuid else ")")
        return KIND_LABELS.get(self.kind, self.kind)

    # -- summary
    def summary(self) -> dict[str, Any]:
        """A JSON-able description: what ``anemoi-ckpt inspect --json`` prints."""
        dtypes: dict[str, int] = {}
        for info in self.weights.values():
            dtypes[info.dtype] = dtypes.get(info.dtype, 0) + 1
        metadata = self.metadata or {}
        return {
            "path": str(self.path),
            "kind": self.kind,
            "label": self.label,
            "format": self.format,
            "uuid": self.uuid,
            "run_id": self.run_id,
            "parent_uuid": self.parent_uuid,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "parameter_count": self.parameter_count,
            "tensor_count": len(self.weights),
            "dtypes": dtypes,
            "sparse_tensors": {name: info.layout for name, info in self.weights.items() if info.layout != "strided"},
            "sizes": {
                "total": self.total_bytes,
                "weights": self.weights_bytes,
                "optimizer": self.optimizer_bytes,
                "other": self.other_bytes,
            },
            "metadata_source": self.metadata_source,
            "metadata_version": _str_or_none(metadata.get("version")),
            "dataset": dataset_summary(metadata),
            "supporting_arrays": {name: list(shape) for name, shape in _array_shapes(self.supporting_arrays)},
            "opaque_classes": [f"{module}.{name}" for module, name in self.opaque_classes],
        }

    # -- life cycle
    def close(self) -> None:
        """Release the file (memory maps go once the tensors handed out are gone too)."""
        for close in self._closers:
            close()
        self._closers.clear()
        self._tensors.clear()
        self._make_tensor = None
        self._span = None
        self.raw = None
        self._closed = True

    def __enter__(self) -> CheckpointFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CheckpointFile {self.kind} {str(self.path)!r} uuid={self.uuid} parameters={self.parameter_count}>"


def open_checkpoint(path: str | os.PathLike, *, max_pickle_bytes: int | None = None) -> CheckpointFile:
    """Open a checkpoint file without running any code from it.

    Args:
        path: a Lightning training checkpoint, an anemoi inference checkpoint,
            a ``torch.save`` of a state dict, or a ``.safetensors`` file.
        max_pickle_bytes: the largest pickle read into memory (default 512 MiB).

    Returns:
        The open checkpoint; close it (or use ``with``) to release the file.

    Raises:
        CheckpointNotFoundError: there is no such file.
        NotACheckpointError: the file is not a checkpoint of a kind we know.
        CorruptCheckpointError: the file is truncated or damaged.
        UnsafePickleError: the pickle reaches for a callable outside the allow-list; nothing ran.
        CheckpointReadError: the file cannot be read (permissions, size limits).
    """
    from anemoi_ckpt_nb.read.torchfile import sniff
    from anemoi_ckpt_nb.read.unpickler import DEFAULT_MAX_PICKLE_BYTES

    path = Path(path).expanduser()
    try:
        opened = path.stat()
        size = opened.st_size
        if path.is_dir():
            raise NotACheckpointError(path, "is a directory, not a checkpoint file")
        if size == 0:
            raise NotACheckpointError(path, "is an empty file")
        kind = sniff(path)
    except FileNotFoundError:
        raise CheckpointNotFoundError(path, "no such file", hint="check the path") from None
    except PermissionError:
        raise CheckpointReadError(path, "permission denied") from None
    if kind == "safetensors":
        ck = _open_safetensors(path, size)
    else:
        ck = _open_torch(path, size, max_pickle_bytes or DEFAULT_MAX_PICKLE_BYTES)
    ck.opened_stat = opened
    return ck


# --- torch files ----------------------------------------------------------------


def _open_torch(path: Path, size: int, max_pickle_bytes: int) -> CheckpointFile:
    from anemoi_ckpt_nb.read.torchfile import load_torch_file

    try:
        loaded = load_torch_file(path, max_pickle_bytes=max_pickle_bytes)
    except PermissionError:
        raise CheckpointReadError(path, "permission denied") from None
    try:
        return _build(loaded, size)
    except BaseException:
        loaded.close()
        raise


def _build(loaded: Any, size: int) -> CheckpointFile:
    import torch

    from anemoi_ckpt_nb.read.classmap import to_plain

    path = loaded.path
    raw = loaded.raw
    kind, tensors, extras = _classify(raw, path)
    ck = CheckpointFile(path, kind, loaded.format)
    ck.raw = raw
    ck.opaque_classes = loaded.globals.opaque
    ck.total_bytes = size
    ck._tensors = tensors
    ck._closers.append(loaded.close)

    def storage_key(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        key = loaded.storage_by_ptr.get(ptr)
        return key if key is not None else ("memory", ptr, storage.nbytes())

    def storage_bytes(key: Any) -> int:
        if isinstance(key, tuple):
            return key[2]
        return loaded.storages[key].nbytes

    weight_storages: set = set()
    seen_views: set = set()
    for name, tensor in tensors.items():
        parts = _dense_parts(tensor, path, name)
        ck.weights[name] = _info(name, tensor, parts)
        for part in parts:
            key = storage_key(part)
            weight_storages.add(key)
        # A sparse tensor's parameters are the values it stores.
        counted = parts[-1]
        view = (storage_key(counted), counted.storage_offset(), tuple(counted.shape), tuple(counted.stride()))
        if view not in seen_views:
            seen_views.add(view)
            ck.parameter_count += counted.numel()
    ck.weights_bytes = sum(storage_bytes(k) for k in weight_storages)
    ck._span = lambda name: _torch_span(tensors[name], loaded)
    ck._crc = lambda name: _torch_crc32(tensors[name], loaded)
    if kind == "training":
        optimizer_storages = {
            storage_key(part)
            for t in _walk_tensors(_as_mapping(raw).get("optimizer_states"), torch)
            for part in _dense_parts(t, path, "optimizer state")
        }
        ck.optimizer_bytes = sum(storage_bytes(k) for k in optimizer_storages - weight_storages)
    ck.other_bytes = max(0, size - ck.weights_bytes - ck.optimizer_bytes)

    embedded = _read_embedded(loaded)
    if embedded is not None:
        ck.metadata = embedded.metadata
        ck.metadata_source = embedded.source
        ck.supporting_arrays = embedded.supporting_arrays
    else:
        metadata, arrays, source = extras.get("metadata"), extras.get("supporting_arrays"), extras.get("source")
        try:
            plain = to_plain(metadata) if metadata is not None else None
            kept = to_plain(arrays, tensors="keep") if arrays is not None else None
        except RecursionError:
            raise CorruptCheckpointError(path, "the pickled metadata is nested too deeply to read") from None
        if isinstance(plain, dict):
            ck.metadata, ck.metadata_source = plain, source
        if arrays is not None:
            ck.supporting_arrays = kept if isinstance(kept, dict) else {}

    _fill_identity(ck)
    if kind == "training":
        lightning = _as_mapping(raw)
        ck.epoch = _int_or_none(lightning.get("epoch"), ck.epoch)
        ck.global_step = _int_or_none(lightning.get("global_step"), ck.global_step)
    return ck


def _torch_span(tensor: Any, loaded: Any) -> tuple[int, int] | None:
    """``(offset, nbytes)`` of a tensor's bytes in a torch file (see :meth:`CheckpointFile.tensor_span`)."""
    import torch

    if tensor.layout is not torch.strided or not tensor.is_contiguous():
        return None
    storage = tensor.untyped_storage()
    key = loaded.storage_by_ptr.get(storage.data_ptr())
    record = loaded.storages.get(key) if key is not None else None
    if record is None or record.offset is None or record.swapped:
        return None
    start = tensor.storage_offset() * tensor.element_size()
    nbytes = tensor.numel() * tensor.element_size()
    if start < 0 or start + nbytes > record.nbytes:
        return None
    return record.offset + start, nbytes


def _torch_crc32(tensor: Any, loaded: Any) -> int | None:
    """The zip CRC-32 of the entry holding exactly ``tensor``'s bytes (see :meth:`CheckpointFile.tensor_crc32`)."""
    span = _torch_span(tensor, loaded)
    if span is None:
        return None
    record = loaded.storages.get(loaded.storage_by_ptr.get(tensor.untyped_storage().data_ptr()))
    if record is None or record.crc32 is None or span != (record.offset, record.nbytes):
        return None
    return record.crc32


def _classify(raw: Any, path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(kind, weights by name, extras)`` for an unpickled torch file."""
    import torch

    from anemoi_ckpt_nb.read.classmap import state_dict
    from anemoi_ckpt_nb.read.placeholders import is_placeholder, is_reference

    mapping = _as_mapping(raw)
    if mapping is not None:
        state = _as_mapping(mapping.get("state_dict"))
        if state is not None and any(marker in mapping for marker in LIGHTNING_MARKERS):
            hyper = _as_mapping(mapping.get("hyper_parameters")) or {}
            extras = {
                "metadata": hyper.get("metadata"),
                "supporting_arrays": hyper.get("supporting_arrays"),
                "source": "hyper_parameters",
            }
            return "training", _tensors_of(state, torch), extras
        if mapping and all(isinstance(v, torch.Tensor) for v in mapping.values()):
            return "state-dict", _tensors_of(mapping, torch), {}
        if not mapping:
            return "state-dict", {}, {}
        for key in ("state_dict", "model"):
            inner = _as_mapping(mapping.get(key))
            if inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return "state-dict", _tensors_of(inner, torch), {}
        raise NotACheckpointError(
            path, f"a pickled dict with keys {sorted(map(str, mapping))[:8]}, but no state_dict of tensors"
        )
    if is_placeholder(raw):
        state = state_dict(raw) or {}
        if "_modules" in state and "_parameters" in state:
            extras = {"metadata": state.get("metadata"), "supporting_arrays": state.get("supporting_arrays"), "source": "model"}
            return "inference", _module_tensors(raw, torch), extras
        raise NotACheckpointError(path, f"a pickled {raw.ph_path} object, not a model or a checkpoint")
    if is_reference(raw):
        raise NotACheckpointError(path, f"a pickled reference to the function {raw.ph_path}, not a checkpoint")
    raise NotACheckpointError(path, f"a pickled {type(raw).__name__}, not a checkpoint")


def _as_mapping(obj: Any) -> dict | None:
    """A dict view of a dict, or of a placeholder of a dict subclass (Lightning's AttributeDict)."""
    from anemoi_ckpt_nb.read.placeholders import is_placeholder

    if isinstance(obj, dict):
        return obj
    if is_placeholder(obj) and obj.ph_dictitems:
        try:
            return dict(obj.ph_dictitems)
        except TypeError:
            return None
    return None


def _tensors_of(mapping: dict, torch: Any) -> dict[str, Any]:
    return {str(name): value for name, value in mapping.items() if isinstance(value, torch.Tensor)}


def _module_tensors(root: Any, torch: Any) -> dict[str, Any]:
    """``module.state_dict()`` of a pickled module tree: parameters, persistent buffers, children."""
    from anemoi_ckpt_nb.read.classmap import state_dict
    from anemoi_ckpt_nb.read.placeholders import is_placeholder

    found: dict[str, Any] = {}
    active: set[int] = set()

    def visit(module: Any, prefix: str, depth: int) -> None:
        if not is_placeholder(module) or id(module) in active or depth > 200:
            return
        active.add(id(module))
        state = state_dict(module) or {}
        skip = state.get("_non_persistent_buffers_set")
        skip = set(skip) if isinstance(skip, (set, frozenset, list)) else set()
        for group in ("_parameters", "_buffers"):
            for name, value in (_as_mapping(state.get(group)) or {}).items():
                if isinstance(value, torch.Tensor) and not (group == "_buffers" and name in skip):
                    found[f"{prefix}{name}"] = value
        for name, child in (_as_mapping(state.get("_modules")) or {}).items():
            visit(child, f"{prefix}{name}.", depth + 1)
        active.discard(id(module))

    visit(root, "", 0)
    return found


def _walk_tensors(obj: Any, torch: Any) -> Iterator[Any]:
    """Every tensor reachable from ``obj`` (iterative: pickles can nest deeply)."""
    from anemoi_ckpt_nb.read.placeholders import iter_children

    stack = [obj]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (str, bytes, int, float, bool)) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            yield item
        else:
            stack.extend(iter_children(item))


def _info(name: str, tensor: Any, parts: list[Any]) -> TensorInfo:
    from anemoi_ckpt_nb.read.classmap import dtype_name

    shape = tuple(int(n) for n in tensor.shape)
    nbytes = sum(part.numel() * part.element_size() for part in parts)
    layout = str(tensor.layout).removeprefix("torch.")
    return TensorInfo(name, shape, dtype_name(tensor.dtype), nbytes, layout)


def _dense_parts(tensor: Any, path: Path, name: str) -> list[Any]:
    """The dense tensors that hold a tensor's bytes: itself, or a sparse tensor's indices and values (last).

    Raises:
        CorruptCheckpointError: a layout whose bytes cannot be told (none that torch.save writes today).
    """
    import torch

    layout = tensor.layout
    if layout is torch.strided:
        return [tensor]
    if layout is torch.sparse_coo:
        return [tensor._indices(), tensor._values()]
    if layout in (torch.sparse_csr, torch.sparse_bsr):
        return [tensor.crow_indices(), tensor.col_indices(), tensor.values()]
    if layout in (torch.sparse_csc, torch.sparse_bsc):
        return [tensor.ccol_indices(), tensor.row_indices(), tensor.values()]
    raise CorruptCheckpointError(path, f"{name}: a tensor of layout {layout} that this reader cannot size")


def _read_embedded(loaded: Any) -> Any:
    if loaded.zip is None:
        return None
    from anemoi_ckpt_nb.read.embedded import read_embedded

    try:
        return read_embedded(loaded.zip)
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise CorruptCheckpointError(loaded.path, f"the embedded metadata is damaged ({error})") from None
    except Exception as error:  # zipfile raises BadZipFile and others on damaged entries
        raise CorruptCheckpointError(loaded.path, f"cannot read the embedded metadata ({error})") from None


def _fill_identity(ck: CheckpointFile) -> None:
    metadata = ck.metadata or {}
    ck.uuid = _str_or_none(metadata.get("uuid"))
    ck.run_id = _str_or_none(metadata.get("run_id"))
    ck.parent_uuid = _str_or_none(metadata.get("parent_uuid"))
    training = metadata.get("training")
    if isinstance(training, dict):
        ck.epoch = _int_or_none(training.get("current_epoch", training.get("epoch")), None)
        ck.global_step = _int_or_none(training.get("global_step"), None)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


# --- safetensors ----------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
}

#: A safetensors header larger than this is refused (real ones are a few MB).
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def _open_safetensors(path: Path, size: int) -> CheckpointFile:
    import struct

    import torch
    from safetensors import safe_open

    from anemoi_ckpt_nb.read.embedded import (
        SAFETENSORS_METADATA_KEY,
        safetensors_array_keys,
    )

    try:
        with safe_open(str(path), framework="pt") as handle:  # validates header, offsets and file length
            header_metadata = handle.metadata() or {}
    except Exception as error:  # SafetensorError is not importable under a stable name
        raise CorruptCheckpointError(path, f"damaged safetensors file ({error})") from None
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_SAFETENSORS_HEADER:
            raise CheckpointReadError(path, f"safetensors header of {header_len} bytes is over the limit")
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    entries = sorted(
        ((name, e) for name, e in header.items() if name != "__metadata__"), key=lambda item: item[1]["data_offsets"][0]
    )

    ck = CheckpointFile(path, "safetensors", "safetensors")
    ck.total_bytes = size
    mapped = torch.UntypedStorage.from_file(str(path), False, size)
    layout: dict[str, tuple[Any, tuple[int, ...], int, int]] = {}
    arrays: dict[str, list[str]] = {}  # tensor name -> key path, for supporting arrays
    for name, entry in entries:
        dtype_str = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
        if dtype_str is None:
            raise NotACheckpointError(path, f"tensor {name} has dtype {entry.get('dtype')}, which is not supported")
        dtype = getattr(torch, dtype_str)
        shape = tuple(int(n) for n in entry["shape"])
        start, end = (int(n) for n in entry["data_offsets"])
        layout[name] = (dtype, shape, base + start, base + end)
        keys = safetensors_array_keys(name)
        if keys is not None:
            arrays[name] = keys
            continue
        ck.weights[name] = TensorInfo(name, shape, dtype_str, end - start)
        ck.weights_bytes += end - start
        ck.parameter_count += TensorInfo(name, shape, dtype_str, 0).numel

    def make(name: str) -> Any:
        dtype, shape, start, end = layout[name]
        element = torch.empty((), dtype=dtype).element_size()
        if start % element:
            with safe_open(str(path), framework="pt") as handle:  # unaligned: a copy, not a view
                return handle.get_tensor(name)
        stride = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            stride[i] = stride[i + 1] * shape[i + 1]
        storage = torch.storage.TypedStorage(wrap_storage=mapped[start:end], dtype=dtype, _internal=True)
        return torch.empty((0,), dtype=dtype).set_(storage._untyped_storage, 0, shape, stride)

    ck._make_tensor = make
    ck._span = lambda name: (layout[name][2], layout[name][3] - layout[name][2])
    ck.other_bytes = size - ck.weights_bytes
    raw_metadata = header_metadata.get(SAFETENSORS_METADATA_KEY)
    if raw_metadata is not None:
        try:
            metadata = json.loads(raw_metadata)
        except ValueError as error:
            raise CorruptCheckpointError(path, f"the '{SAFETENSORS_METADATA_KEY}' metadata is not JSON ({error})") from None
        if isinstance(metadata, dict):
            ck.metadata, ck.metadata_source = metadata, "safetensors"
    for name, keys in arrays.items():
        node = ck.supporting_arrays
        for part in keys[:-1]:
            node = node.setdefault(part, {})
        node[keys[-1]] = make(name).numpy().copy()
    _fill_identity(ck)
    return ck


# --- summaries ------------------------------------------------------------------


def dataset_summary(metadata: dict) -> dict | None:
    """A short description of ``metadata["dataset"]`` (per dataset name for multi-dataset metadata)."""
    dataset = metadata.get("dataset") if isinstance(metadata, dict) else None
    if not isinstance(dataset, dict) or not dataset:
        return None
    if not ({"shape", "variables", "arguments"} & set(dataset)) and all(isinstance(v, dict) for v in dataset.values()):
        return {str(name): _one_dataset(value) for name, value in dataset.items()}
    return _one_dataset(dataset)


def _one_dataset(dataset: dict) -> dict:
    summary: dict[str, Any] = {}
    name = _dataset_name(dataset.get("arguments"))
    if name is None and isinstance(dataset.get("specific"), dict):
        specific_path = dataset["specific"].get("path")
        name = os.path.basename(str(specific_path)) if specific_path else None
    summary["name"] = name
    for key in ("resolution", "frequency", "start_date", "end_date"):
        if dataset.get(key) is not None:
            summary[key] = dataset[key]
    if isinstance(dataset.get("variables"), list):
        summary["variables"] = len(dataset["variables"])
    if isinstance(dataset.get("shape"), list):
        summary["shape"] = dataset["shape"]
    return summary


def _dataset_name(arguments: Any, depth: int = 0) -> str | None:
    if depth > 10 or arguments is None:
        return None
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, dict):
        for key in ("dataset", "args", "kwargs"):
            if key in arguments:
                found = _dataset_name(arguments[key], depth + 1)
                if found:
                    return found
        return None
    if isinstance(arguments, list):
        for item in arguments:
            found = _dataset_name(item, depth + 1)
            if found:
                return found
    return None


def _array_shapes(arrays: dict, prefix: str = "") -> Iterator[tuple[str, tuple[int, ...]]]:
    for name, value in arrays.items():
        if isinstance(value, dict):
            yield from _array_shapes(value, f"{prefix}{name}/")
        elif hasattr(value, "shape"):
            yield f"{prefix}{name}", tuple(int(n) for n in value.shape)


def format_bytes(count: int) -> str:
    """``1.2 GB``-style size (decimal units, as ``ls -h --si`` and S3 consoles show them)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"  # pragma: no cover


def summary_text(summary: dict[str, Any]) -> str:
    """The human-readable form of :meth:`CheckpointFile.summary` (``anemoi-ckpt inspect``)."""
    sizes = summary["sizes"]
    dtypes = ", ".join(f"{name}" if len(summary["dtypes"]) == 1 else f"{count} {name}" for name, count in summary["dtypes"].items())
    lines = [
        str(summary["path"]),
        f"  kind          {_kind_line(summary)}",
        f"  uuid          {summary['uuid'] or '-'}",
        f"  run           {summary['run_id'] or '-'}",
        f"  parent        {summary['parent_uuid'] or '-'}",
        f"  epoch, step   {_dash(summary['epoch'])}, {_dash(summary['global_step'])}",
        f"  parameters    {summary['parameter_count']:,} in {summary['tensor_count']} tensors" + (f" ({dtypes})" if dtypes else "")
        + (f", {len(sparse)} sparse ({', '.join(sorted(set(sparse.values())))})" if (sparse := summary.get("sparse_tensors")) else ""),
        f"  size          {format_bytes(sizes['total'])}: weights {format_bytes(sizes['weights'])}, "
        f"optimizer {format_bytes(sizes['optimizer'])}, other {format_bytes(sizes['other'])}",
    ]
    if summary["metadata_source"]:
        lines.append(f"  metadata      version {summary['metadata_version'] or '?'} (from {summary['metadata_source']})")
    else:
        lines.append("  metadata      none")
    dataset = summary["dataset"]
    if dataset:
        if "name" in dataset and not isinstance(dataset.get("name"), dict):
            lines.append(f"  dataset       {_dataset_line(dataset)}")
        else:
            for name, one in dataset.items():
                lines.append(f"  dataset       {name}: {_dataset_line(one)}")
    if summary["supporting_arrays"]:
        arrays = ", ".join(f"{name} {tuple(shape)}" for name, shape in summary["supporting_arrays"].items())
        lines.append(f"  arrays        {arrays}")
    opaque = summary["opaque_classes"]
    lines.append(f"  opaque        {len(opaque)} classes not rebuilt" + (":" if opaque else ""))
    lines.extend(f"                {name}" for name in opaque)
    return "\n".join(lines)


def _kind_line(summary: dict[str, Any]) -> str:
    """``training (zip)``; for a converted file what it is, then how it is stored."""
    label = summary.get("label")
    if not label or label == KIND_LABELS.get(summary["kind"]):
        return f"{summary['kind']} ({summary['format']})"
    return f"{label}; stored as {summary['kind']} ({summary['format']})"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _dataset_line(dataset: dict) -> str:
    details = [str(dataset[k]) for k in ("resolution", "frequency") if k in dataset]
    if "start_date" in dataset or "end_date" in dataset:
        details.append(f"{dataset.get('start_date', '?')} to {dataset.get('end_date', '?')}")
    if "variables" in dataset:
        details.append(f"{dataset['variables']} variables")
    name = dataset.get("name") or "?"
    return f"{name} ({', '.join(details)})" if details else str(name)
