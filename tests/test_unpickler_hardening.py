"""Hostile sizes, hooks and numpy states in a pickle are refused; what torch and numpy write still loads.

* constructors given a size (``torch.Tensor(n)``, ``numpy.ndarray(shape)``, numpy's
  ``_reconstruct`` with a shape, a numpy scalar without its bytes, ...) would allocate
  memory the file does not hold;
* backward hooks named by the file are never installed on a rebuilt tensor;
* numpy trusts a dtype's ``__setstate__`` state (item size, field offsets, object flags), so
  a malformed one must be refused before numpy sees it, and an array's state checked too.

Each hostile file is a real file opened with :func:`open_checkpoint`; each test checks the
error names the file and the refused call.
"""

from __future__ import annotations

import collections
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from anemoi_ckpt_nb.errors import CheckpointReadError, CorruptCheckpointError
from anemoi_ckpt_nb.read.reader import open_checkpoint
from anemoi_ckpt_nb.read.placeholders import is_reference
from anemoi_ckpt_nb.read.torchfile import loads

#: Elements a hostile file asks for: 2**26 float32 is 256 MiB from a file of a few hundred bytes.
BIG = 2**26


# --- building payloads ------------------------------------------------------------


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"\x8a\x08" + struct.pack("<q", value)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


def _newobj(cls: bytes, *args: bytes) -> bytes:
    return cls + b"(" + b"".join(args) + b"t\x81"


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _pickle(expression: bytes, protocol: int = 2) -> bytes:
    return bytes([0x80, protocol]) + expression + b"."


