"""The tensor and parameter rebuild functions a pickle may call, narrowed to build data and nothing else.

They mirror ``torch._utils._rebuild_*`` as ``torch/_weights_only_unpickler.py`` allows them, with the hooks and
device moves taken out and every size checked (:mod:`.bounds`) before memory is allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.read.bounds import (
    RefusedPickle,
    _check_growth,
    _check_parameter_args,
    _numel,
)
from anemoi_ckpt_nb.read.placeholders import _unsafe_callable


def _rebuild_from_type_v2(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    """torch's ``_rebuild_from_type_v2`` for allow-listed rebuilders only; subclasses stay plain tensors."""
    import torch

    if not any(func is f for f in _rebuilders().values()):
        raise _unsafe_callable(func)
    tensor = func(*args)
    if new_type is torch.nn.Parameter and not isinstance(tensor, torch.nn.Parameter):
        tensor = torch.nn.Parameter(tensor, requires_grad=tensor.requires_grad)
    _set_plain_state(tensor, state)
    return tensor


def _rebuild_parameter_with_state(data: Any, requires_grad: bool, backward_hooks: Any, state: Any) -> Any:
    import torch

    _check_parameter_args((data, requires_grad), {})
    param = torch.nn.Parameter(data, requires_grad)
    param._backward_hooks = _no_hooks(backward_hooks)
    _set_plain_state(param, state)
    return param


def _set_plain_state(tensor: Any, state: Any) -> None:
    # torch sets arbitrary attributes from the pickle; keep only ordinary names in __dict__.
    if isinstance(state, tuple) and len(state) == 2:
        state = state[0]
    if isinstance(state, dict):
        _set_attributes(tensor, state)


def _set_attributes(obj: Any, state: dict) -> None:
    """Put ``state`` in ``obj.__dict__``, except dunders and names of methods: an instance
    attribute ``keys`` or ``numel`` would make later code call what the pickle put there."""
    import inspect

    cls = type(obj)
    for key, value in state.items():
        if type(key) is str and not key.startswith("__") and not callable(inspect.getattr_static(cls, key, None)):
            obj.__dict__[key] = value


@lru_cache(maxsize=1)
def _rebuild_functions() -> tuple:
    import torch._utils as tu

    names = (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_nested_tensor",
        "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_cpu_tensor",
        "_rebuild_device_tensor_from_numpy",
    )
    return tuple(getattr(tu, n) for n in names if hasattr(tu, n))


@lru_cache(maxsize=1)
def _rebuilders() -> dict[str, Callable[..., Any]]:
    """``torch._utils`` rebuild function name -> what the reader calls for it.

    torch's own functions, except where they would install what the file gives as
    ``backward_hooks`` or allocate memory of a size the file only claims: those go
    through the checked stand-ins below.
    """
    checked: dict[str, Callable[..., Any]] = {
        "_rebuild_tensor_v2": _safe_rebuild_tensor_v2,
        "_rebuild_tensor_v3": _safe_rebuild_tensor_v3,
        "_rebuild_qtensor": _safe_rebuild_qtensor,
        "_rebuild_parameter": _safe_rebuild_parameter,
        "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
        "_rebuild_device_tensor_from_cpu_tensor": _safe_rebuild_device_tensor_from_cpu_tensor,
        "_rebuild_device_tensor_from_numpy": _safe_rebuild_device_tensor_from_numpy,
    }
    found = {f.__name__: checked.get(f.__name__, f) for f in _rebuild_functions()}
    found["_rebuild_parameter_with_state"] = _rebuild_parameter_with_state
    return found


