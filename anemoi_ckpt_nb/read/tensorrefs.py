"""Tensors described, not made: what the reader knows of a tensor without importing torch.

Importing torch takes one to several seconds and about 220 MB, which the
reading commands (``inspect``, ``convert``, ``register``, ...) do not need: a
tensor of a ``torch.save`` archive is a dtype, a shape, a stride and an offset
into a storage, and a storage is a byte range of the file. The restricted
unpickler resolves torch's rebuild functions to the stand-ins below, which
check what torch would check (sizes within the storage, plain arguments, no
hooks) and return a :class:`TensorRef`. torch is imported only when a caller
asks for the tensor itself (:func:`materialise`, behind ``ck.tensor(name)``).

Anything rarer (sparse, quantized or nested tensors, tensor subclasses rebuilt
from numpy, legacy tensor classes, torch globals not known here) raises
:class:`NeedsTorch` as soon as the pickle names it, and the reader reads that
file with torch instead, with the checks it always had.
"""

from __future__ import annotations

import math
import operator
import pickle
from types import FunctionType

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.read.records import FrozenRecord, Record


class NeedsTorch(Exception):
    """The pickle uses a tensor feature that only torch can rebuild and check; read the file with torch."""


class Dtype(FrozenRecord):
    """A torch dtype known by name and item size (``torch.float32`` in a pickle)."""

    FIELDS = ("name", "itemsize")
    name: str
    itemsize: int

    def __init__(self, name: str, itemsize: int) -> None:
        self._set(name=name, itemsize=itemsize)

    def __str__(self) -> str:
        return f"torch.{self.name}"

    __repr__ = __str__


#: torch dtype -> (item size, the legacy typed storage torch.save names for it, or None:
#: those are saved as an ``UntypedStorage`` rebuilt with ``_rebuild_tensor_v3``).
#: tests/test_tensorrefs.py checks this table against the installed torch.
DTYPES: dict[str, tuple[int, str | None]] = {
    "float64": (8, "DoubleStorage"),
    "float32": (4, "FloatStorage"),
    "float16": (2, "HalfStorage"),
    "bfloat16": (2, "BFloat16Storage"),
    "int64": (8, "LongStorage"),
    "int32": (4, "IntStorage"),
    "int16": (2, "ShortStorage"),
    "int8": (1, "CharStorage"),
    "uint8": (1, "ByteStorage"),
    "bool": (1, "BoolStorage"),
    "complex128": (16, "ComplexDoubleStorage"),
    "complex64": (8, "ComplexFloatStorage"),
    "complex32": (4, None),
    "uint16": (2, None),
    "uint32": (4, None),
    "uint64": (8, None),
    "float8_e4m3fn": (1, None),
    "float8_e4m3fnuz": (1, None),
    "float8_e5m2": (1, None),
    "float8_e5m2fnuz": (1, None),
    "float8_e8m0fnu": (1, None),
}
#: dtypes whose tensors may require gradients (torch refuses it for the others).
GRAD_DTYPES = frozenset(
    {"float64", "float32", "float16", "bfloat16", "complex128", "complex64", "complex32"}
    | {name for name in DTYPES if name.startswith("float8")}
)
#: torch dtype -> numpy's (the dtypes numpy has).
NUMPY_DTYPES = {
    "float64": "f8", "float32": "f4", "float16": "f2", "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1",
    "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8", "bool": "?", "complex128": "c16", "complex64": "c8",
}
DTYPE = {name: Dtype(name, size) for name, (size, _) in DTYPES.items()}
STORAGE_DTYPE = {storage: DTYPE[name] for name, (_, storage) in DTYPES.items() if storage}
UNTYPED = Dtype("uint8", 1)  # what an UntypedStorage holds: bytes


