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

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import (
    CheckpointNotFoundError,
    CheckpointReadError,
    CorruptCheckpointError,
    NotACheckpointError,
)
from anemoi_ckpt_nb.read.checkpoint import (
    CheckpointFile,
    TensorInfo,
    _fill_identity,
    _int_or_none,
)
from anemoi_ckpt_nb.read.safetensors_file import _open_safetensors

LIGHTNING_MARKERS = ("pytorch-lightning_version", "optimizer_states", "hyper_parameters", "global_step", "epoch")


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

    pickled = extras.get("metadata")
    _fill_identity(ck, _as_mapping(pickled) if pickled is not None else None)
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
