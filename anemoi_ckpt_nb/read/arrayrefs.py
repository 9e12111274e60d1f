"""numpy arrays described, not made: a checkpoint's statistics and supporting arrays without importing numpy.

Importing numpy takes about 0.1 s, several times what ``python -c pass`` takes, and the pickles
of anemoi's checkpoints hold a few small numpy arrays (``hyper_parameters["statistics"]``,
``hyper_parameters["supporting_arrays"]``): ``inspect`` only needs their shapes. numpy pickles a
plain numeric array as::

    _reconstruct(ndarray, (0,), b"b")                  # an empty array ...
    BUILD (1, shape, dtype, fortran, raw bytes)         # ... filled by __setstate__
    dtype = numpy.dtype("f8", False, True)
    BUILD (3, "<", None, None, None, -1, -1, 0)         # the dtype's state

When the reader resolves numpy's globals to the stand-ins below, exactly that shape of pickle
(plain numeric dtypes, a state that is exactly what numpy writes, raw bytes matching the shape)
becomes an :class:`ArrayRef`; numpy is imported when its values are asked for (:meth:`ArrayRef.numpy`,
behind ``ck.supporting_arrays``). Anything else that names numpy (object or structured arrays,
scalars, other numpy globals, a state numpy would not write, a numpy object used in any other way)
raises :class:`NeedsNumpy`, and the reader reads the file again with numpy and all its checks.
"""

from __future__ import annotations

import math

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any


class NeedsNumpy(Exception):
    """The pickle uses numpy beyond plain numeric arrays; read it again with numpy's own checks."""


#: numpy's pickled dtype code -> (dtype name, item size): the plain numeric dtypes.
CODES: dict[str, tuple[str, int]] = {
    "f8": ("float64", 8), "f4": ("float32", 4), "f2": ("float16", 2),
    "i8": ("int64", 8), "i4": ("int32", 4), "i2": ("int16", 2), "i1": ("int8", 1),
    "u8": ("uint64", 8), "u4": ("uint32", 4), "u2": ("uint16", 2), "u1": ("uint8", 1),
    "b1": ("bool", 1), "c16": ("complex128", 16), "c8": ("complex64", 8),
}  # fmt: skip
#: numpy dtype name -> code (the names anemoi-utils writes in ``supporting_arrays_paths``).
NAMES = {name: code for code, (name, _) in CODES.items()}
#: numpy's own limit on dimensions (NPY_MAXDIMS is 32 in numpy 1, 64 in numpy 2).
MAX_DIMS = 32


class ArrayType:
    """``numpy.ndarray`` as a pickle names it, numpy not imported: only ever ``_reconstruct``'s first argument."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NeedsNumpy("numpy.ndarray called")

    def __repr__(self) -> str:
        return "<numpy.ndarray, described>"


NDARRAY = ArrayType()


class DtypeRef:
    """A plain numeric numpy dtype: ``numpy.dtype(code, False, True)`` and its byte order."""

    __slots__ = ("code", "name", "itemsize", "byteorder")

    def __init__(self, code: str) -> None:
        self.code = code
        self.name, self.itemsize = CODES[code]
        self.byteorder: str | None = None  # set by the pickle's BUILD, as numpy's __setstate__ does

    def build(self, state: Any) -> None:
        orders = ("|",) if self.itemsize == 1 else ("<", ">")
        if (
            self.byteorder is not None
            or type(state) is not tuple
            or len(state) != 8
            or type(state[0]) is not int
            or state[0] != 3
            or type(state[1]) is not str
            or state[1] not in orders
            or any(part is not None for part in state[2:5])
            or any(type(part) is not int for part in state[5:])
            or state[5:] != (-1, -1, 0)
        ):
            raise NeedsNumpy(f"numpy dtype {self.code} with the state {state!r:.80}")
        self.byteorder = state[1]

    @property
    def str(self) -> str:
        """numpy's ``dtype.str`` (``"<f8"``)."""
        return f"{self.byteorder or '|'}{self.code}"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"dtype({self.str!r}, described)"