def _np_multiarray() -> Any:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return core.multiarray


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct``, only for the empty array a numpy pickle starts from."""
    if _numel(shape, "numpy _reconstruct") != 0:
        raise RefusedPickle(
            f"numpy._core.multiarray._reconstruct(<{getattr(subtype, '__name__', type(subtype).__name__)}>, {shape!r:.60}) "
            "is refused: numpy pickles an array as an empty one (shape (0,)) filled by __setstate__, and a larger "
            "shape allocates memory the file does not hold"
        )
    return _np_multiarray()._reconstruct(subtype, shape, dtype)


def _safe_scalar(*args: Any) -> Any:
    """numpy's ``scalar(dtype, data)``, only with the scalar's bytes present in the file."""
    import numpy as np

    if not args or not isinstance(args[0], np.dtype) or len(args) > 2:
        raise RefusedPickle("numpy scalar needs a dtype and the scalar's bytes")
    dtype = args[0]
    data = args[1] if len(args) > 1 else None
    # Without its bytes, numpy allocates and zeroes dtype.itemsize bytes (a void dtype can claim gigabytes).
    # Object scalars hold their object; structured ones with object fields come as a 0-d array of the dtype.
    if dtype.char == "O":
        held = True
    elif dtype.hasobject:
        held = isinstance(data, np.ndarray) and data.dtype == dtype and data.nbytes >= dtype.itemsize
    else:
        held = isinstance(data, (bytes, str)) and len(data) >= dtype.itemsize
    if not held:
        raise RefusedPickle(
            f"numpy scalar of dtype {str(dtype)[:60]} without its {dtype.itemsize} bytes is refused: "
            "numpy would allocate memory the file does not hold"
        )
    return _np_multiarray().scalar(*args)


def _no_hooks(hooks: Any) -> Any:
    """The ``_backward_hooks`` a rebuilt tensor gets: always a new, empty ``OrderedDict``.

    ``torch.save`` has written an empty one since 2018 (torch's Note [Don't serialize hooks]);
    hooks are called by autograd, so whatever the file names as hooks is never installed.
    """
    import collections

    if hooks is not None and not isinstance(hooks, dict):
        raise RefusedPickle(f"a tensor's backward hooks must be a dict, got {type(hooks).__name__}")
    return collections.OrderedDict()


def _safe_rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any, backward_hooks: Any, metadata: Any = None
) -> Any:
    import torch._utils as tu

    return tu._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, _no_hooks(backward_hooks), metadata)


def _safe_rebuild_tensor_v3(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> Any:
    import torch._utils as tu

    hooks = _no_hooks(backward_hooks)
    return tu._rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype, metadata)


def _safe_rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Any:
    import torch._utils as tu

    _check_parameter_args((data, requires_grad), {})
    return tu._rebuild_parameter(data, requires_grad, _no_hooks(backward_hooks))


def _safe_rebuild_qtensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    quantizer_params: Any,
    requires_grad: Any,
    backward_hooks: Any,
) -> Any:
    import torch
    import torch._utils as tu

    # torch allocates a quantized tensor of `size` before pointing it at the storage.
    if not isinstance(storage, torch.storage.TypedStorage):
        raise RefusedPickle("torch._utils._rebuild_qtensor needs a storage")
    numel = _numel(size, "torch._utils._rebuild_qtensor")
    if numel > storage.size():
        raise RefusedPickle(
            f"torch._utils._rebuild_qtensor of size {tuple(size)!r:.60} is refused: {numel} elements, "
            f"but its storage holds {storage.size()}; it would allocate memory the file does not hold"
        )
    hooks = _no_hooks(backward_hooks)
    return tu._rebuild_qtensor(storage, storage_offset, size, stride, quantizer_params, requires_grad, hooks)


def _safe_rebuild_device_tensor_from_cpu_tensor(data: Any, dtype: Any, device: Any, requires_grad: Any) -> Any:
    import torch
    import torch._utils as tu

    what = "torch._utils._rebuild_device_tensor_from_cpu_tensor"
    if not isinstance(data, torch.Tensor) or not isinstance(dtype, torch.dtype):
        raise RefusedPickle(f"{what} needs a tensor and a dtype")
    if dtype != data.dtype:  # .to(dtype) materialises every element, of an expanded view too
        _check_growth(what, data.numel() * tu._element_size(dtype), data.untyped_storage().nbytes())
    return tu._rebuild_device_tensor_from_cpu_tensor(data, dtype, device, requires_grad)


def _safe_rebuild_device_tensor_from_numpy(data: Any, dtype: Any, device: Any, requires_grad: Any) -> Any:
    import numpy as np
    import torch
    import torch._utils as tu

    what = "torch._utils._rebuild_device_tensor_from_numpy"
    if not isinstance(data, np.ndarray) or not isinstance(dtype, torch.dtype):
        raise RefusedPickle(f"{what} needs a numpy array and a dtype")
    _check_growth(what, data.size * tu._element_size(dtype), data.nbytes)
    return tu._rebuild_device_tensor_from_numpy(data, dtype, device, requires_grad)


def _build_parameter(param: Any, state: Any) -> None:
    """``Tensor.__setstate__`` for a parameter, except that backward hooks from the file are dropped."""
    import torch

    if type(state) is not tuple or len(state) not in (3, 4, 5):
        raise RefusedPickle("a parameter's state must be a tuple of 3, 4 or 5 items")
    if len(state) == 4:  # legacy: (storage, offset, size, stride); set_ checks the bounds
        param.set_(*state)
        return
    if len(state) == 5:  # legacy Variable: (data, _, _, requires_grad, hooks)
        if not isinstance(state[0], torch.Tensor):
            raise RefusedPickle("a legacy parameter's data must be a tensor")
        param.data = state[0]
        state = (state[3], state[4], state[2])
    requires_grad, _, hooks = state
    if type(requires_grad) is not bool:
        raise RefusedPickle("a parameter's requires_grad must be a bool")
    param.requires_grad = requires_grad
    param._backward_hooks = _no_hooks(hooks)