class StorageRecord(Record):
    """One storage of a torch file: where its bytes are and what they are (compared by identity).

    ``dtype`` is a torch.dtype when read with torch, a :class:`Dtype` when described; ``offset`` the byte
    offset of the data in the file (``None`` for storages held in memory); ``swapped``: the file holds the
    other byte order (the storage is a swapped copy, not the file's bytes); ``crc32`` the CRC-32 the zip
    archive records for its bytes (``None`` outside zip archives); ``data`` the bytes of a storage held in
    memory (a compressed zip entry), ``read(offset, nbytes) -> bytes`` reads the file opened (described only).
    """

    FIELDS = ("key", "dtype", "nbytes", "offset", "location", "swapped", "crc32", "data", "read")
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __init__(self, key: str, dtype: Any, nbytes: int, offset: int | None, location: str, swapped: bool = False,
                 crc32: int | None = None, data: bytes | None = None, read: Any = None) -> None:
        self.key, self.dtype, self.nbytes, self.offset, self.location = key, dtype, nbytes, offset, location
        self.swapped, self.crc32, self.data, self.read = swapped, crc32, data, read

    def buffer(self) -> bytes:
        """The storage's bytes, as the file holds them (read from the file opened)."""
        if self.data is not None:
            return self.data
        if self.read is None or self.offset is None:
            raise ValueError(f"storage {self.key} has no bytes to read")
        data = self.read(self.offset, self.nbytes)
        if len(data) != self.nbytes:
            raise OSError(f"storage {self.key}: the file ends early (changed on disk?)")
        return data


class TensorRef:
    """A dense tensor of the file, described: its storage, offset, shape, stride and dtype.

    The bounds were checked when it was made: every element it views lies inside
    its storage, which lies inside the file.
    """

    __slots__ = ("storage", "storage_offset", "shape", "stride", "dtype", "requires_grad", "metadata", "__weakref__")
    layout = "strided"

    def __init__(self, storage: StorageRecord, storage_offset: int, shape: tuple[int, ...], stride: tuple[int, ...],
                 dtype: Dtype, requires_grad: bool = False, metadata: dict | None = None) -> None:
        self.storage = storage
        self.storage_offset = storage_offset
        self.shape = shape
        self.stride = stride
        self.dtype = dtype
        self.requires_grad = requires_grad
        self.metadata = metadata

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def is_contiguous(self) -> bool:
        """Whether the elements are C-contiguous (torch's rule: sizes of 1 do not count)."""
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.stride)):
            if size == 0:
                return True
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    def span(self) -> tuple[int, int] | None:
        """``(offset, nbytes)`` of its bytes in the file, or ``None`` when they are not one run of it."""
        record = self.storage
        if not self.is_contiguous() or record.offset is None or record.swapped or record.data is not None:
            return None
        start = self.storage_offset * self.dtype.itemsize
        if start + self.nbytes > record.nbytes:
            return None
        return record.offset + start, self.nbytes

    def crc32(self) -> int | None:
        """The zip CRC-32 of the entry that holds exactly this tensor's bytes, else ``None``."""
        record = self.storage
        if record.crc32 is None or self.span() != (record.offset, record.nbytes):
            return None
        return record.crc32

    def numpy(self) -> Any:
        """Its values as a new numpy array, read from the file (bfloat16 widened to float32).

        For the small tensors pickled among metadata (index collections, supporting
        arrays); model weights are read with :meth:`CheckpointFile.tensor`.

        Raises:
            NeedsTorch: a dtype numpy has no counterpart for (float8, complex32).
        """
        import numpy as np

        data = dense_bytes(self, self.storage.buffer())
        if self.dtype.name == "bfloat16":  # the upper half of a float32
            wide = np.zeros(data.size // 2, dtype="<u4")
            wide[:] = data.view("<u2")
            return (wide << 16).view("<f4").reshape(self.shape)
        if self.dtype.name not in NUMPY_DTYPES:
            raise NeedsTorch(f"a {self.dtype.name} tensor read as numpy")
        return data.view(np.dtype(NUMPY_DTYPES[self.dtype.name]).newbyteorder("=")).reshape(self.shape).copy()

    def __repr__(self) -> str:
        return f"<tensor {self.dtype.name} {self.shape}>"


def is_tensor_ref(obj: Any) -> bool:
    return isinstance(obj, TensorRef)


def is_stand_in(obj: Any) -> bool:
    """Whether ``obj`` is one of the stand-ins below for torch's functions and classes."""
    return isinstance(obj, FunctionType) and obj.__module__ == __name__


# --- the stand-ins of torch's rebuild functions ------------------------------------------


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if type(value) not in (tuple, list) or any(type(n) is not int or n < 0 for n in value):
        raise pickle.UnpicklingError(f"{what} must be a tuple of non-negative integers, got {value!r:.80}")
    return tuple(value)


def _describe(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
              backward_hooks: Any, dtype: Any, metadata: Any) -> TensorRef:
    from anemoi_ckpt_nb.read.rebuilders import _no_hooks

    if not isinstance(storage, StorageRecord) or not isinstance(dtype, Dtype):
        raise pickle.UnpicklingError("a tensor must be rebuilt from a storage of the file and a dtype")
    shape = _ints(size, "a tensor's size")
    strides = _ints(stride, "a tensor's stride")
    if len(strides) != len(shape):
        raise pickle.UnpicklingError(f"a tensor of size {shape} cannot have stride {strides}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise pickle.UnpicklingError(f"a tensor's storage offset must be a non-negative integer, got {storage_offset!r:.40}")
    if type(requires_grad) is not bool:
        raise pickle.UnpicklingError("a tensor's requires_grad must be a bool")
    if requires_grad and dtype.name not in GRAD_DTYPES:
        raise pickle.UnpicklingError(f"a tensor of dtype {dtype.name} cannot require gradients")
    if metadata is not None and type(metadata) is not dict:
        raise pickle.UnpicklingError("a tensor's metadata must be a dict")
    _no_hooks(backward_hooks)  # never installed; refused unless a dict, as with torch
    # torch's set_ checks the same: the last element viewed must lie inside the storage.
    if math.prod(shape):
        end = (storage_offset + sum((n - 1) * s for n, s in zip(shape, strides)) + 1) * dtype.itemsize
    else:
        end = storage_offset * dtype.itemsize
    if end > storage.nbytes:
        raise pickle.UnpicklingError(
            f"a tensor of size {shape} and stride {strides} at offset {storage_offset} needs {end} bytes "
            f"of storage {storage.key}, which holds {storage.nbytes}"
        )
    return TensorRef(storage, storage_offset, shape, strides, dtype, requires_grad, metadata or None)


def rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                      backward_hooks: Any, metadata: Any = None) -> TensorRef:
    """``torch._utils._rebuild_tensor_v2``: a tensor of the storage's own dtype."""
    dtype = storage.dtype if isinstance(storage, StorageRecord) else None
    return _describe(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata)


def rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                      backward_hooks: Any, dtype: Any, metadata: Any = None) -> TensorRef:
    """``torch._utils._rebuild_tensor_v3``: a tensor of ``dtype`` over an untyped storage."""
    return _describe(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata)


