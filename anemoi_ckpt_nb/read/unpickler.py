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
  :class:`~anemoi_ckpt_nb.errors.UnsafePickleError` before anything is called;
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

import collections
import pickle
import struct
import sys
from collections.abc import Callable
from functools import lru_cache

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import CorruptCheckpointError, UnsafePickleError
from anemoi_ckpt_nb.read import arrayrefs
from anemoi_ckpt_nb.read.arrayrefs import NeedsNumpy, is_lazy
from anemoi_ckpt_nb.read.allowlist import _instantiate_allowed, _is_allowed_callable
from anemoi_ckpt_nb.read.bounds import (
    RefusedPickle,
    _check_array_state,
    _check_dtype_state,
    _check_no_allocation,
    _check_plain_args,
)
from anemoi_ckpt_nb.read import pickleloop
from anemoi_ckpt_nb.read.placeholders import (
    _unsafe_callable,
    is_placeholder,
    is_placeholder_class,
    is_reference,
    new_placeholder,
)
from anemoi_ckpt_nb.read.rebuilders import _build_parameter, _set_attributes
from anemoi_ckpt_nb.read.resolver import Globals
from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch, is_tensor_ref

#: The largest pickle read into memory; anemoi's are a few MB, a model pickle tens of MB.
DEFAULT_MAX_PICKLE_BYTES = 512 * 1024 * 1024
#: Most members (counted through nested tuples, each use counted) a tuple may have: the cost
#: of hashing it, e.g. as a dict key. Real checkpoints' tuples have a handful.
MAX_TUPLE_NODES = 1_000_000


@lru_cache(maxsize=4)
def _build_setstate_types(with_torch: bool = False, with_numpy: bool = False) -> tuple:
    """Types whose own ``__setstate__`` may receive pickle ``BUILD`` state (C or data-only)."""
    import uuid

    types_: list[type] = [uuid.UUID]
    if with_torch:
        import torch

        types_.append(torch.nn.Parameter)
    if with_numpy:  # only once imported: before that no numpy object can be on the pickle's stack
        import numpy as np

        types_ += [np.ndarray, np.dtype]
    return tuple(types_)


