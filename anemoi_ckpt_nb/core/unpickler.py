"""A restricted unpickler: rebuilds tensors and plain data, never runs code from the file.

Pickle is a small program: ``GLOBAL`` names a callable by module and name,
``REDUCE``/``NEWOBJ``/``BUILD`` call it or feed it state. The standard
unpickler imports whatever the file names and calls it, so a checkpoint can
run ``os.system``. Here every global goes through :meth:`Globals.resolve`:

* an **allow-list** of tensor rebuild functions (mirroring
  ``torch/_weights_only_unpickler.py``), torch types, plain containers and a
  few data-only classes gives back the real object (or a narrowed stand-in,
  such as an ``_codecs.encode`` that only knows latin-1);
* a **deny-list** of modules that exist to run code, touch files or the
  network (``os``, ``subprocess``, ``builtins.eval``, ``importlib``,
  ``torch.hub``, ...), and of the functions of torch and numpy that read or
  write files (``torch.load``, ``numpy.fromfile``, ...), is refused with
  :class:`~anemoi_ckpt_nb.core.errors.UnsafePickleError` before anything is called;
* any other function of torch, numpy, ``math`` or ``operator`` (a pickled
  model keeps ``torch.nn.functional.gelu`` as an attribute) becomes an inert
  :class:`Reference`: its module and name, never imported, never called. A
  pickle that then tries to call it, instantiate it, give it state or use it
  as a factory is refused;
* everything else (anemoi, omegaconf, torch_geometric, pydantic, ``torch.nn``
  module classes, ...) becomes an inert :class:`Placeholder` class: calling it
  or instantiating it records the arguments and state, and nothing else.

The opcode handlers that call or mutate objects are overridden too, so the
only things ever called are allow-listed callables and placeholder classes,
the only objects ever given state are placeholders and a few data types, and
no module is ever imported because the file named it.
"""

from __future__ import annotations

import io
import math  # noqa: F401  (introspected: loaded here so what a name means never depends on the session)
import operator  # noqa: F401
import pickle
import struct
import sys
import types
from collections.abc import Callable, Iterator
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from anemoi_ckpt_nb.core.errors import CorruptCheckpointError, UnsafePickleError

#: Modules (and their submodules) that exist to run code, reach the system,
#: files or the network, or unpickle further. Any global from them is refused,
#: except the few narrowed stand-ins of :func:`_safe_globals`.
DENIED_MODULES = frozenset(
    """
    os posix nt posixpath ntpath genericpath sys subprocess _posixsubprocess _winapi msvcrt winreg
    builtins __builtin__ importlib imp zipimport pkgutil runpy site sysconfig
    pickle _pickle pickletools copyreg copy_reg marshal shelve dbm dill cloudpickle joblib
    shutil tempfile glob io _io fileinput mmap socket _socket ssl select selectors socketserver
    asyncio threading _thread multiprocessing concurrent signal ctypes _ctypes cffi pty tty termios
    fcntl resource code codeop compileall py_compile types inspect functools
    codecs _codecs timeit profile cProfile pdb bdb trace tracemalloc doctest unittest pydoc logging
    gc weakref _weakref ast dis tokenize linecache platform ensurepip venv setuptools pip distutils
    _distutils_hack urllib urllib3 requests http ftplib smtplib poplib imaplib telnetlib nntplib
    xmlrpc wsgiref webbrowser sqlite3 zipfile tarfile gzip bz2 lzma zlib _bz2 _lzma tkinter turtle
    idlelib antigravity this yaml jinja2 IPython
    torch._C torch.hub torch.jit torch.package torch.fx torch.utils.cpp_extension torch.serialization
    torch.multiprocessing torch.distributed.rpc torch._dynamo torch._inductor torch.compiler
    torch.library torch._ops torch.ops torch.utils.data._utils torch.export torch.utils.model_zoo
    torch.classes torch._classes
    numpy.ctypeslib numpy.f2py numpy.distutils numpy.testing numpy.lib.format numpy.lib.npyio
    numpy.lib._npyio_impl numpy.lib._format_impl numpy.lib._datasource
    """.split()
)

