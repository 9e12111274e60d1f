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

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import (
    CheckpointNotFoundError,
    CheckpointReadError,
    CorruptCheckpointError,
    NotACheckpointError,
)
from anemoi_ckpt_nb.read.checkpoint import CheckpointFile, TensorInfo
from anemoi_ckpt_nb.read.identity import fill_identity, int_or_none

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
        from anemoi_ckpt_nb.read.safetensors_file import _open_safetensors  # not imported for torch files

        ck = _open_safetensors(path, size)
    else:
        ck = _open_torch(path, size, max_pickle_bytes or DEFAULT_MAX_PICKLE_BYTES)
    ck.opened_stat = opened
    return ck


def _open_torch(path: Path, size: int, max_pickle_bytes: int) -> CheckpointFile:
    from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch
    from anemoi_ckpt_nb.read.torchfile import load_torch_file

    try:
        # Without torch first (tensors described: a fraction of the time and memory); a file
        # that needs torch's own rebuilding (sparse, quantized, ...) is read with it.
        try:
            loaded = load_torch_file(path, max_pickle_bytes=max_pickle_bytes, describe=True)
        except NeedsTorch:
            loaded = load_torch_file(path, max_pickle_bytes=max_pickle_bytes)
    except PermissionError:
        raise CheckpointReadError(path, "permission denied") from None
    try:
        return _build(loaded, size)
    except BaseException:
        loaded.close()
        raise


def _build(loaded: Any, size: int) -> CheckpointFile:
    from anemoi_ckpt_nb.read.bounds import SharedExpansionError, tree_size
    from anemoi_ckpt_nb.read.classmap import to_plain
    from anemoi_ckpt_nb.read.tensorviews import DescribedTensors, TorchTensors

    path = loaded.path
    raw = loaded.raw
    view = DescribedTensors(loaded) if loaded.described else TorchTensors(loaded)
    kind, tensors, extras = _classify(raw, path, view.is_tensor)
    ck = CheckpointFile(path, kind, loaded.format)
    ck.raw = raw
    ck.opaque_classes = loaded.globals.opaque
    ck.total_bytes = size
    ck._closers.append(loaded.close)
    view.attach(ck, tensors)

    weight_storages: set = set()
    seen_views: set = set()
    for name, tensor in tensors.items():
        parts = view.parts(tensor, name)
        ck.weights[name] = view.info(name, tensor, parts)
        for part in parts:
            weight_storages.add(view.storage_key(part))
        # A sparse tensor's parameters are the values it stores.
        counted = parts[-1]
        place = view.place(counted)
        if place not in seen_views:
            seen_views.add(place)
            ck.parameter_count += view.numel(counted)
    ck.weights_bytes = sum(view.storage_bytes(k) for k in weight_storages)
    if kind == "training":
        optimizer_storages = {
            view.storage_key(part)
            for t in _walk_tensors(_as_mapping(raw).get("optimizer_states"), view.is_tensor)
            for part in view.parts(t, "optimizer state")
        }
        ck.optimizer_bytes = sum(view.storage_bytes(k) for k in optimizer_storages - weight_storages)
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
            # Every user of the metadata writes it out (JSON, validation): refuse here, once,
            # what would expand without bound there.
            tree_size(plain)
        except RecursionError:
            raise CorruptCheckpointError(path, "the pickled metadata is nested too deeply to read") from None
        except SharedExpansionError as error:
            raise CorruptCheckpointError(path, f"refused the pickled metadata: {error}") from None
        if isinstance(plain, dict):
            ck.metadata, ck.metadata_source = plain, source
        if arrays is not None:
            ck.supporting_arrays = kept if isinstance(kept, dict) else {}

    ck._model_inputs = _model_inputs_of(loaded, ck)
    pickled = extras.get("metadata")
    fill_identity(ck, _as_mapping(pickled) if pickled is not None else None)
    if kind == "training":
        lightning = _as_mapping(raw)
        ck.epoch = int_or_none(lightning.get("epoch"), ck.epoch)
        ck.global_step = int_or_none(lightning.get("global_step"), ck.global_step)
    return ck