def _as_parameter(data: Any, requires_grad: Any) -> TensorRef:
    if not isinstance(data, TensorRef) or type(requires_grad) is not bool:
        raise pickle.UnpicklingError("a parameter is made from a tensor and a bool")
    if requires_grad and data.dtype.name not in GRAD_DTYPES:
        raise pickle.UnpicklingError(f"a parameter of dtype {data.dtype.name} cannot require gradients")
    return TensorRef(data.storage, data.storage_offset, data.shape, data.stride, data.dtype, requires_grad, data.metadata)


def rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> TensorRef:
    """``torch._utils._rebuild_parameter``: the tensor, as a parameter (hooks never installed)."""
    from anemoi_ckpt_nb.read.rebuilders import _no_hooks

    _no_hooks(backward_hooks)
    return _as_parameter(data, requires_grad)


def rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> TensorRef:
    """``torch._utils._rebuild_parameter_with_state``; the attributes are not kept (``tensor()`` detaches)."""
    return rebuild_parameter(data, requires_grad, backward_hooks)


def parameter(data: Any = None, requires_grad: Any = True) -> TensorRef:
    """``torch.nn.Parameter(data, requires_grad)`` as a pickle calls it: only over a tensor of the file."""
    return _as_parameter(data, requires_grad)


def tensor_class(*args: Any, **kwargs: Any) -> Any:
    """``torch.Tensor``: only ever compared (``_rebuild_from_type_v2``); calling it is torch's business."""
    raise NeedsTorch("torch.Tensor is called")


_REBUILDERS = (rebuild_tensor_v2, rebuild_tensor_v3, rebuild_parameter, rebuild_parameter_with_state)


def rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> TensorRef:
    """``torch._tensor._rebuild_from_type_v2`` for the stand-ins above; subclasses stay plain tensors."""
    from anemoi_ckpt_nb.read.placeholders import _unsafe_callable

    if not any(func is f for f in _REBUILDERS):
        raise _unsafe_callable(func)
    if type(args) is not tuple:
        raise pickle.UnpicklingError("rebuild arguments must be a tuple")
    tensor = func(*args)
    if new_type is parameter:
        tensor = _as_parameter(tensor, tensor.requires_grad)
    return tensor


def size(*args: Any) -> tuple[int, ...]:
    """``torch.Size(sizes)``: a tuple of integers."""
    if len(args) > 1:
        raise pickle.UnpicklingError("torch.Size takes one sequence")
    value = args[0] if args else ()
    if type(value) not in (tuple, list) or any(type(n) is not int for n in value):
        raise pickle.UnpicklingError("torch.Size needs a sequence of integers")
    return tuple(value)


def device(*args: Any) -> str:
    """``torch.device("cuda", 0)`` as text (``"cuda:0"``): where a tensor was, never used to place one."""
    if not 1 <= len(args) <= 2 or type(args[0]) is not str or (len(args) == 2 and type(args[1]) is not int):
        raise pickle.UnpicklingError("torch.device takes a type name and an optional index")
    return args[0] if len(args) == 1 or ":" in args[0] else f"{args[0]}:{operator.index(args[1])}"


def globals_table() -> dict[tuple[str, str], Any]:
    """``(module, name) -> stand-in`` for the torch globals a plain ``torch.save`` file names."""
    table: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): rebuild_from_type_v2,
        ("torch.nn.parameter", "Parameter"): parameter,
        ("torch", "Tensor"): tensor_class,
        ("torch._tensor", "Tensor"): tensor_class,
        ("torch", "Size"): size,
        ("torch", "device"): device,
    }
    for name, dtype in DTYPE.items():
        table[("torch", name)] = dtype
    return table


def storage_dtype(name: str) -> Dtype:
    """The dtype of a storage global (``torch.FloatStorage``); quantized ones need torch.

    Raises:
        NeedsTorch: a storage type not known here.
    """
    if name == "UntypedStorage":
        return UNTYPED
    dtype = STORAGE_DTYPE.get(name)
    if dtype is None:
        raise NeedsTorch(f"storage type {name}")
    return dtype


# --- torch only from here: a described tensor made real ------------------------------------


def materialise(ref: TensorRef, untyped: Any) -> Any:
    """The torch tensor ``ref`` describes, viewing ``untyped`` (the storage's bytes, a torch ``UntypedStorage``)."""
    import torch

    tensor = torch.empty((0,), dtype=getattr(torch, ref.dtype.name))
    tensor.set_(untyped, ref.storage_offset, ref.shape, ref.stride)
    if ref.metadata:
        torch._utils.set_tensor_metadata(tensor, ref.metadata)
    return tensor


def dense_bytes(ref: TensorRef, buffer: Any) -> Any:
    """A tensor's elements as C-contiguous bytes (a numpy ``uint8`` array), gathered from its storage.

    For a tensor that is not one run of the file (a strided view, a byte-swapped or
    compressed storage); ``buffer`` holds the storage's bytes in the file's byte order.
    """
    import numpy as np

    item = ref.dtype.itemsize
    raw = np.frombuffer(buffer, dtype=np.uint8)
    elements = raw.view(np.dtype(f"V{item}"))  # numpy has no bfloat16 or float8: the bytes are enough
    view = np.lib.stride_tricks.as_strided(
        elements[ref.storage_offset:], shape=ref.shape, strides=tuple(s * item for s in ref.stride), writeable=False
    )
    dense = np.ascontiguousarray(view).reshape(-1).view(np.uint8)
    if ref.storage.swapped and item > 1:
        dense = dense.reshape(-1, item)[:, ::-1].reshape(-1)
        if ref.dtype.name.startswith("complex"):  # two numbers per element, each swapped on its own
            half = item // 2
            dense = dense.reshape(-1, 2, half)[:, ::-1, :].reshape(-1)
    return np.ascontiguousarray(dense)