#: Names (any part of a dotted name) that read or write files, fetch URLs, load libraries or run
#: code when called. In the introspected modules they are refused even as a stored reference:
#: a model has no reason to keep ``torch.load`` or ``numpy.fromfile``.
DENIED_NAMES = frozenset(
    """
    genfromtxt recfromtxt recfromcsv fromfile tofile from_file fromregex memmap open_memmap DataSource
    runstring download_url_to_file compile exec eval system attrgetter methodcaller call import_module
    """.split()
)
#: Name prefixes refused the same way (after leading underscores): ``load``, ``loadtxt``,
#: ``load_state_dict_from_url``, ``save``, ``savez``, ``_save_memory_usage``, ``dumps``, ...
DENIED_NAME_PREFIXES = ("load", "save", "dump")

#: Compiled torch operator namespaces: pure tensor functions (``torch.nn.functional.gelu`` pickles
#: as ``torch._C._nn.gelu``). Their functions become references; the rest of ``torch._C`` stays refused.
OP_MODULES = frozenset(
    {"torch._C._nn", "torch._C._fft", "torch._C._linalg", "torch._C._special", "torch._C._nested", "torch._C._sparse"}
)

#: Classes whose methods pickle as ``builtins.getattr(<class>, "name")`` (``torch.relu`` is
#: ``getattr(torch._C._VariableFunctionsClass, "relu")``) -> the ``(module, prefix)`` they stand for.
OP_NAMESPACES: dict[tuple[str, str], tuple[str, str]] = {
    ("torch._C", "_VariableFunctionsClass"): ("torch", ""),
    ("torch._C", "_VariableFunctions"): ("torch", ""),
    ("torch._C", "TensorBase"): ("torch", "Tensor"),
    ("torch._C", "_TensorBase"): ("torch", "Tensor"),
}

#: Classes from denied modules that are plain data holders: placeholders, not refusals.
PLACEHOLDER_EXCEPTIONS = frozenset(
    {
        ("types", "SimpleNamespace"),
        ("functools", "partial"),
        ("inspect", "Parameter"),
        ("inspect", "Signature"),
        ("inspect", "_empty"),
        ("inspect", "_void"),
        ("inspect", "_ParameterKind"),
        # numpy random states pickle through these constructors; as placeholders they are inert.
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
    }
)

#: Modules that are imported anyway, so a function from them can be told from a class (and
#: kept as a :class:`Reference`, or refused) by reading their ``__dict__``, without importing anything.
INTROSPECTED_MODULES = ("torch", "numpy", "math", "operator", "_operator")

#: The largest pickle read into memory; anemoi's are a few MB, a model pickle tens of MB.
DEFAULT_MAX_PICKLE_BYTES = 512 * 1024 * 1024


class _Named:
    """What placeholders and references share: a module path and a name, shown, never looked up."""

    __slots__ = ()
    _label = ""
    ph_module: str
    ph_name: str

    @property
    def ph_path(self) -> str:
        """``module.name`` of the class or function."""
        return f"{self.ph_module}.{self.ph_name}"

    def __repr__(self) -> str:
        return f"<{self._label} {self.ph_module}.{self.ph_name}>"


class Placeholder(_Named):
    """An object of a class the reader does not rebuild: inert, keeps what the pickle gave it.

    A placeholder *class* is made per ``(module, name)`` global; calling it (pickle
    ``REDUCE``) or instantiating it (``NEWOBJ``) makes an instance that stores the
    arguments. ``BUILD`` state, list items and dict items are stored as given.

    Attributes:
        ph_module: the module path of the class (after renames of moved classes).
        ph_name: the qualified name of the class.
        ph_original: ``(module, name)`` as the file wrote it.
        ph_args: positional arguments the pickle called the class with.
        ph_kwargs: keyword arguments (``NEWOBJ_EX`` only).
        ph_state: the ``BUILD`` state (usually the object's ``__dict__``), or ``None``.
        ph_listitems: items appended by the pickle (list subclasses).
        ph_dictitems: ``(key, value)`` pairs set by the pickle (dict subclasses).
        ph_setitems: items added by the pickle (set subclasses).
    """

    __slots__ = ("ph_args", "ph_kwargs", "ph_state", "ph_listitems", "ph_dictitems", "ph_setitems", "__weakref__")
    _label = "opaque"

    ph_module: str = ""
    ph_name: str = ""
    ph_original: tuple[str, str] = ("", "")


def is_placeholder(obj: Any) -> bool:
    """Whether ``obj`` is a placeholder instance (not a placeholder class)."""
    return isinstance(obj, Placeholder)