class _Reduce:
    """An object that pickles as ``func(*args)`` (and ``BUILD state`` when given one)."""

    def __init__(self, func, *args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        if self.state is None:
            return self.func, self.args
        return self.func, self.args, self.state


def _checkpoint(tmp_path: Path, payload: object, name: str = "hostile.ckpt", *, legacy: bool = False) -> Path:
    """A training-checkpoint-shaped torch zip (or legacy file) holding ``payload`` in its hyper-parameters."""
    path = tmp_path / name
    torch.save(
        {
            "epoch": 1,
            "global_step": 10,
            "pytorch-lightning_version": "2.5.0",
            "state_dict": {"model.w": torch.ones(3)},
            "optimizer_states": [],
            "hyper_parameters": {"metadata": {"version": "1.0"}, "extra": payload},
        },
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    return path


def _pickle_file(tmp_path: Path, data: bytes, name: str = "hostile.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(path: Path, *fragments: str) -> CorruptCheckpointError:
    with pytest.raises(CorruptCheckpointError) as info:
        open_checkpoint(path).close()
    message = str(info.value)
    assert str(path) in message
    assert "refused" in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


# --- 1. constructors given a size ------------------------------------------------------

SIZED_CONSTRUCTORS = {
    "torch.Tensor(n)": (_pickle(_call(_global("torch", "Tensor"), _int(BIG))), f"torch.Tensor({BIG})"),
    "torch.FloatTensor(n)": (_pickle(_call(_global("torch", "FloatTensor"), _int(BIG))), f"FloatTensor({BIG})"),
    "torch.DoubleTensor(rows, cols)": (
        _pickle(_call(_global("torch", "DoubleTensor"), _int(2**13), _int(2**13))),
        "DoubleTensor(8192, 8192)",
    ),
    "torch.Tensor(torch.Size)": (
        _pickle(_call(_global("torch", "Tensor"), _call(_global("torch", "Size"), _tuple(_int(BIG))))),
        "torch.Tensor(",
    ),
    "NEWOBJ torch.Tensor": (_pickle(_newobj(_global("torch", "Tensor"), _int(BIG))), f"torch.Tensor({BIG})"),
    "NEWOBJ_EX torch.Tensor": (
        _pickle(_global("torch", "Tensor") + _tuple(_int(BIG)) + b"}\x92", protocol=4),
        f"torch.Tensor({BIG})",
    ),
    "copyreg.__newobj__ torch.Tensor": (
        _pickle(_call(_global("copyreg", "__newobj__"), _global("torch", "Tensor"), _int(BIG))),
        f"torch.Tensor({BIG})",
    ),
    "copyreg._reconstructor(Tensor, Tensor, n)": (
        _pickle(_call(_global("copyreg", "_reconstructor"), _global("torch", "Tensor"), _global("torch", "Tensor"), _int(BIG))),
        f"torch.Tensor({BIG})",
    ),
    "NEWOBJ Parameter(n)": (
        _pickle(_newobj(_global("torch.nn.parameter", "Parameter"), _int(BIG))),
        f"Parameter({BIG})",
    ),
    "numpy.ndarray(shape)": (
        _pickle(_call(_global("numpy", "ndarray"), _tuple(_int(BIG)))),
        f"numpy.ndarray(({BIG},))",
    ),
    "NEWOBJ numpy.ndarray": (
        _pickle(_newobj(_global("numpy", "ndarray"), _tuple(_int(2**12), _int(2**14)))),
        "numpy.ndarray((4096, 16384))",
    ),
    "numpy.core _reconstruct(ndarray, shape)": (
        _pickle(_call(_global("numpy.core.multiarray", "_reconstruct"), _global("numpy", "ndarray"), _tuple(_int(BIG)), b"C\x01b")),
        f"_reconstruct(<ndarray>, ({BIG},))",
    ),
    "numpy._core _reconstruct(ndarray, n)": (
        _pickle(_call(_global("numpy._core.multiarray", "_reconstruct"), _global("numpy", "ndarray"), _int(BIG), b"C\x01d")),
        f"_reconstruct(<ndarray>, {BIG})",
    ),
    "numpy scalar without its bytes": (
        _pickle(_call(_global("numpy._core.multiarray", "scalar"), _call(_global("numpy", "dtype"), _str(f"V{BIG}")))),
        f"without its {BIG} bytes",
    ),
    "numpy scalar with too few bytes": (
        _pickle(
            _call(
                _global("numpy.core.multiarray", "scalar"),
                _call(_global("numpy", "dtype"), _str(f"V{BIG}")),
                b"C\x03abc",
            )
        ),
        f"without its {BIG} bytes",
    ),
}


@pytest.mark.parametrize("name", sorted(SIZED_CONSTRUCTORS))
def test_constructors_given_a_size_are_refused(name, tmp_path):
    payload, call = SIZED_CONSTRUCTORS[name]
    _refused(_pickle_file(tmp_path, payload), call)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_sized_constructor_inside_a_torch_checkpoint_is_refused(tmp_path, legacy):
    path = _checkpoint(tmp_path, _Reduce(torch.Tensor, BIG), legacy=legacy)
    _refused(path, f"torch.Tensor({BIG})", "allocates memory the file does not hold")
    path = _checkpoint(tmp_path, _Reduce(np.ndarray, (BIG,)), name="array.ckpt", legacy=legacy)
    _refused(path, f"numpy.ndarray(({BIG},))")


def test_constructors_without_a_size_still_read():
    assert loads(_pickle(_call(_global("torch", "Tensor")))).shape == (0,)
    assert loads(_pickle(_newobj(_global("torch", "Tensor")))).shape == (0,)
    assert loads(_pickle(_newobj(_global("torch.nn.parameter", "Parameter")))).shape == (0,)
    empty = loads(_pickle(_call(_global("numpy", "ndarray"), _tuple(_int(0), _int(BIG)))))
    assert empty.shape == (0, BIG) and empty.nbytes == 0


@pytest.mark.filterwarnings("ignore::UserWarning")  # quantized tensors and TypedStorage are deprecated
def test_a_quantized_tensor_larger_than_its_storage_is_refused(tmp_path):
    # torch allocates a quantized tensor of the size given before pointing it at the storage.
    quantized = torch.quantize_per_tensor(torch.zeros(4), 1.0, 0, torch.qint8)
    args = (quantized.storage(), 0, (BIG,), (0,), (torch.per_tensor_affine, 1.0, 0), False, collections.OrderedDict())
    path = _checkpoint(tmp_path, _Reduce(torch._utils._rebuild_qtensor, *args))
    _refused(path, "_rebuild_qtensor", f"{BIG} elements", "its storage holds 4")

    fine = _checkpoint(tmp_path, torch.quantize_per_tensor(torch.arange(6.0), 0.5, 0, torch.qint8), name="q.ckpt")
    with open_checkpoint(fine) as checkpoint:
        tensor = checkpoint.raw["hyper_parameters"]["extra"]
        assert torch.equal(tensor.dequantize(), torch.arange(6.0))


def test_a_dtype_conversion_of_an_expanded_tensor_is_refused(tmp_path):
    # One float stored, 2**26 claimed by a stride-0 view; .to(float64) would make 512 MiB of it.
    expanded = torch.zeros(1).expand(BIG)
    path = _checkpoint(tmp_path, _Reduce(torch._utils._rebuild_device_tensor_from_cpu_tensor, expanded, torch.float64, "cpu", False))
    _refused(path, "_rebuild_device_tensor_from_cpu_tensor", "from 4 bytes in the file")

    ordinary = _Reduce(torch._utils._rebuild_device_tensor_from_cpu_tensor, torch.arange(5.0), torch.float64, "cpu", False)
    path = _checkpoint(tmp_path, ordinary, name="ordinary.ckpt")
    with open_checkpoint(path) as checkpoint:
        tensor = checkpoint.raw["hyper_parameters"]["extra"]
        assert tensor.dtype == torch.float64 and torch.equal(tensor, torch.arange(5.0, dtype=torch.float64))


# --- 2. backward hooks ----------------------------------------------------------------


def _hooks() -> collections.OrderedDict:
    # math.sqrt reads as an inert reference; installed as a hook, autograd would try to call it.
    return collections.OrderedDict([(0, math.sqrt)])


def _stored(tensor: torch.Tensor):
    return torch.storage.TypedStorage(wrap_storage=tensor.untyped_storage(), dtype=tensor.dtype, _internal=True)


HOOKED = {
    "_rebuild_parameter": lambda: _Reduce(torch._utils._rebuild_parameter, torch.ones(3), True, _hooks()),
    "_rebuild_parameter_with_state": lambda: _Reduce(
        torch._utils._rebuild_parameter_with_state, torch.ones(3), True, _hooks(), {"note": "kept"}
    ),
    "_rebuild_tensor_v2": lambda: _Reduce(
        torch._utils._rebuild_tensor_v2, _stored(torch.ones(3)), 0, (3,), (1,), False, _hooks()
    ),
    "_rebuild_tensor_v3": lambda: _Reduce(
        torch._utils._rebuild_tensor_v3, _stored(torch.ones(3)), 0, (3,), (1,), False, _hooks(), torch.float32
    ),
}


@pytest.mark.parametrize("rebuilder", sorted(HOOKED))
def test_backward_hooks_from_the_file_are_never_installed(rebuilder, tmp_path):
    path = _checkpoint(tmp_path, HOOKED[rebuilder]())
    with open_checkpoint(path) as checkpoint:
        tensor = checkpoint.raw["hyper_parameters"]["extra"]
        assert torch.equal(tensor.detach(), torch.ones(3))
        assert type(tensor._backward_hooks) is collections.OrderedDict
        assert len(tensor._backward_hooks) == 0
        assert ("math", "sqrt") in checkpoint.opaque_classes  # named by the file, shown, never used
        if rebuilder == "_rebuild_parameter_with_state":
            assert tensor.note == "kept"


def test_hooks_given_to_a_parameter_through_build_are_never_installed(tmp_path):
    hooks = _call(_global("collections", "OrderedDict"), b"]K\x00" + _global("math", "sqrt") + b"\x86a")
    payload = _pickle(_newobj(_global("torch.nn.parameter", "Parameter")) + _tuple(b"\x89", b"N", hooks) + b"b")
    parameter = loads(payload)
    assert isinstance(parameter, torch.nn.Parameter)
    assert parameter.requires_grad is False
    assert type(parameter._backward_hooks) is collections.OrderedDict and len(parameter._backward_hooks) == 0


def test_hooks_that_are_not_a_dict_are_a_corrupt_file(tmp_path):
    path = _checkpoint(tmp_path, _Reduce(torch._utils._rebuild_parameter, torch.ones(3), True, [math.sqrt]))
    _refused(path, "backward hooks must be a dict")


def test_the_parameters_torch_writes_still_read(tmp_path):
    layer = torch.nn.Linear(3, 2)
    layer.weight.register_hook(lambda grad: grad)  # torch.save leaves hooks out
    path = tmp_path / "model.ckpt"
    torch.save({"weight": layer.weight, "bias": layer.bias, "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False)}, path)
    with open_checkpoint(path) as checkpoint:
        raw = checkpoint.raw
        assert isinstance(raw["weight"], torch.nn.Parameter) and torch.equal(raw["weight"].detach(), layer.weight.detach())
        assert raw["frozen"].requires_grad is False
        assert all(len(p._backward_hooks) == 0 for p in raw.values())


# --- 3. numpy dtype and array states -----------------------------------------------------

BAD_DTYPE_STATES = {
    # (constructor argument, state): numpy's __setstate__ accepts every one of these.
    "item size of a terabyte": ("V1", (3, "|", None, None, None, 2**40, 1, 0)),
    "field past the end of the item": ("V4", (3, "|", None, ("a",), {"a": (np.dtype("f8"), 100)}, 4, 1, 16)),
    "object flags on a float": ("f8", (3, "<", None, None, None, -1, -1, 63)),
    "flags beyond numpy's": ("f8", (3, "<", None, None, None, -1, -1, 2**40)),
    "subarray larger than the item": ("V24", (3, "|", (np.dtype("f4"), (10**6, 10**6)), None, None, 24, 4, 0)),
    "fields on a float": ("f8", (3, "|", None, ("a",), {"a": (np.dtype("f8"), 0)}, 8, 1, 16)),
    "odd unicode size": ("U1", (3, "<", None, None, None, 6, 4, 8)),
    "field format that is no dtype": ("V8", (3, "|", None, ("a",), {"a": ("f8", 0)}, 8, 1, 16)),
}


@pytest.mark.parametrize("name", sorted(BAD_DTYPE_STATES))
def test_malformed_dtype_states_are_refused(name, tmp_path):
    argument, state = BAD_DTYPE_STATES[name]
    payload = pickle.dumps(_Reduce(np.dtype, argument, False, True, state=state), protocol=2)
    _refused(_pickle_file(tmp_path, payload), "numpy dtype")
    # inside a torch checkpoint, the same
    _refused(_checkpoint(tmp_path, _Reduce(np.dtype, argument, False, True, state=state)), "numpy dtype")


@pytest.mark.parametrize(
    "state",
    ["not a tuple", (3,), (9, "<", None, None, None, -1, -1, 0), (3, "?", None, None, None, -1, -1, 0), (3, "<", 5, None, None, -1, -1, 0)],
    ids=["text", "short", "version 9", "byte order ?", "subarray 5"],
)
def test_dtype_states_of_the_wrong_shape_are_a_corrupt_file(state, tmp_path):
    payload = pickle.dumps(_Reduce(np.dtype, "f8", False, True, state=state), protocol=2)
    _refused(_pickle_file(tmp_path, payload), "numpy dtype")


#: The dtypes numpy pickles: every builtin type code, byte orders, sizes, datetime units,
#: structured (aligned, with offsets, titles, nested, object fields), subarrays, metadata.
DTYPES = [np.dtype(code) for code in "?bBhHiIlLqQefdgFDGOSUVMm"] + [
    np.dtype(">i4"),
    np.dtype("<f2"),
    np.dtype(">c8"),
    np.dtype("U5"),
    np.dtype(">U3"),
    np.dtype("S7"),
    np.dtype("V12"),
    np.dtype("M8[ns]"),
    np.dtype(">M8[10ms]"),
    np.dtype("m8[D]"),
    np.dtype("M8[Y]"),
    np.dtype([("a", "<f4"), ("b", "i1")]),
    np.dtype([("a", "<f4"), ("b", "i1")], align=True),
    np.dtype([(("title", "a"), "f4"), ("b", ">i8")]),
    np.dtype([("x", [("y", "<i2")]), ("z", "O")]),
    np.dtype(("f4", (2, 3))),
    np.dtype([("s", "f8", (3,)), ("n", "U4")]),
    np.dtype({"names": ["a", "b"], "formats": ["f4", "u1"], "offsets": [8, 0], "itemsize": 16}),
    np.dtype("f8", metadata={"unit": "K"}),
    np.dtype([("a", "M8[s]"), ("b", "m8[us]")]),
    np.dtype([]),
]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_the_dtypes_numpy_writes_still_read(protocol):
    for dtype in DTYPES:
        loaded = loads(pickle.dumps(dtype, protocol=protocol))
        assert loaded == dtype and loaded.itemsize == dtype.itemsize, dtype
        assert loaded.__reduce__() == dtype.__reduce__(), dtype


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_arrays_and_scalars_numpy_writes_still_read(protocol):
    for dtype in DTYPES:
        if dtype.itemsize == 0:
            continue
        # Compared with what the ordinary unpickler makes of the same bytes (numpy swaps byte order on load).
        data = pickle.dumps(np.zeros(3, dtype=dtype), protocol=protocol)
        loaded, expected = loads(data), pickle.loads(data)
        assert loaded.shape == expected.shape and loaded.dtype == expected.dtype, dtype
        assert loaded.tobytes() == expected.tobytes() or dtype.hasobject, dtype
        data = pickle.dumps(np.zeros(3, dtype=dtype)[0], protocol=protocol)
        scalar, expected = loads(data), pickle.loads(data)
        assert type(scalar) is type(expected) and getattr(scalar, "dtype", None) == getattr(expected, "dtype", None), dtype
    values = {"f": np.float32(1.5), "i": np.int64(-3), "t": np.datetime64("2020-01-01"), "s": np.str_("ab"), "o": np.array([1, "a"], dtype=object)}
    loaded = loads(pickle.dumps(values, protocol=protocol))
    assert loaded["f"] == values["f"] and loaded["i"] == values["i"] and loaded["t"] == values["t"] and loaded["s"] == "ab"
    assert loaded["o"].tolist() == [1, "a"]


def test_an_array_of_zero_byte_items_beyond_a_small_count_is_refused(tmp_path):
    # 10**15 items of dtype([]) take no bytes in the file; tolist() would make 10**15 objects.
    empty = _call(_global("numpy._core.multiarray", "_reconstruct"), _global("numpy", "ndarray"), _tuple(_int(0)), b"C\x01b")
    state = _tuple(b"K\x01", _tuple(_int(10**15)), _call(_global("numpy", "dtype"), _str("S0")), b"\x89", b"C\x00")
    _refused(_pickle_file(tmp_path, _pickle(empty + state + b"b")), "zero-byte items")
    small = loads(pickle.dumps(np.empty(3, dtype=[]), protocol=2))
    assert small.shape == (3,)


def test_setstate_on_an_array_that_holds_data_is_refused(tmp_path):
    # setstate frees the buffer, which a tensor made from the array (torch.from_numpy) may still use.
    array = _call(
        _global("numpy._core.numeric", "_frombuffer"), b"C\x04abcd", _call(_global("numpy", "dtype"), _str("u1")), _tuple(b"K\x04"), _str("C")
    )
    state = _tuple(b"K\x01", _tuple(b"K\x02"), _call(_global("numpy", "dtype"), _str("u1")), b"\x89", b"C\x02xy")
    _refused(_pickle_file(tmp_path, _pickle(array + state + b"b")), "already holds data")


def test_refusals_are_read_errors_the_cli_reports(tmp_path):
    error = _refused(_pickle_file(tmp_path, SIZED_CONSTRUCTORS["torch.Tensor(n)"][0]))
    assert isinstance(error, CheckpointReadError) and error.hint
    assert "nothing from the file was run" in str(error)


def test_a_reference_in_a_refused_file_is_not_left_behind():
    # The stand-ins keep the allow-list: a rebuilt model still keeps its functions by name.
    loaded = loads(pickle.dumps({"activation": math.sqrt}, protocol=2))
    assert is_reference(loaded["activation"])