#: The types whose items ``SETITEM(S)`` may set (``collections`` is imported by ``functools`` already).
_DICT_TYPES = (dict, collections.OrderedDict, collections.defaultdict, collections.Counter)
#: :func:`~.arrayrefs.is_lazy` for many objects at once: ``_LAZY.isdisjoint(map(type, objects))`` in C.
_LAZY = frozenset(arrayrefs.LAZY_TYPES)


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
        self._file = file
        self._globals = globals_
        self._persistent = persistent_load
        #: id -> (tree size, the tuple) of tuples holding tuples (see ``_sized_tuple``).
        self._tuple_sizes: dict[int, tuple[int, Any]] = {}
        self._allowed_calls: dict[int, Any] = {}

    def load(self) -> Any:
        """Unpickle, with the opcode loop of :func:`~.pickleloop.run` (the stock handlers and checks)."""
        return pickleloop.run(self, self._file)

    def load_frame(self) -> None:  # from protocol 4's first frame on, reads go through the unframer
        self.read, self.readline = self._unframer.read, self._unframer.readline
        pickle._Unpickler.load_frame(self)

    dispatch[pickle.FRAME[0]] = load_frame

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
        if is_lazy(func) or (
            func is not arrayrefs.reconstruct
            and not (_LAZY.isdisjoint(map(type, args)) and (not kwargs or _LAZY.isdisjoint(map(type, kwargs.values()))))
        ):
            # numpy as the pickle uses it here, not as it pickles plain arrays: read with numpy's checks
            raise NeedsNumpy(f"a described numpy object used in a call to {getattr(func, '__name__', func)!r:.60}")
        if is_placeholder_class(func):
            return new_placeholder(func, args, kwargs)
        if self._allowed_calls.get(id(func)) is func or self._allow(func):
            _check_plain_args(func, args)
            _check_no_allocation(func, args, kwargs)
            self._globals.charge(args, func)
            return func(*args, **(kwargs or {}))
        error = _unsafe_callable(func)
        raise self._globals.refuse(error.module, error.name)

    def _allow(self, func: Any) -> bool:
        # Remembered once allowed (a pickle calls the same few hundreds of times): the allow-list only grows.
        if _is_allowed_callable(func) or any(func is extra for extra in self._globals.extra.values()):
            self._allowed_calls[id(func)] = func  # kept alive with it, so the id stays its own
            return True
        return False

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._call(stack[-1], args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if type(args) is not tuple or type(kwargs) is not dict:
            raise pickle.UnpicklingError("NEWOBJ arguments must be a tuple and a dict")
        if is_lazy(cls) or not (_LAZY.isdisjoint(map(type, args)) and _LAZY.isdisjoint(map(type, kwargs.values()))):
            raise NeedsNumpy("a described numpy object instantiated")
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

    # -- tuples: hashing one visits every member of every nested tuple, however shared
    def _sized_tuple(self) -> None:
        made = self.stack[-1]
        if len(made) < MAX_TUPLE_NODES and tuple not in map(type, made):
            return  # no member tuple: its size is 1 + len(made), within the bound, and it is not remembered
        sizes = self._tuple_sizes
        # A member tuple counts 1 + its members (its remembered size if it holds tuples itself).
        size = 1 + sum(
            (sizes[id(item)][0] if id(item) in sizes else 1 + len(item)) if type(item) is tuple else 1 for item in made
        )
        if size > MAX_TUPLE_NODES:
            raise RefusedPickle(
                f"a tuple that shares its members so much that hashing it visits more than {MAX_TUPLE_NODES:,} of them"
            )
        if size > 1 + len(made):  # holds tuples: remember it (and keep it alive, so its id stays its own)
            self._tuple_sizes[id(made)] = (size, made)

    def _tuple_handler(stock: Callable[[Any], None]) -> Callable[[Any], None]:  # noqa: N805 (class-body helper)
        def load(self: RestrictedUnpickler) -> None:
            stock(self)
            self._sized_tuple()

        return load

    for _opcode in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
        dispatch[_opcode[0]] = _tuple_handler(pickle._Unpickler.dispatch[_opcode[0]])
    del _opcode

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
        torch = sys.modules.get("torch")  # not imported: no tensor can be on the pickle's stack

        state = self.stack.pop()
        inst = self.stack[-1]
        if is_lazy(inst):
            inst.build(state)  # exactly numpy's own state of a plain numeric array or dtype, or NeedsNumpy
            return
        if is_lazy(state) and not is_placeholder(inst):
            raise NeedsNumpy("a described numpy object given as state")
        if is_tensor_ref(inst):
            raise NeedsTorch("state given to a tensor")
        if is_reference(inst):  # a real function would get __dict__ entries or a __setstate__ call
            raise self._globals.refuse(inst.ph_module, inst.ph_name)
        if is_placeholder(inst):
            if isinstance(inst.ph_state, dict) and isinstance(state, dict):
                inst.ph_state.update(state)
            else:
                inst.ph_state = state
            return
        if torch is not None and type(inst) is torch.Tensor and isinstance(state, tuple) and len(state) == 4:
            inst.set_(*state)  # legacy tensors, as torch's weights-only unpickler does
            return
        if torch is not None and isinstance(inst, torch.nn.Parameter):
            _build_parameter(inst, state)
            return
        np = sys.modules.get("numpy")
        if np is not None and isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
        elif np is not None and isinstance(inst, np.ndarray):
            _check_array_state(inst, state)
        if isinstance(inst, _build_setstate_types(torch is not None, np is not None)):
            inst.__setstate__(state)
            return
        if type(inst) in _DICT_TYPES and hasattr(inst, "__dict__") and isinstance(state, dict):
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
        if type(target) in _DICT_TYPES:
            for i in range(0, len(items) - 1, 2):  # an odd last item is left out, as in the placeholder's pairs
                target[items[i]] = items[i + 1]
        elif is_placeholder(target):
            target.ph_dictitems.extend([(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)])
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
        if is_lazy(target):
            raise NeedsNumpy(f"{method} on a described numpy object")
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
    except (CorruptCheckpointError, NeedsTorch, NeedsNumpy):
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