def is_placeholder_class(obj: Any) -> bool:
    """Whether ``obj`` is a placeholder class made for a global of the pickle."""
    return isinstance(obj, type) and issubclass(obj, Placeholder) and obj is not Placeholder


def new_placeholder(cls: type[Placeholder], args: tuple = (), kwargs: dict | None = None) -> Placeholder:
    """An inert instance of a placeholder class, recording the arguments."""
    obj = object.__new__(cls)
    obj.ph_args = tuple(args)
    obj.ph_kwargs = dict(kwargs or {})
    obj.ph_state = None
    obj.ph_listitems = []
    obj.ph_dictitems = []
    obj.ph_setitems = []
    return obj


def placeholder_class(module: str, name: str, original: tuple[str, str] | None = None) -> type[Placeholder]:
    """A new placeholder class standing for ``module.name``."""
    namespace = {
        "__slots__": (),
        "__module__": module,
        "__qualname__": name,
        "ph_module": module,
        "ph_name": name,
        "ph_original": original or (module, name),
    }
    return type(name.rpartition(".")[2] or "Opaque", (Placeholder,), namespace)


class Reference(_Named):
    """A function the pickle names but never gets: its module and name, nothing else.

    A pickled model keeps functions as attributes (``self.activation =
    torch.nn.functional.gelu``) and pickle stores them by name. The reader
    keeps that name: the function is never looked up for use, imported or
    called, and a reference is not callable. A pickle that tries to call one
    (``REDUCE``, ``NEWOBJ``, ``INST``, a ``defaultdict`` factory, ...) or to
    give it state (``BUILD``, items) is refused with
    :class:`~anemoi_ckpt_nb.core.errors.UnsafePickleError`.

    Attributes:
        ph_module: the module path of the function.
        ph_name: its qualified name (``"Tensor.add"`` for a method).
        ph_original: ``(module, name)`` as the file wrote it.
    """

    __slots__ = ("ph_module", "ph_name", "ph_original", "__weakref__")
    _label = "reference"

    def __init__(self, module: str, name: str, original: tuple[str, str] | None = None) -> None:
        self.ph_module = module
        self.ph_name = name
        self.ph_original = original or (module, name)


def is_reference(obj: Any) -> bool:
    """Whether ``obj`` is an inert :class:`Reference` to a function."""
    return isinstance(obj, Reference)


# --- the allow-list -------------------------------------------------------------


class StorageMarker:
    """What a torch ``FloatStorage``-style global resolves to: only a dtype."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: Any) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"StorageMarker({self.name})"


#: The text encodings a pickle may name (protocols 0-2 store bytes as latin-1 text): a codec lookup
#: of any other name could import an ``encodings.*`` module or run a third-party codec search function.
TEXT_ENCODINGS = frozenset({"latin1", "latin-1", "utf-8", "utf8", "ascii"})


def _check_encoding(encoding: Any) -> None:
    if type(encoding) is not str or encoding.lower().replace("_", "-") not in TEXT_ENCODINGS:
        raise pickle.UnpicklingError(f"only the latin-1, utf-8 and ascii text encodings are allowed, got {encoding!r}")


def _safe_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Pickle protocol 2 stores bytes as _codecs.encode(text, "latin1").
    _check_encoding(encoding)
    if type(obj) is not str:
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed on text, got {type(obj).__name__}")
    return obj.encode(encoding, errors)


def _safe_bytes(*args: Any) -> bytes:
    # bytes(n) would allocate n zeroed bytes on the pickle's say-so.
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError("bytes(<size>) is refused: it allocates memory the file does not hold")
    return bytes(*args)


def _safe_bytearray(*args: Any) -> bytearray:
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError("bytearray(<size>) is refused: it allocates memory the file does not hold")
    return bytearray(*args)


def _safe_defaultdict(factory: Any = None, *args: Any) -> Any:
    # The factory runs later, on any missing key: only plain containers, numbers and placeholders.
    import collections

    plain = (list, dict, set, frozenset, tuple, int, float, str, bool, collections.OrderedDict, collections.Counter)
    if is_reference(factory):
        raise _unsafe_callable(factory)  # the factory would be called on the first missing key
    if factory is not None and not is_placeholder_class(factory) and not any(factory is p for p in plain):
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
    if _classes_by_id().get(id(cls)) is cls:
        import torch

        _check_plain_args(cls, args, kwargs)
        if cls is torch.nn.Parameter:
            return torch.nn.Parameter(*args, **kwargs)
        return cls.__new__(cls, *args, **kwargs)
    raise _unsafe_callable(cls)


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
        return copyreg._reconstructor(cls, base, state)
    raise _unsafe_callable(base if is_reference(base) else cls)


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


def _rebuild_from_type_v2(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    """torch's ``_rebuild_from_type_v2`` for allow-listed rebuilders only; subclasses stay plain tensors."""
    import torch

    if not any(func is f for f in _rebuild_functions()):
        raise _unsafe_callable(func)
    tensor = func(*args)
    if new_type is torch.nn.Parameter and not isinstance(tensor, torch.nn.Parameter):
        tensor = torch.nn.Parameter(tensor, requires_grad=tensor.requires_grad)
    _set_plain_state(tensor, state)
    return tensor


