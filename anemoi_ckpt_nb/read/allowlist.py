"""The allow-list: the callables a pickle may reach by ``GLOBAL``, and the narrowed stand-ins some of them get.

:func:`_safe_globals` maps ``(module, name)`` to the object given back; a few entries are stand-ins that only do the
safe part of the real function (an ``_codecs.encode`` that only knows latin-1, a ``getattr`` that only reads
placeholder attributes). Everything not here goes through the deny-list and placeholders of :mod:`.resolver`.
"""

from __future__ import annotations

import collections
import pickle
import sys
from functools import lru_cache

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.read.bounds import (
    _check_no_allocation,
    _check_plain_args,
    _safe_bytearray,
    _safe_bytes,
    _safe_encode,
)
from anemoi_ckpt_nb.read.placeholders import (
    _unsafe_callable,
    is_placeholder,
    is_placeholder_class,
    is_reference,
    new_placeholder,
    placeholder_class,
)
from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch, is_stand_in
from anemoi_ckpt_nb.read.rebuilders import (
    _rebuild_from_type_v2,
    _rebuilders,
    _safe_reconstruct,
    _safe_scalar,
)


#: The factories a pickled defaultdict may have (it runs one later, on any missing key).
_PLAIN_FACTORIES = (list, dict, set, frozenset, tuple, int, float, str, bool, collections.OrderedDict, collections.Counter)


def _safe_defaultdict(factory: Any = None, *args: Any) -> Any:
    # The factory runs later, on any missing key: only plain containers, numbers and placeholders.
    if is_reference(factory):
        raise _unsafe_callable(factory)  # the factory would be called on the first missing key
    if factory is not None and not is_placeholder_class(factory) and not any(factory is p for p in _PLAIN_FACTORIES):
        raise pickle.UnpicklingError(f"defaultdict with factory {factory!r} is refused")
    return collections.defaultdict(factory, *args)


def _safe_type(obj: Any) -> type:
    # type(None) and friends pickle as builtins.type(None); three-argument type() would build classes.
    if obj is None or obj is Ellipsis or obj is NotImplemented:
        return type(obj)
    raise pickle.UnpicklingError("builtins.type is only allowed for type(None), type(...) and type(NotImplemented)")


def _safe_getitem(obj: Any, key: Any) -> Any:
    # typing aliases (Dict[str, Any], Optional[int]) pickle as operator.getitem(Dict, (str, Any)).
    if is_placeholder_class(obj) or is_placeholder(obj) or is_reference(obj):
        return new_placeholder(_GETITEM, (obj, key))
    if type(obj) in (dict, list, tuple):
        return obj[key]
    raise pickle.UnpicklingError(f"operator.getitem is only allowed on placeholders and plain containers, not {type(obj).__name__}")


_GETITEM = placeholder_class("operator", "getitem")


def _instantiate_allowed(cls: Any, args: tuple, kwargs: dict) -> Any:
    """``cls.__new__(cls, *args)`` for placeholders and allow-listed classes only."""
    if is_placeholder_class(cls):
        return new_placeholder(cls, args, kwargs)
    if _is_allowed_class(cls):
        import torch

        _check_plain_args(cls, args, kwargs)
        _check_no_allocation(cls, args, kwargs)
        if cls is torch.nn.Parameter:
            return torch.nn.Parameter(*args, **kwargs)
        return cls.__new__(cls, *args, **kwargs)
    raise _refusal(cls)


def _safe_newobj(cls: Any, *args: Any) -> Any:
    return _instantiate_allowed(cls, args, {})


def _safe_newobj_ex(cls: Any, args: tuple, kwargs: dict) -> Any:
    return _instantiate_allowed(cls, tuple(args), dict(kwargs))


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor is what protocols 0 and 1 use for plain objects.
    if is_placeholder_class(cls):
        obj = new_placeholder(cls, ())
        if state is not None:
            obj.ph_args = (state,)
        return obj
    allowed = _newobj_classes()
    if any(cls is c for c in allowed) and (base is object or any(base is c for c in allowed)):
        import copyreg

        if base is not object and state is not None:
            _check_plain_args(base, (state,))  # base.__new__(cls, state) parses it like base(state)
            _check_no_allocation(base, (state,), {})
        return copyreg._reconstructor(cls, base, state)
    raise _refusal(base if is_reference(base) or is_stand_in(base) else cls)


