"""Build a model without drawing its weights, and fill it from the file: used by :func:`.loader.load_model`.

Building ``AnemoiModelInterface`` the ordinary way allocates every parameter and draws its
initial values, which the checkpoint's then overwrite: twice the weights in memory at the
peak, and the random draws for nothing. Here the parameters are made on torch's meta device
(shapes and dtypes only) while the buffers stay real: anemoi-models computes some of them at
build time from the graph and the statistics (``torch.nonzero`` of a mask, the graph
provider's edge permutation), which the meta device cannot do, and keeps the graph's in
non-persistent buffers that no state dict restores. The weights are then put in place with
``load_state_dict(assign=True)``, so nothing is allocated twice, from the file in one of two ways
(:func:`read_weights`): as views of the reader's private memory map of the file (no copy at all:
each page is read from the page cache when the model first uses it, and a write to a weight
goes to the process's own copy of that page, never to the file), or read with plain reads
straight into their own new memory, after which the model does not depend on the file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

_LOCAL = threading.local()
_PATCH_LOCK = threading.Lock()
_ORIGINAL: Any = None


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Parameters registered by this thread inside the block are moved to the meta device.

    ``nn.Module.register_parameter`` is wrapped once for the process; the wrapper acts only
    in a thread inside this block, so models built meanwhile by other threads are untouched.
    Buffers are left as they are made.
    """
    _install()
    with inside(_LOCAL):
        yield


@contextmanager
def inside(local: threading.local) -> Iterator[None]:
    """Count this thread in ``local.depth`` for the block: a process-wide patch acts for it only."""
    depth = getattr(local, "depth", 0)
    local.depth = depth + 1
    try:
        yield
    finally:
        local.depth = depth


def _install() -> None:
    global _ORIGINAL
    import torch

    with _PATCH_LOCK:
        if _ORIGINAL is not None:
            return
        original = torch.nn.Module.register_parameter

        def register_parameter(module: Any, name: str, param: Any) -> None:
            original(module, name, param)
            # Only plain Parameters: a subclass may carry state its constructor needs (it stays real).
            if getattr(_LOCAL, "depth", 0) and type(param) is torch.nn.Parameter and not param.is_meta:
                module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

        _ORIGINAL = original
        torch.nn.Module.register_parameter = register_parameter


def meta_tensors(model: Any) -> list[str]:
    """Names of the parameters and buffers of ``model`` still on the meta device."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return [name for name, tensor in named if tensor.is_meta]


def tied(model: Any) -> list[list[str]]:
    """Groups of names under which one parameter is reachable (tied weights, a shared module)."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def tie(model: Any, groups: list[list[str]]) -> None:
    """Make each group one parameter again after ``load_state_dict(assign=True)`` gave each name its own.

    The one kept is the last loaded, as copying into a tied parameter keeps the last value written.
    """
    for group in groups:
        kept = model.get_parameter(group[-1])
        for name in group[:-1]:
            owner, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(owner), attribute, kept)


def read_weights(checkpoint: Any, names: dict[str, str], model: Any, *, mapped: bool = False) -> dict[str, Any]:
    """The weights ``{model name: file name}`` on the CPU, as the model's parameters need them.

    Each tensor whose bytes are one contiguous run of the file (:meth:`tensor_span`) is, with
    ``mapped``, the reader's view of it: its pages of the file's private memory map (torch's
    ``UntypedStorage.from_file(..., shared=False)``: copy-on-write, so the file is never written
    through it), read when first used; without ``mapped``, it is read with plain file reads into
    its own buffer. The others (a strided view, a storage held in the pickle, a byte-swapped
    one) are copied out of the reader. A dtype different from the model's is converted as
    ``load_state_dict`` would copy it.

    Raises:
        CheckpointChangedError: the file changed on disk while it was read.
    """
    import torch

    expected = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        file = None if mapped else stack.enter_context(open(Path(checkpoint.path), "rb", buffering=0))
        for mapped_name, name in names.items():
            view = checkpoint.tensor(name)  # checks that the file did not change since it was opened
            span = checkpoint.tensor_span(name)
            if span is None:
                tensor = view.clone(memory_format=torch.contiguous_format)
            elif mapped:
                tensor = view
            else:
                tensor = _read(file, span, view, checkpoint.path)
            want = expected.get(mapped_name)
            if want is not None and want.dtype != tensor.dtype and want.is_floating_point() == tensor.is_floating_point():
                tensor = tensor.to(want.dtype)
            out[mapped_name] = tensor
    if checkpoint.changed_on_disk():
        raise _changed(checkpoint.path)
    return out


def _changed(path: Any) -> Exception:
    from anemoi_ckpt_nb.errors import CheckpointChangedError

    return CheckpointChangedError(path, "it changed on disk while its weights were read (rewritten, replaced or truncated)",
                                  hint="load it again once the program writing it has finished")


def _read(file: Any, span: tuple[int, int], view: Any, path: Any) -> Any:
    import torch

    offset, nbytes = span
    if nbytes == 0:
        return torch.empty(view.shape, dtype=view.dtype)
    # torch.empty, not a bytearray: no pass zero-filling the memory before the read fills it
    # (reading a 164 MB file: ~75 instead of ~95 ms of CPU).
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    memory = memoryview(buffer.numpy())
    done = 0
    while done < nbytes:
        file.seek(offset + done)
        got = file.readinto(memory[done:])
        if not got:
            raise _changed(path)
        done += got
    return buffer.view(view.dtype).reshape(view.shape)
