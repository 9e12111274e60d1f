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
        _check_no_allocation(cls, args, kwargs)
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
            _check_no_allocation(base, (state,), {})
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


# --- sizes: memory is only ever allocated for what the file holds ------------------


class RefusedPickle(pickle.UnpicklingError):
    """A call or state the reader refuses on purpose (reported as such, not as damage)."""


#: How many bytes a dtype conversion of a rebuilt tensor may make per byte the file holds
#: (float8 or bool to float64 is 8): an expanded (stride 0) view converted element by element
#: would otherwise materialise any size the file names.
MAX_CONVERSION_GROWTH = 8

#: The most elements an array of zero-byte items (``dtype([])``, ``V0``, ``S0``) may have: they take no
#: memory in the file, but anything that walks them (``tolist()``) would make one object per element.
MAX_EMPTY_ITEMS = 1024

#: numpy's ``NPY_ALIGNED_STRUCT`` flag: the structured dtype was made with ``align=True``.
NPY_ALIGNED_STRUCT = 0x80


def _call_text(func: Any, args: tuple) -> str:
    """``module.name(arg, ...)`` for messages: numbers and shapes shown, anything else by type."""
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__name__
    shown = []
    for arg in args[:4]:
        if isinstance(arg, (int, tuple, list, str, bytes)) and len(repr(arg)) <= 60:
            shown.append(repr(arg))
        else:
            shown.append(f"<{type(arg).__name__}>")
    if len(args) > 4:
        shown.append("...")
    prefix = f"{module}." if module and module != "builtins" else ""
    return f"{prefix}{name}({', '.join(shown)})"


def _numel(shape: Any, what: str) -> int:
    """Elements of an array or tensor of ``shape`` (an int or a sequence of ints), without making it."""
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    try:
        sizes = [operator.index(d) for d in dims]
    except TypeError:
        raise RefusedPickle(f"{what}: the shape {shape!r:.80} is not a tuple of integers") from None
    if any(d < 0 for d in sizes):
        raise RefusedPickle(f"{what}: the shape {tuple(sizes)!r:.80} has a negative size")
    return math.prod(sizes)


def _is_tensor_class(obj: Any) -> bool:
    import torch

    if obj is torch.Tensor or (isinstance(obj, type) and issubclass(obj, torch.Tensor)):
        return True
    try:
        return obj in torch._tensor_classes  # the legacy types: torch.FloatTensor, torch.sparse.FloatTensor, ...
    except TypeError:  # unhashable
        return False


def _check_parameter_args(args: tuple, kwargs: dict) -> None:
    """``Parameter(data=None, requires_grad=True)``: data must be a tensor already rebuilt, never a size."""
    import torch

    if len(args) > 2 or set(kwargs) - {"data", "requires_grad"}:
        raise RefusedPickle(f"{_call_text(torch.nn.Parameter, args)} is refused: too many arguments")
    data = args[0] if args else kwargs.get("data")
    requires_grad = args[1] if len(args) > 1 else kwargs.get("requires_grad", True)
    if (data is not None and not isinstance(data, torch.Tensor)) or type(requires_grad) is not bool:
        raise RefusedPickle(
            f"{_call_text(torch.nn.Parameter, args)} is refused: a parameter is made from a tensor and a bool"
        )


def _check_no_allocation(func: Any, args: tuple, kwargs: dict | None = None) -> None:
    """Refuse tensor and array constructors given a size: they allocate memory the file does not hold.

    ``torch.save`` rebuilds tensors from storages (``torch._utils._rebuild_tensor_v2``) and numpy
    makes an empty array (``_reconstruct(ndarray, (0,), b'b')``) that ``__setstate__`` fills from
    bytes in the file; neither ever calls ``torch.Tensor(n)`` or ``numpy.ndarray(shape)``.
    """
    kwargs = kwargs or {}
    import torch

    if func is torch.nn.Parameter:
        _check_parameter_args(args, kwargs)
        return
    if _is_tensor_class(func):
        if args or kwargs:
            raise RefusedPickle(
                f"{_call_text(func, args)} is refused: torch.save never calls a tensor constructor with arguments, "
                "and one given a size allocates memory the file does not hold"
            )
        return
    np = sys.modules.get("numpy")
    if np is not None and isinstance(func, type) and issubclass(func, np.ndarray):
        shape = args[0] if args else kwargs.get("shape", ())
        if _numel(shape, _call_text(func, args)) != 0:
            raise RefusedPickle(
                f"{_call_text(func, args)} is refused: numpy pickles an array as an empty one filled by __setstate__, "
                "and an array made with a shape allocates memory the file does not hold"
            )


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


def _check_growth(what: str, needed: int, held: int) -> None:
    if needed > MAX_CONVERSION_GROWTH * held:
        raise RefusedPickle(
            f"{what} is refused: converting the tensor would allocate {needed} bytes from {held} bytes in the file"
        )


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


# --- BUILD state of the data types that take it -------------------------------------


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