def _refusal(cls: Any) -> Exception:
    """The refusal to instantiate ``cls``; for a torch stand-in of a file read without torch
    (``torch.Tensor`` or ``Parameter`` instantiated), :class:`NeedsTorch`: torch's reading decides."""
    if is_stand_in(cls):
        return NeedsTorch(f"{cls.__name__} instantiated")
    return _unsafe_callable(cls)


def _pure_path(*parts: Any) -> Any:
    # A pure path never touches the file system, whatever the pickle does with it later.
    import pathlib

    return pathlib.PurePosixPath(*parts)


def _pure_windows_path(*parts: Any) -> Any:
    import pathlib

    return pathlib.PureWindowsPath(*parts)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> Any:
    import numpy as np

    # bytes(<int>) or bytes(<one-element tensor>) would allocate what the pickle asks, not what it holds.
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise pickle.UnpicklingError(f"numpy _frombuffer needs bytes, got {type(buf).__name__}")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order).copy()


@lru_cache(maxsize=1)
def _safe_globals() -> dict[tuple[str, str], Any]:
    """``(module, name) -> object`` of every global the reader gives back for real, reading with torch."""
    return {**_torch_globals(), **_plain_globals(), **_numpy_globals()}


@lru_cache(maxsize=1)
def _torch_globals() -> dict[tuple[str, str], Any]:
    """The torch part of :func:`_safe_globals`: rebuild functions, tensor classes, dtypes."""
    import torch

    safe: dict[tuple[str, str], Any] = {}
    for name, f in _rebuilders().items():
        safe[("torch._utils", name)] = f
    safe[("torch._tensor", "_rebuild_from_type_v2")] = _rebuild_from_type_v2
    safe[("torch.nn.parameter", "Parameter")] = torch.nn.Parameter
    safe[("torch", "Tensor")] = torch.Tensor
    safe[("torch._tensor", "Tensor")] = torch.Tensor
    safe[("torch", "Size")] = torch.Size
    safe[("torch", "device")] = torch.device
    safe[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    for tensor_class in torch._tensor_classes:
        safe[(tensor_class.__module__, tensor_class.__name__)] = tensor_class
    for value in vars(torch).values():
        if isinstance(value, (torch.dtype, torch.memory_format, torch.qscheme, torch.layout)):
            module, _, name = str(value).rpartition(".")
            if module == "torch":
                safe[("torch", name)] = value
    return safe


@lru_cache(maxsize=1)
def _plain_globals() -> dict[tuple[str, str], Any]:
    """The part of :func:`_safe_globals` that needs neither torch nor numpy: containers, pure paths.

    The data types of :data:`LAZY_MODULES` are allowed too, from :func:`_stdlib_globals`.
    """
    safe: dict[tuple[str, str], Any] = {}
    for name in ("OrderedDict", "Counter", "deque"):
        safe[("collections", name)] = getattr(collections, name)
    safe[("collections", "defaultdict")] = _safe_defaultdict
    for value in (set, frozenset, complex, slice, dict, list, tuple, int, float, bool, str, object):
        safe[("builtins", value.__name__)] = value
    safe[("builtins", "bytes")] = _safe_bytes
    safe[("builtins", "bytearray")] = _safe_bytearray
    safe[("builtins", "Ellipsis")] = Ellipsis
    safe[("builtins", "NotImplemented")] = NotImplemented
    safe[("builtins", "type")] = _safe_type
    safe[("_codecs", "encode")] = _safe_encode
    safe[("codecs", "encode")] = _safe_encode
    safe[("operator", "getitem")] = _safe_getitem
    safe[("_operator", "getitem")] = _safe_getitem
    safe[("copyreg", "_reconstructor")] = _safe_reconstructor
    safe[("copyreg", "__newobj__")] = _safe_newobj
    safe[("copyreg", "__newobj_ex__")] = _safe_newobj_ex
    for name in ("Path", "PosixPath", "PurePath", "PurePosixPath"):
        safe[("pathlib", name)] = _pure_path
    for name in ("WindowsPath", "PureWindowsPath"):
        safe[("pathlib", name)] = _pure_windows_path
    return safe


#: Standard-library modules whose data types a pickle may name, and the names allowed.
LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "datetime": ("datetime", "date", "time", "timedelta", "timezone"),
    "decimal": ("Decimal",),
    "fractions": ("Fraction",),
    "uuid": ("UUID",),
}
#: The modules of :data:`LAZY_MODULES` whose table was asked for (the others' objects cannot be on a pickle's stack).
_LAZY_LOADED: tuple[str, ...] = ()