def _classify(raw: Any, path: Path, is_tensor: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(kind, weights by name, extras)`` for an unpickled torch file (``is_tensor`` tells its tensors)."""
    from anemoi_ckpt_nb.read.bounds import SharedExpansionError
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
            return "training", _tensors_of(state, is_tensor), extras
        if mapping and all(is_tensor(v) for v in mapping.values()):
            return "state-dict", _tensors_of(mapping, is_tensor), {}
        if not mapping:
            return "state-dict", {}, {}
        for key in ("state_dict", "model"):
            inner = _as_mapping(mapping.get(key))
            if inner and all(is_tensor(v) for v in inner.values()):
                return "state-dict", _tensors_of(inner, is_tensor), {}
        raise NotACheckpointError(
            path, f"a pickled dict with keys {sorted(map(str, mapping))[:8]}, but no state_dict of tensors"
        )
    if is_placeholder(raw):
        state = state_dict(raw) or {}
        if "_modules" in state and "_parameters" in state:
            extras = {"metadata": state.get("metadata"), "supporting_arrays": state.get("supporting_arrays"), "source": "model"}
            try:
                return "inference", _module_tensors(raw, is_tensor), extras
            except SharedExpansionError as error:
                raise CorruptCheckpointError(path, f"refused the pickled model: {error}") from None
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


def _tensors_of(mapping: dict, is_tensor: Any) -> dict[str, Any]:
    return {str(name): value for name, value in mapping.items() if is_tensor(value)}


#: Deepest module tree walked: real anemoi models are about 10 deep.
MAX_MODULE_DEPTH = 200


def _module_parts(module: Any, is_tensor: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, children)`` of one pickled module: parameters and persistent buffers, submodules."""
    from anemoi_ckpt_nb.read.classmap import state_dict

    state = state_dict(module) or {}
    skip = state.get("_non_persistent_buffers_set")
    skip = set(skip) if isinstance(skip, (set, frozenset, list)) else set()
    tensors = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (_as_mapping(state.get(group)) or {}).items():
            if is_tensor(value) and not (group == "_buffers" and name in skip):
                tensors[str(name)] = value
    children = {str(name): child for name, child in (_as_mapping(state.get("_modules")) or {}).items()}
    return tensors, children


def _module_tensors(root: Any, is_tensor: Any) -> dict[str, Any]:
    """``module.state_dict()`` of a pickled module tree: parameters, persistent buffers, children.

    A submodule held in several places is listed under each name, as torch does (tied layers);
    its entries are counted over the shared graph first, each module once, so a tree that shares
    its submodules 10 ways 8 deep (a few kB of pickle, 10**8 names) is refused before it expands.

    Raises:
        SharedExpansionError: the walk would meet more than ``MAX_STATE_ENTRIES`` modules and tensors.
    """
    from anemoi_ckpt_nb.read.bounds import MAX_STATE_ENTRIES, SharedExpansionError
    from anemoi_ckpt_nb.read.placeholders import is_placeholder

    parts: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def expanded(module: Any, depth: int) -> int:
        """Modules and tensors the walk below meets under ``module``, each module's parts read once."""
        key = id(module)
        if not is_placeholder(module) or key in active or depth > MAX_MODULE_DEPTH:
            return 0
        if key not in sizes:
            active.add(key)
            tensors, children = parts.setdefault(key, _module_parts(module, is_tensor))
            sizes[key] = 1 + len(tensors) + sum(expanded(child, depth + 1) for child in children.values())
            active.discard(key)
        return sizes[key]

    def refuse(total: int) -> SharedExpansionError:
        return SharedExpansionError(
            f"its {len(parts):,} modules are shared so many ways that its state dict would list "
            f"{total:,} modules and tensors (more than {MAX_STATE_ENTRIES:,})"
        )

    total = expanded(root, 0)
    if total > MAX_STATE_ENTRIES:
        raise refuse(total)

    found: dict[str, Any] = {}
    active.clear()
    walked = 0

    def visit(module: Any, prefix: str, depth: int) -> None:
        nonlocal walked
        key = id(module)
        if not is_placeholder(module) or key in active or depth > MAX_MODULE_DEPTH:
            return
        # The count above cut a module met first deep down at the depth bound; never walk past it.
        walked += 1 + len(parts[key][0])
        if walked > MAX_STATE_ENTRIES:
            raise refuse(walked)
        active.add(key)
        tensors, children = parts[key]
        for name, value in tensors.items():
            found[f"{prefix}{name}"] = value
        for name, child in children.items():
            visit(child, f"{prefix}{name}.", depth + 1)
        active.discard(key)

    visit(root, "", 0)
    return found


def _walk_tensors(obj: Any, is_tensor: Any) -> Iterator[Any]:
    """Every tensor reachable from ``obj`` (iterative: pickles can nest deeply)."""
    from anemoi_ckpt_nb.read.placeholders import iter_children

    stack = [obj]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (str, bytes, int, float, bool)) or id(item) in seen:
            continue
        seen.add(id(item))
        if is_tensor(item):
            yield item
        else:
            stack.extend(iter_children(item))


def _model_inputs_of(loaded: Any, ck: CheckpointFile) -> Any:
    """How to read the model inputs when asked: from the archive's entries, else from the pickle."""
    def read() -> Any:
        from anemoi_ckpt_nb.read import model_inputs  # when asked: inspect does not (issue 16)

        stored = model_inputs.from_zip(loaded.zip) if loaded.zip is not None else None
        return stored if stored is not None else model_inputs.from_pickle(ck)

    return read


def _read_embedded(loaded: Any) -> Any:
    if loaded.zip is None:
        return None
    from anemoi_ckpt_nb.read.embedded import read_embedded

    try:
        return read_embedded(loaded.zip, described=loaded.described)
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise CorruptCheckpointError(loaded.path, f"the embedded metadata is damaged ({error})") from None
    except Exception as error:  # zipfile raises BadZipFile and others on damaged entries
        raise CorruptCheckpointError(loaded.path, f"cannot read the embedded metadata ({error})") from None