def _expected_dtype(inst: Any, state: tuple) -> Any:
    """The dtype ``state`` describes, built by numpy's own (checking) constructors from its parts."""
    import numpy as np

    _, endian, subarray, names, fields, elsize, _, flags = state[:8]
    extra = state[8] if len(state) == 9 else None
    metadata = extra
    spec: Any
    if inst.kind in "Mm":
        # datetime64 / timedelta64: (metadata, (unit, count, 1, 1)), as numpy writes it
        if not (type(extra) is tuple and len(extra) == 2 and type(extra[1]) is tuple and len(extra[1]) == 4):
            raise ValueError("a datetime dtype's state lacks its unit")
        metadata, (unit, count, _, _) = extra
        if type(unit) is not bytes or type(count) is not int or not unit.isalpha() or not 0 < count < 2**31:
            raise ValueError("bad datetime unit")
        unit_text = unit.decode("ascii")
        spec = f"{inst.char}8" if unit_text == "generic" else f"{inst.char}8[{count}{unit_text}]"
    elif names is not None or fields is not None:
        if inst.kind != "V" or type(names) is not tuple or type(fields) is not dict:
            raise ValueError("fields on a dtype that is not structured")
        formats, offsets, titles = [], [], []
        for name in names:
            entry = fields.get(name) if type(name) is str else None
            if type(entry) is not tuple or len(entry) not in (2, 3) or not isinstance(entry[0], np.dtype):
                raise ValueError(f"bad field {name!r:.40}")
            if type(entry[1]) is not int or (len(entry) == 3 and type(entry[2]) is not str):
                raise ValueError(f"bad field {name!r:.40}")
            formats.append(entry[0])
            offsets.append(entry[1])
            titles.append(entry[2] if len(entry) == 3 else None)
        spec = {"names": list(names), "formats": formats, "offsets": offsets, "itemsize": elsize}
        if any(t is not None for t in titles):
            spec["titles"] = titles
        spec = np.dtype(spec, align=bool(flags & NPY_ALIGNED_STRUCT))
    elif subarray is not None:
        if not (type(subarray) is tuple and len(subarray) == 2 and isinstance(subarray[0], np.dtype)):
            raise ValueError("bad subarray")
        shape = subarray[1]
        if type(shape) is not tuple or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError("bad subarray shape")
        spec = (subarray[0], shape)
    elif inst.char in "SUV" and elsize >= 0:
        if inst.char == "U" and elsize % 4:
            raise ValueError("a unicode dtype's size must be a multiple of 4")
        spec = f"{inst.char}{elsize // 4 if inst.char == 'U' else elsize}"
    else:
        spec = inst.str
    if metadata is not None and type(metadata) is not dict:
        raise ValueError("dtype metadata must be a dict")
    expected = np.dtype(spec) if metadata is None else np.dtype(spec, metadata=metadata)
    if endian in "<>" and expected.byteorder != "|":
        expected = expected.newbyteorder(endian)
    return expected


def _check_dtype_state(inst: Any, state: Any) -> None:
    """Check a numpy dtype's ``BUILD`` state before numpy's ``__setstate__`` trusts it.

    numpy takes the item size, field offsets and flags of the state as given: a field past the
    end of the item reads memory outside the array, and the object flags on a float dtype make
    numpy treat bytes from the file as object pointers. So the state must be exactly what numpy
    writes for a dtype built from the same parts by its own (checking) constructors.
    """
    if type(state) is not tuple or len(state) not in (8, 9) or type(state[0]) is not int or state[0] not in (3, 4):
        raise RefusedPickle(f"the state of numpy dtype {str(inst)[:60]} is not a numpy dtype state (version 3 or 4)")
    endian, elsize, alignment, flags = state[1], state[5], state[6], state[7]
    if type(endian) is not str or endian not in ("<", ">", "|", "=") or not all(
        type(v) is int for v in (elsize, alignment, flags)
    ):
        raise RefusedPickle(f"the state of numpy dtype {str(inst)[:60]} is malformed")
    try:
        expected = _expected_dtype(inst, state)
    except (TypeError, ValueError, KeyError, OverflowError, RecursionError) as error:
        raise RefusedPickle(
            f"the state of numpy dtype {str(inst)[:60]} describes no valid dtype ({str(error)[:120]})"
        ) from None
    _, args, expected_state = expected.__reduce__()
    if args != inst.__reduce__()[1] or expected_state != state:
        raise RefusedPickle(
            f"the state of numpy dtype {str(inst)[:60]} does not match the dtype it describes "
            f"(item size, offsets, alignment or flags differ from numpy's own {str(expected)[:80]})"
        )


def _check_array_state(inst: Any, state: Any) -> None:
    """Check a numpy array's ``BUILD`` state: an empty array from ``_reconstruct``, sizes the data covers."""
    import numpy as np

    if inst.size != 0:
        # setstate frees the array's buffer, which a tensor made from it (torch.from_numpy) still uses.
        raise RefusedPickle("__setstate__ on a numpy array that already holds data is refused")
    if type(state) is not tuple or len(state) not in (4, 5) or not isinstance(state[-3], np.dtype):
        raise RefusedPickle("the state of a numpy array is malformed")
    numel = _numel(state[-4], "numpy array state")
    if state[-3].itemsize == 0 and numel > MAX_EMPTY_ITEMS:
        raise RefusedPickle(
            f"a numpy array of {numel} zero-byte items is refused: the file holds none of them"
        )


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
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        safe[(module, "_reconstruct")] = _safe_reconstruct
        safe[(module, "scalar")] = _safe_scalar
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
            _check_no_allocation(func, args, kwargs)
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
        if isinstance(inst, torch.nn.Parameter):
            _build_parameter(inst, state)
            return
        np = sys.modules.get("numpy")
        if np is not None and isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
        elif np is not None and isinstance(inst, np.ndarray):
            _check_array_state(inst, state)
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
    except RefusedPickle as error:
        raise CorruptCheckpointError(
            globals_.source,
            f"refused to load: {error}; nothing from the file was run",
            hint="the file was not written by torch.save or numpy as they are; do not use it unless you trust its origin",
        ) from None
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