def _rebuild_parameter_with_state(data: Any, requires_grad: bool, backward_hooks: Any, state: Any) -> Any:
    import torch

    param = torch.nn.Parameter(data, requires_grad)
    param._backward_hooks = backward_hooks
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
def _safe_globals() -> dict[tuple[str, str], Any]:
    """``(module, name) -> object`` of every global the reader gives back for real."""
    import collections
    import datetime
    import decimal
    import fractions
    import uuid

    import torch

    safe: dict[tuple[str, str], Any] = {}
    for f in _rebuild_functions():
        safe[("torch._utils", f.__name__)] = f
    safe[("torch._utils", "_rebuild_parameter_with_state")] = _rebuild_parameter_with_state
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
    for name in ("datetime", "date", "time", "timedelta", "timezone"):
        safe[("datetime", name)] = getattr(datetime, name)
    safe[("decimal", "Decimal")] = decimal.Decimal
    safe[("fractions", "Fraction")] = fractions.Fraction
    safe[("uuid", "UUID")] = uuid.UUID
    for name in ("Path", "PosixPath", "PurePath", "PurePosixPath"):
        safe[("pathlib", name)] = _pure_path
    for name in ("WindowsPath", "PureWindowsPath"):
        safe[("pathlib", name)] = _pure_windows_path

    try:
        import numpy as np
    except ImportError:  # numpy is optional for torch; without it numpy globals stay refused
        return safe
    safe[("numpy", "ndarray")] = np.ndarray
    safe[("numpy", "dtype")] = np.dtype
    multiarray = getattr(np, "_core", None) or np.core
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        safe[(module, "_reconstruct")] = multiarray.multiarray._reconstruct
        safe[(module, "scalar")] = multiarray.multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        safe[(module, "_frombuffer")] = _safe_frombuffer
    for value in vars(np.dtypes).values() if hasattr(np, "dtypes") else ():
        if isinstance(value, type) and issubclass(value, np.dtype):
            safe[("numpy.dtypes", value.__name__)] = value
    return safe


@lru_cache(maxsize=1)
def _newobj_classes() -> tuple:
    """Allow-listed classes that pickle may instantiate with ``cls.__new__(cls, *args)``."""
    return tuple(v for v in _safe_globals().values() if isinstance(v, type))


@lru_cache(maxsize=1)
def _callables_by_id() -> dict[int, Any]:
    # The allow-listed objects live as long as the process (cached), so their ids are stable.
    return {id(v): v for v in _safe_globals().values() if callable(v)}


@lru_cache(maxsize=1)
def _classes_by_id() -> dict[int, Any]:
    return {id(v): v for v in _newobj_classes()}


def _is_allowed_callable(func: Any) -> bool:
    return _callables_by_id().get(id(func)) is func


@lru_cache(maxsize=1)
def _data_constructors() -> frozenset:
    import collections

    import torch

    return frozenset(
        {list, tuple, set, frozenset, dict, str, int, float, bool, complex, slice, torch.Size, _safe_bytes, _safe_bytearray}
        | {collections.OrderedDict, collections.Counter, collections.deque}
    )


