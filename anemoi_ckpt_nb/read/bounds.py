"""Bounds on what a pickle may ask for: sizes, allocations, numbers, dtypes and array states checked before anything is built.

A pickle that asks for more than its file could hold (a tensor of a billion elements from a few bytes, a number of a
million digits, an array state that does not match its dtype) is refused with :class:`RefusedPickle` before any
memory is allocated.
"""

from __future__ import annotations

import math
import operator
import pickle
import sys
from functools import lru_cache

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.read.placeholders import is_placeholder

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
    torch = sys.modules.get("torch")  # not imported: no torch class can be on the pickle's stack
    if torch is not None and not hasattr(torch, "nn"):
        import torch  # half imported by another thread: importing waits for it to finish

    if torch is not None and func is torch.nn.Parameter:
        _check_parameter_args(args, kwargs)
        return
    if torch is not None and _is_tensor_class(func):
        if args or kwargs:
            raise RefusedPickle(
                f"{_call_text(func, args)} is refused: torch.save never calls a tensor constructor with arguments, "
                "and one given a size allocates memory the file does not hold"
            )
        return
    np = sys.modules.get("numpy")
    if np is not None and not hasattr(np, "ndarray"):
        # Half imported by another thread (convert --jobs N): importing waits for it to finish.
        import numpy as np
    if np is not None and isinstance(func, type) and issubclass(func, np.ndarray):
        shape = args[0] if args else kwargs.get("shape", ())
        if _numel(shape, _call_text(func, args)) != 0:
            raise RefusedPickle(
                f"{_call_text(func, args)} is refused: numpy pickles an array as an empty one filled by __setstate__, "
                "and an array made with a shape allocates memory the file does not hold"
            )


def _check_growth(what: str, needed: int, held: int) -> None:
    if needed > MAX_CONVERSION_GROWTH * held:
        raise RefusedPickle(
            f"{what} is refused: converting the tensor would allocate {needed} bytes from {held} bytes in the file"
        )


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


@lru_cache(maxsize=2)
def _data_constructors(with_torch: bool = False) -> frozenset:
    import collections

    plain = {list, tuple, set, frozenset, dict, str, int, float, bool, complex, slice, _safe_bytes, _safe_bytearray}
    plain |= {collections.OrderedDict, collections.Counter, collections.deque}
    if with_torch:
        import torch

        plain.add(torch.Size)
    return frozenset(plain)


def _check_plain_args(func: Any, args: tuple, kwargs: dict | None = None) -> None:
    # list(tensor), tuple(array)...: these would expand a (possibly stride-0, huge) tensor element by element.
    if func in _data_constructors("torch" in sys.modules) and any(_is_heavy(arg) for arg in args):
        raise pickle.UnpicklingError(f"{getattr(func, '__name__', func)}() called on a tensor, array or opaque object")
    # str(data, encoding), bytes(text, encoding), bytearray(text, encoding) look the codec up by name.
    if func in (str, _safe_bytes, _safe_bytearray):
        encoding = args[1] if len(args) > 1 else (kwargs or {}).get("encoding")
        if encoding is not None:
            _check_encoding(encoding)
    if _is_number_constructor(func) and any(_is_huge_number(arg) for arg in (*args, *(kwargs or {}).values())):
        raise pickle.UnpicklingError(
            f"{getattr(func, '__name__', func)}() of a number over {MAX_NUMBER_DIGITS} digits is refused: "
            "it takes minutes to compute"
        )


#: Digits of the largest integer a pickle may make from a ``Decimal`` or a ``Fraction``: Python's own
#: limit for ``int(str)``. ``int(Decimal("1e3000000"))`` takes minutes; the file needs 30 bytes.
MAX_NUMBER_DIGITS = 4300


def _is_number_constructor(func: Any) -> bool:
    """``int``, or ``fractions.Fraction`` (known by name: ``fractions`` is imported only when a pickle names it)."""
    return func is int or (isinstance(func, type) and (func.__module__, func.__qualname__) == ("fractions", "Fraction"))


def _is_huge_number(arg: Any) -> bool:
    import re

    # A Decimal exists only once ``decimal`` is imported (a pickle naming ``decimal.Decimal`` imports it).
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(arg, decimal.Decimal):
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


#: Most nodes plain data may hold once written out as a tree (JSON): real metadata has about
#: 10**4. The pickle memo lets a few kB share one list 2**40 ways (docs/threat-model.md).
MAX_TREE_NODES = 2_000_000
#: Most modules and tensors the walk of a pickled model may meet, a shared submodule counted under each of its
#: names (as torch's state_dict lists it): real anemoi models have 10**2 to 10**4; shared 10 ways 8 deep, 10**8.
MAX_STATE_ENTRIES = 200_000
#: Most nodes of a dict key that must be spelled out (``repr``) to become a plain key.
MAX_KEY_NODES = 10_000


class SharedExpansionError(ValueError):
    """Plain data that is cyclic, or that shares its parts so much that writing it out explodes."""


def tree_size(obj: Any, *, limit: int = MAX_TREE_NODES) -> int:
    """Nodes of ``obj`` (dicts, lists, tuples, their items and keys) written out as a tree.

    Counted over the shared graph, each object once, so it costs what the graph holds, not
    what it expands to.

    Raises:
        SharedExpansionError: ``obj`` is cyclic, or expands to more than ``limit`` nodes.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(obj, False)]

    def children(node: Any) -> list:
        return [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)

    while stack:
        node, done = stack.pop()
        if not isinstance(node, (dict, list, tuple)):
            continue
        key = id(node)
        if done:
            active.discard(key)
            size = 1 + sum(sizes.get(id(c), 1) for c in children(node))
            if size > limit:
                raise SharedExpansionError(f"it shares its parts so much that it expands to more than {limit:,} nodes")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in active:
            raise SharedExpansionError("it contains itself (a circular reference)")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children(node))
    return sizes.get(id(obj), 1)
