"""What a pickle's ``GLOBAL`` gets: an allowed callable, a refusal, an inert reference or a placeholder class.

:class:`Globals` resolves each ``(module, name)`` once per file: the allow-list first (:mod:`.allowlist`), then the
deny-list of modules and functions that run code or touch files or the network (refused with
:class:`~anemoi_ckpt_nb.errors.UnsafePickleError` before anything is called), then references and placeholders.
"""

from __future__ import annotations

import math  # noqa: F401  (introspected: loaded here so what a name means never depends on the session)
import operator  # noqa: F401
import pickle
import sys
import types
from types import MappingProxyType

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import UnsafePickleError
from anemoi_ckpt_nb.read import arrayrefs
from anemoi_ckpt_nb.read.allowlist import LAZY_MODULES, _numpy_globals, _plain_globals, _safe_globals, _stdlib_globals
from anemoi_ckpt_nb.read.placeholders import (
    Placeholder,
    Reference,
    StorageMarker,
    is_placeholder,
    is_placeholder_class,
    is_reference,
    placeholder_class,
)
from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch, globals_table, storage_dtype

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


#: torch globals that reading with torch allows from a denied module (checked before the denial).
TORCH_ONLY_SAFE = frozenset({("torch.serialization", "_get_layout")})
#: Module prefixes whose capitalised globals are classes (``torch.nn.modules.linear.Linear``):
#: placeholders when read without torch, as with it.
DESCRIBED_CLASS_MODULES = ("torch.nn.modules.",)

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
        # ``tuple[int, str]`` pickles as ``types.GenericAlias(tuple, (int, str))``: torch-geometric >= 2.5
        # keeps such annotations in every message-passing layer of anemoi-training's default GNN.
        ("types", "GenericAlias"),
        # numpy random states pickle through these constructors; as placeholders they are inert.
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
    }
)


#: Modules that are imported anyway, so a function from them can be told from a class (and
#: kept as a :class:`Reference`, or refused) by reading their ``__dict__``, without importing anything.
INTROSPECTED_MODULES = ("torch", "numpy", "math", "operator", "_operator")


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
        describe: resolve torch's globals to the stand-ins of :mod:`.tensorrefs`, which describe
            tensors without importing torch; a torch global they do not cover raises
            :class:`~.tensorrefs.NeedsTorch`, so that the caller reads the file with torch instead.
        describe_numpy: resolve numpy's globals to the stand-ins of :mod:`.arrayrefs`, which describe
            plain numeric arrays without importing numpy; any other use of numpy raises
            :class:`~.arrayrefs.NeedsNumpy`, so that the caller reads the file with numpy instead.
    """

    def __init__(self, source: str, *, describe: bool = False, describe_numpy: bool = False) -> None:
        self.source = source
        self.describe = describe
        self.describe_numpy = describe_numpy
        self._placeholders: dict[tuple[str, str], type[Placeholder]] = {}
        from anemoi_ckpt_nb.read.classmap import current_name

        self._references: dict[tuple[str, str], Reference] = {}
        self._namespaces: dict[tuple[str, str], Reference] = {}
        self._rename = current_name
        #: Extra stand-ins for this file (``torch.storage._load_from_bytes``), set by the loader.
        self.extra: dict[tuple[str, str], Any] = {("builtins", "getattr"): self._getattr}
        if describe:
            self.extra.update(globals_table())
        if describe_numpy:
            self.extra.update(arrayrefs.globals_table())
        #: Bytes handed to calls so far, and how many the file may have copied: the pickle memo
        #: lets a tiny file pass one large object to ``bytearray`` or ``_load_from_bytes`` a
        #: thousand times, so each use is counted (set by the loader from the pickle's size).
        self.copied = 0
        self.copy_budget = 512 * 1024 * 1024

    def charge(self, args: tuple, func: Any) -> None:
        """Count the bytes a call of ``func`` receives; refuse once they pass :attr:`copy_budget`.

        Raises:
            CorruptCheckpointError: the file copies more than it holds.
        """
        size = 0
        for a in args:  # a loop, not sum() over a generator: a call of the unpickler's every REDUCE (issue 16)
            if isinstance(a, (bytes, bytearray, str)):
                size += len(a)
        if not size:
            return
        self.copied += size
        if self.copied > self.copy_budget:
            from anemoi_ckpt_nb.errors import CorruptCheckpointError

            what = getattr(func, "__name__", "a function")
            raise CorruptCheckpointError(
                self.source,
                f"refused to load: the pickle passes {self.copied:,} bytes to {what} and other calls, more than the "
                f"{self.copy_budget:,} it may copy (one shared object used again and again); nothing from the file was run",
                hint="the file was not written by torch.save; do not use it unless you trust its origin",
            )

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
        safe = _plain_globals() if self.describe else _safe_globals()
        if (module, name) in safe:
            return safe[(module, name)]
        if module in LAZY_MODULES and name in LAZY_MODULES[module]:
            return _stdlib_globals(module)[(module, name)]
        if module.split(".")[0] == "numpy":
            if self.describe_numpy:
                raise arrayrefs.NeedsNumpy(f"{module}.{name}")
            numpy_safe = _numpy_globals()  # imports numpy, which introspection below relies on
            if (module, name) in numpy_safe:
                return numpy_safe[(module, name)]
        if self.describe and module.split(".")[0] == "torch" and (module, name) not in OP_NAMESPACES:
            return self._describe_torch(module, name, original)
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

    def _describe_torch(self, module: str, name: str, original: tuple[str, str]) -> Any:
        """A torch global without torch: a storage type, a module class, an operator, a refusal, or
        :class:`NeedsTorch` where only torch's own namespace can tell (tests/test_tensorrefs.py
        checks every name of torch's namespaces against the answer with torch)."""
        if name.endswith("Storage") and "." not in name:
            return StorageMarker(name, storage_dtype(name))
        if name.startswith("_rebuild") or (module, name) in TORCH_ONLY_SAFE:
            raise NeedsTorch(f"{module}.{name}")
        parts = name.split(".")
        if any(_denied_name(part) for part in parts) or (_denied(module) and module not in OP_MODULES):
            raise self.refuse(module, name)
        if module in OP_MODULES and not parts[-1][:1].isupper() and len(parts) == 1:
            return self._reference(module, name, original)
        # Capitalised (``Linear``, ``GELU``), not ``F``: torch.nn.functional imported under that name.
        if module.startswith(DESCRIBED_CLASS_MODULES) and len(parts) == 1 and name[:1].isupper() and len(name) > 1:
            return self._placeholder(module, name, original)
        raise NeedsTorch(f"{module}.{name}")

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