def _check_plain_args(func: Any, args: tuple, kwargs: dict | None = None) -> None:
    # list(tensor), tuple(array)...: these would expand a (possibly stride-0, huge) tensor element by element.
    if func in _data_constructors() and any(_is_heavy(arg) for arg in args):
        raise pickle.UnpicklingError(f"{getattr(func, '__name__', func)}() called on a tensor, array or opaque object")
    # str(data, encoding), bytes(text, encoding), bytearray(text, encoding) look the codec up by name.
    if func in (str, _safe_bytes, _safe_bytearray):
        encoding = args[1] if len(args) > 1 else (kwargs or {}).get("encoding")
        if encoding is not None:
            _check_encoding(encoding)
    if func in _number_constructors() and any(_is_huge_number(arg) for arg in (*args, *(kwargs or {}).values())):
        raise pickle.UnpicklingError(
            f"{getattr(func, '__name__', func)}() of a number over {MAX_NUMBER_DIGITS} digits is refused: "
            "it takes minutes to compute"
        )


#: Digits of the largest integer a pickle may make from a ``Decimal`` or a ``Fraction``: Python's own
#: limit for ``int(str)``. ``int(Decimal("1e3000000"))`` takes minutes; the file needs 30 bytes.
MAX_NUMBER_DIGITS = 4300


@lru_cache(maxsize=1)
def _number_constructors() -> frozenset:
    import fractions

    return frozenset({int, fractions.Fraction})


def _is_huge_number(arg: Any) -> bool:
    import decimal
    import re

    if isinstance(arg, decimal.Decimal):
        return arg.is_finite() and abs(arg.adjusted()) > MAX_NUMBER_DIGITS
    if isinstance(arg, int):  # Fraction(a, b) takes their gcd, quadratic in their size
        return arg.bit_length() > MAX_NUMBER_DIGITS * 4
    if isinstance(arg, str):  # Fraction("1e3000000") computes 10 ** 3000000
        exponent = re.search(r"[eE]\s*([-+]?[\d_]+)", arg)
        return exponent is not None and abs(int(exponent.group(1).replace("_", ""))) > MAX_NUMBER_DIGITS
    return False


def _is_heavy(obj: Any) -> bool:
    if is_placeholder(obj):
        return True
    module = type(obj).__module__
    return module.startswith("torch") or module.startswith("numpy")


@lru_cache(maxsize=1)
def _build_setstate_types() -> tuple:
    """Types whose own ``__setstate__`` may receive pickle ``BUILD`` state (C or data-only)."""
    import uuid

    import torch

    types_: list[type] = [torch.nn.Parameter, uuid.UUID]
    try:
        import numpy as np

        types_ += [np.ndarray, np.dtype]
    except ImportError:
        pass
    return tuple(types_)


def _unsafe_callable(obj: Any) -> UnsafePickleError:
    if is_reference(obj):
        return UnsafePickleError("<pickle>", obj.ph_module, obj.ph_name)
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return UnsafePickleError("<pickle>", str(module), str(name))


# --- resolving globals ----------------------------------------------------------


def _denied(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:end]) in DENIED_MODULES for end in range(1, len(parts) + 1))


def _denied_name(part: str) -> bool:
    """A name part refused in introspected modules: I/O and code runners, and interpreter internals (dunders)."""
    if part.startswith("__") and part.endswith("__"):
        return True
    return part in DENIED_NAMES or part.lstrip("_").startswith(DENIED_NAME_PREFIXES)


def _runs_code(obj: Any) -> bool:
    """Whether a callable found in an introspected module is defined in a denied one (``torch.load`` is
    ``torch.serialization.load``, ``torch.utils.model_zoo.load_url`` is ``torch.hub``'s)."""
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        home = obj.__module__ or ""
    else:
        home = type(obj).__module__
    return home not in OP_MODULES and _denied(home)


def _lookup_loaded(module: str, name: str) -> tuple[bool, Any]:
    """``(found, object)`` for ``module.name`` if the module is already imported.

    Only ``__dict__`` entries are read: no import, no module ``__getattr__``.
    """
    mod = sys.modules.get(module)
    if mod is None:
        return False, None
    obj: Any = mod
    for part in name.split("."):
        namespace = getattr(obj, "__dict__", None)
        if not isinstance(namespace, (dict, MappingProxyType)):
            return False, None
        if part not in namespace:
            return False, None
        obj = namespace[part]
    return True, obj