class ArrayRef:
    """A plain numeric numpy array of the file: dtype, shape and bytes; numpy is imported by :meth:`numpy`.

    Attributes:
        shape: the array's shape.
        dtype: its :class:`DtypeRef` (``str(dtype)`` is numpy's name, ``"float64"``).
    """

    __slots__ = ("shape", "dtype", "fortran", "data", "writeable", "_array")

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.dtype: DtypeRef | None = None
        self.fortran = False
        self.data: bytes | None = None
        self.writeable = True
        self._array: Any = None

    @classmethod
    def from_bytes(cls, data: bytes, dtype: str, shape: tuple[int, ...]) -> ArrayRef:
        """An array stored as its bytes (an anemoi-utils ``.numpy`` archive entry), C order.

        Raises:
            NeedsNumpy: ``dtype`` is not a plain numeric dtype name.
            ValueError: ``data`` does not hold ``shape`` items of ``dtype``.
        """
        code = NAMES.get(dtype) if type(dtype) is str else None
        if code is None:
            raise NeedsNumpy(f"numpy dtype {dtype!r:.40}")
        array = cls()
        array.dtype = DtypeRef(code)
        array.dtype.byteorder = "|" if array.dtype.itemsize == 1 else "<"
        array.shape = shape
        array.data = data
        array.writeable = False  # numpy.frombuffer of the entry's bytes, as anemoi-utils gives it
        if _numel(shape) * array.dtype.itemsize != len(data):
            raise ValueError(f"{len(data)} bytes do not hold an array of shape {shape} and dtype {dtype}")
        return array

    def build(self, state: Any) -> None:
        """numpy's ``ndarray.__setstate__``, for exactly the state numpy writes for a plain numeric array."""
        if self.data is not None or type(state) is not tuple or len(state) != 5:
            raise NeedsNumpy("a numpy array state numpy does not write")
        version, shape, dtype, fortran, data = state
        if (
            type(version) is not int
            or version != 1
            or type(dtype) is not DtypeRef
            or dtype.byteorder is None
            or type(fortran) is not bool
            or type(data) is not bytes
            or type(shape) is not tuple
            or len(shape) > MAX_DIMS
            or not all(type(n) is int and 0 <= n < 2**31 for n in shape)
            or _numel(shape) * dtype.itemsize != len(data)
        ):
            raise NeedsNumpy("a numpy array state other than plain numeric data of its shape")
        self.shape, self.dtype, self.fortran, self.data = shape, dtype, fortran, data

    @property
    def size(self) -> int:
        return _numel(self.shape or ())

    @property
    def nbytes(self) -> int:
        return len(self.data or b"")

    @property
    def ndim(self) -> int:
        return len(self.shape or ())

    def numpy(self) -> Any:
        """The numpy array (made once; the same object every time, as the pickle's memo shares it)."""
        if self._array is None:
            import numpy as np

            if self.data is None or self.dtype is None or self.shape is None:
                raise ValueError("a numpy array the pickle never filled")
            dtype = np.dtype(self.dtype.str)
            flat = np.frombuffer(self.data, dtype=dtype)
            array = flat.reshape(self.shape, order="F" if self.fortran else "C")
            self._array = array.copy(order="F" if self.fortran else "C") if self.writeable else array
        return self._array

    def __repr__(self) -> str:
        return f"<array {self.dtype} {self.shape}, described>"


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def reconstruct(subtype: Any, shape: Any, dtype: Any) -> ArrayRef:
    """numpy's ``_reconstruct``, for the empty array a numpy pickle starts from."""
    if subtype is not NDARRAY or type(shape) is not tuple or shape != (0,) or type(shape[0]) is not int or type(dtype) is not bytes or dtype != b"b":
        raise NeedsNumpy("numpy _reconstruct of something other than an empty ndarray")
    return ArrayRef()


def make_dtype(*args: Any) -> DtypeRef:
    """``numpy.dtype(code, False, True)`` as numpy pickles a plain numeric dtype."""
    if len(args) != 3 or type(args[0]) is not str or args[0] not in CODES or args[1] is not False or args[2] is not True:
        raise NeedsNumpy(f"numpy.dtype{args!r:.80}")
    return DtypeRef(args[0])


def globals_table() -> dict[tuple[str, str], Any]:
    """The numpy globals a pickle of plain numeric arrays names -> their stand-ins."""
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): NDARRAY, ("numpy", "dtype"): make_dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
    return table


LAZY_TYPES = (ArrayRef, DtypeRef, ArrayType)


def is_lazy(obj: Any) -> bool:
    """Whether ``obj`` is one of this module's stand-ins (which anything but the pickle's data use sends to numpy)."""
    return type(obj) in LAZY_TYPES


def made(tree: Any) -> Any:
    """``tree`` (nested dicts) with every described array made a numpy array (numpy imported only if one is there)."""
    if isinstance(tree, dict):
        return {key: made(value) for key, value in tree.items()}
    if type(tree) is ArrayRef:
        return tree.numpy()
    return tree