@lru_cache(maxsize=None)
def _stdlib_globals(module: str) -> dict[tuple[str, str], Any]:
    """The allowed data types of ``module`` (one of :data:`LAZY_MODULES`), imported when a pickle names it.

    Imported up front they were 8% of the instructions of ``anemoi-ckpt inspect`` on a 3 GB
    checkpoint (``uuid`` brings ``platform``); the pickles of anemoi's checkpoints name none of them.
    """
    global _LAZY_LOADED
    import importlib

    loaded = importlib.import_module(module)
    table = {(module, name): getattr(loaded, name) for name in LAZY_MODULES[module]}
    _LAZY_LOADED = tuple(sorted({*_LAZY_LOADED, module}))
    return table


@lru_cache(maxsize=1)
def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy part of :func:`_safe_globals` (imports numpy: asked for only when a pickle names numpy)."""
    safe: dict[tuple[str, str], Any] = {}
    try:
        import numpy as np
    except ImportError:  # numpy is optional for torch; without it numpy globals stay refused
        return safe
    safe[("numpy", "ndarray")] = np.ndarray
    safe[("numpy", "dtype")] = np.dtype
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        safe[(module, "_reconstruct")] = _safe_reconstruct
        safe[(module, "scalar")] = _safe_scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        safe[(module, "_frombuffer")] = _safe_frombuffer
    for value in vars(np.dtypes).values() if hasattr(np, "dtypes") else ():
        if isinstance(value, type) and issubclass(value, np.dtype):
            safe[("numpy.dtypes", value.__name__)] = value
    return safe


def _torch_loaded() -> bool:
    # Without torch imported no torch object can be on the pickle's stack: its checks can be skipped.
    return "torch" in sys.modules


@lru_cache(maxsize=16)
def _by_id(part: str, classes: bool) -> dict[int, Any]:
    # The allow-listed objects live as long as the process (cached), so their ids are stable.
    if part in LAZY_MODULES:
        table = _stdlib_globals(part)
    else:
        table = {"torch": _torch_globals, "numpy": _numpy_globals, "plain": _plain_globals}[part]()
    return {id(v): v for v in table.values() if (isinstance(v, type) if classes else callable(v))}


def _loaded_parts() -> tuple[str, ...]:
    # Without torch (numpy) imported no torch (numpy) object can be on the pickle's stack: its checks can be skipped.
    # A lazy module's objects can only be on the stack once a pickle has named it (its table then loaded).
    return (
        ("plain",) + _LAZY_LOADED + (("numpy",) if "numpy" in sys.modules else ()) + (("torch",) if _torch_loaded() else ())
    )


def _allowed(obj: Any, classes: bool) -> bool:
    return any(_by_id(part, classes).get(id(obj)) is obj for part in _loaded_parts())


def _newobj_classes() -> tuple:
    """Allow-listed classes that pickle may instantiate with ``cls.__new__(cls, *args)``."""
    return tuple(c for part in _loaded_parts() for c in _by_id(part, True).values())


def _is_allowed_class(cls: Any) -> bool:
    return _allowed(cls, True)


def _is_allowed_callable(func: Any) -> bool:
    return _allowed(func, False)