class Globals:
    """Resolves the globals of one file and remembers the placeholders it made.

    Args:
        source: the file, for error messages.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._placeholders: dict[tuple[str, str], type[Placeholder]] = {}
        from anemoi_ckpt_nb.core.classmap import current_name

        self._references: dict[tuple[str, str], Reference] = {}
        self._namespaces: dict[tuple[str, str], Reference] = {}
        self._rename = current_name
        #: Extra stand-ins for this file (``torch.storage._load_from_bytes``), set by the loader.
        self.extra: dict[tuple[str, str], Any] = {("builtins", "getattr"): self._getattr}

    @property
    def opaque(self) -> list[tuple[str, str]]:
        """``(module, name)`` of every global kept as a placeholder or a reference, as the file names it, sorted."""
        found = {cls.ph_original for cls in self._placeholders.values()}
        found.update(ref.ph_original for ref in self._references.values())
        return sorted(found)

    def refuse(self, module: str, name: str) -> UnsafePickleError:
        return UnsafePickleError(self.source, module, name)

    def resolve(self, module: str, name: str) -> Any:
        """The object a pickle ``GLOBAL module name`` stands for.

        Returns:
            An allow-listed object, a :class:`StorageMarker`, a placeholder
            class, or a :class:`Reference` to a function.

        Raises:
            UnsafePickleError: the global is from a module, or is a function,
                that can run code or touch files.
        """
        import _compat_pickle

        if type(module) is not str or type(name) is not str:
            raise pickle.UnpicklingError("a pickle global must be named by strings")
        original = (module, name)
        # Python 2 names (__builtin__.unicode, copy_reg) and torch's own move of torch.tensor.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if module == "torch.tensor":
            module = "torch._tensor"

        if (module, name) in self.extra:
            return self.extra[(module, name)]
        safe = _safe_globals()
        if (module, name) in safe:
            return safe[(module, name)]
        if module.split(".")[0] == "torch" and name.endswith("Storage") and "." not in name:
            return self._storage(module, name)
        if (module, name) in PLACEHOLDER_EXCEPTIONS:
            return self._placeholder(module, name, original)
        if (module, name) in OP_NAMESPACES:
            return self._namespace(module, name)
        if module == "builtins":
            found, obj = _lookup_loaded(module, name)
            # Exception classes are plain values in configs (anemoi keeps NotImplementedError).
            if found and isinstance(obj, type) and issubclass(obj, BaseException):
                return self._placeholder(module, name, original)
            raise self.refuse(module, name)
        if module in OP_MODULES or (module.split(".")[0] in INTROSPECTED_MODULES and not _denied(module)):
            return self._introspect(module, name, original)
        if _denied(module):
            raise self.refuse(module, name)
        new_module, new_name = self._rename(module, name)
        if _denied(new_module):
            raise self.refuse(module, name)
        return self._placeholder(new_module, new_name, original)

    def _introspect(self, module: str, name: str, original: tuple[str, str]) -> Any:
        """A global of torch, numpy, math or operator: a placeholder class, a reference, or a refusal."""
        parts = name.split(".")
        if any(_denied_name(part) for part in parts):
            raise self.refuse(module, name)
        found, obj = _lookup_loaded(module, name)
        if not found:
            # Not loaded (or from another version): classes are CamelCase by convention; anything
            # else is most likely a function, kept by name, so a call to it is refused.
            if parts[-1][:1].isupper() and module not in OP_MODULES:
                return self._placeholder(module, name, original)
            return self._reference(module, name, original)
        if isinstance(obj, type):
            return self._placeholder(module, name, original)
        if isinstance(obj, types.ModuleType) or (callable(obj) and _runs_code(obj)):
            raise self.refuse(module, name)
        if callable(obj):
            return self._reference(module, name, original)
        return self._placeholder(module, name, original)  # a plain value of the module, as before

    def _getattr(self, *args: Any) -> Any:
        """``builtins.getattr`` as pickles use it, by name only: ``torch.relu`` is
        ``getattr(torch._C._VariableFunctionsClass, "relu")``, a bound method is
        ``getattr(obj, "method")``. Only on references and placeholders; the result
        is resolved like any global (so ``from_file`` is refused), never looked up for use."""
        if len(args) != 2 or type(args[1]) is not str or not args[1].isidentifier() or args[1].startswith("__"):
            raise self.refuse("builtins", "getattr")
        obj, attr = args
        if is_reference(obj) and self._namespaces.get(obj.ph_original) is obj:
            module, prefix = OP_NAMESPACES[obj.ph_original]
            return self.resolve(module, f"{prefix}.{attr}" if prefix else attr)
        if not (is_reference(obj) or is_placeholder(obj) or is_placeholder_class(obj)):
            raise self.refuse("builtins", "getattr")
        module, name = obj.ph_module, f"{obj.ph_name}.{attr}"
        if module in OP_MODULES or module.split(".")[0] in INTROSPECTED_MODULES:
            return self.resolve(module, name)
        return self._reference(module, name, (obj.ph_original[0], f"{obj.ph_original[1]}.{attr}"))

    def _reference(self, module: str, name: str, original: tuple[str, str]) -> Reference:
        key = (module, name)
        ref = self._references.get(key)
        if ref is None:
            ref = self._references[key] = Reference(module, name, original)
        return ref

    def _namespace(self, module: str, name: str) -> Reference:
        # Only ever an argument of getattr; not listed among the opaque globals.
        key = (module, name)
        ref = self._namespaces.get(key)
        if ref is None:
            ref = self._namespaces[key] = Reference(module, name)
        return ref

    def _storage(self, module: str, name: str) -> StorageMarker:
        import torch

        if name == "UntypedStorage":
            return StorageMarker(name, torch.uint8)
        try:
            dtype = torch.serialization._get_dtype_from_pickle_storage_type(name)
        except KeyError:
            raise pickle.UnpicklingError(f"unknown storage type {module}.{name}") from None
        return StorageMarker(name, dtype)

    def _placeholder(self, module: str, name: str, original: tuple[str, str]) -> type[Placeholder]:
        key = (module, name)
        cls = self._placeholders.get(key)
        if cls is None:
            cls = placeholder_class(module, name, original)
            self._placeholders[key] = cls
        return cls


# --- the unpickler --------------------------------------------------------------

def _dict_types() -> tuple:
    import collections

    return (dict, collections.OrderedDict, collections.defaultdict, collections.Counter)


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so every opcode can be checked
    """Unpickles with :class:`Globals` and checks every call, ``BUILD`` and item insertion.

    Args:
        file: a binary file object positioned at the pickle.
        globals_: the resolver (shared by all pickles of one file).
        persistent_load: how to turn persistent ids into storages, or ``None``
            to refuse them.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(
        self,
        file: Any,
        globals_: Globals,
        *,
        persistent_load: Callable[[Any], Any] | None = None,
        encoding: str = "utf-8",
    ) -> None:
        super().__init__(file, encoding=encoding)
        self._globals = globals_
        self._persistent = persistent_load

    # -- globals and persistent ids
    def find_class(self, module: str, name: str) -> Any:
        return self._globals.resolve(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError("unexpected persistent id in a plain pickle")
        return self._persistent(pid)

    def get_extension(self, code: int) -> None:
        # The extension registry is process-wide and caches results globally: never used by torch.
        raise self._globals.refuse("copyreg", f"extension code {code}")

    # -- calls
    def _call(self, func: Any, args: Any, kwargs: dict | None = None) -> Any:
        if type(args) is not tuple:
            raise pickle.UnpicklingError("call arguments must be a tuple")
        if is_placeholder_class(func):
            return new_placeholder(func, args, kwargs)
        if _is_allowed_callable(func) or any(func is extra for extra in self._globals.extra.values()):
            _check_plain_args(func, args)
            return func(*args, **(kwargs or {}))
        error = _unsafe_callable(func)
        raise self._globals.refuse(error.module, error.name)

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._call(stack[-1], args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if type(args) is not tuple or type(kwargs) is not dict:
            raise pickle.UnpicklingError("NEWOBJ arguments must be a tuple and a dict")
        try:
            return _instantiate_allowed(cls, args, kwargs)
        except UnsafePickleError as error:
            raise self._globals.refuse(error.module, error.name) from None

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ (protocols 0 and 1)
        self.append(self._call(klass, tuple(args)))

    def load_bytearray8(self) -> None:
        # The stock handler allocates and zeroes the length the file claims before reading a byte of it.
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError("the pickle ends inside a bytearray")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    # -- state and items
    def load_build(self) -> None:
        import torch

        state = self.stack.pop()
        inst = self.stack[-1]
        if is_reference(inst):  # a real function would get __dict__ entries or a __setstate__ call
            raise self._globals.refuse(inst.ph_module, inst.ph_name)
        if is_placeholder(inst):
            if isinstance(inst.ph_state, dict) and isinstance(state, dict):
                inst.ph_state.update(state)
            else:
                inst.ph_state = state
            return
        if type(inst) is torch.Tensor and isinstance(state, tuple) and len(state) == 4:
            inst.set_(*state)  # legacy tensors, as torch's weights-only unpickler does
            return
        if isinstance(inst, _build_setstate_types()):
            inst.__setstate__(state)
            return
        if type(inst) in _dict_types() and hasattr(inst, "__dict__") and isinstance(state, dict):
            _set_attributes(inst, state)  # state_dict()._metadata
            return
        raise self._globals.refuse(type(inst).__module__, f"{type(inst).__qualname__}.__setstate__")

    dispatch[pickle.BUILD[0]] = load_build

    def load_append(self) -> None:
        value = self.stack.pop()
        self._extend(self.stack[-1], [value])

    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._extend(self.stack[-1], items)

    dispatch[pickle.APPENDS[0]] = load_appends

    def _extend(self, target: Any, items: list) -> None:
        if type(target) is list or type(target).__name__ == "deque" and type(target).__module__ == "collections":
            target.extend(items)
        elif is_placeholder(target):
            target.ph_listitems.extend(items)
        else:
            raise self._refuse_target(target, "extend")

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._setitems(self.stack[-1], [key, value])

    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._setitems(self.stack[-1], items)

    dispatch[pickle.SETITEMS[0]] = load_setitems

    def _setitems(self, target: Any, items: list) -> None:
        pairs = [(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if type(target) in _dict_types():
            for key, value in pairs:
                target[key] = value
        elif is_placeholder(target):
            target.ph_dictitems.extend(pairs)
        else:
            raise self._refuse_target(target, "__setitem__")

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is set:
            target.update(items)
        elif is_placeholder(target):
            target.ph_setitems.extend(items)
        else:
            raise self._refuse_target(target, "add")

    dispatch[pickle.ADDITEMS[0]] = load_additems

    def _refuse_target(self, target: Any, method: str) -> UnsafePickleError:
        if is_reference(target):
            return self._globals.refuse(target.ph_module, target.ph_name)
        return self._globals.refuse(type(target).__module__, f"{type(target).__qualname__}.{method}")


def restricted_load(
    file: Any,
    globals_: Globals,
    *,
    persistent_load: Callable[[Any], Any] | None = None,
) -> Any:
    """Unpickle one object from ``file`` with :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: the pickle reached for a refused global; nothing ran.
        CorruptCheckpointError: the pickle is damaged or inconsistent.
    """
    unpickler = RestrictedUnpickler(file, globals_, persistent_load=persistent_load)
    try:
        return unpickler.load()
    except UnsafePickleError as error:
        if error.path != globals_.source:  # raised by a stand-in that does not know the file
            raise globals_.refuse(error.module, error.name) from None
        raise
    except CorruptCheckpointError:
        raise
    except RecursionError:
        raise CorruptCheckpointError(globals_.source, "the pickle is nested too deeply to read") from None
    except MemoryError:
        raise CorruptCheckpointError(globals_.source, "the pickle needs more memory than is available") from None
    except Exception as error:  # a damaged pickle fails in many ways; each means the same to the user
        raise CorruptCheckpointError(
            globals_.source, f"the pickle is damaged or inconsistent ({type(error).__name__}: {error})"
        ) from None


def loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Restricted ``pickle.loads``: plain data, placeholders, and tensors pickled on their own.

    Raises:
        UnsafePickleError: the pickle reached for a refused global; nothing ran.
        CorruptCheckpointError: the pickle is damaged.
    """
    from anemoi_ckpt_nb.core.torchfile import nested_loader

    globals_ = Globals(source)
    globals_.extra[("torch.storage", "_load_from_bytes")] = nested_loader(globals_, DEFAULT_MAX_PICKLE_BYTES)
    return restricted_load(io.BytesIO(data), globals_)


def iter_children(obj: Any) -> Iterator[Any]:
    """The objects directly held by a container or placeholder (for walks over ``raw``)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield value
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from obj
    elif is_placeholder(obj):
        yield from obj.ph_args
        yield from obj.ph_kwargs.values()
        if obj.ph_state is not None:
            yield obj.ph_state
        yield from obj.ph_listitems
        for key, value in obj.ph_dictitems:
            yield key
            yield value
        yield from obj.ph_setitems
