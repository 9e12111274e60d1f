"""Malicious pickles are refused and nothing from them runs; ordinary data still loads.

Every payload here creates a marker file when loaded the ordinary way. Each
test first proves that (``torch.load``/``pickle.loads`` in a child process,
working directory ``tmp_path``), then opens the same file with the reader and
checks that it raises :class:`UnsafePickleError` naming the file and a refused
global, and that the marker was not created.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import functools
import io
import math
import operator
import os
import pathlib
import pickle
import shlex
import struct
import subprocess
import sys
import textwrap
import typing
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils.checkpoint

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.read.classmap import state_dict, to_plain
from anemoi_ckpt_nb.errors import UnsafePickleError
from anemoi_ckpt_nb.read.reader import open_checkpoint
from anemoi_ckpt_nb.read.placeholders import Placeholder, is_placeholder, is_reference
from anemoi_ckpt_nb.read.torchfile import loads

MARKER = "PWNED"

# --- building payloads ------------------------------------------------------------


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


def _pickle(expression: bytes, protocol: int = 2) -> bytes:
    return bytes([0x80, protocol]) + expression + b"."


def _touch(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def _open_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


class _Reduce:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def _evil_checkpoint(marker: Path) -> dict:
    """A training-checkpoint-shaped dict with os.system hidden in hyper_parameters."""
    return {
        "epoch": 1,
        "global_step": 10,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": {"model.w": torch.ones(3)},
        "optimizer_states": [],
        "hyper_parameters": {"metadata": {"version": "1.0", "extra": _Reduce(os.system, _touch(marker))}},
    }


def plain_payloads(tmp: Path, marker: Path) -> dict[str, bytes]:
    """Plain pickles, each creating ``marker`` when unpickled normally (cwd = ``tmp``)."""
    _write_module(tmp, "marker_module", f"open({str(marker)!r}, 'w').close()\n")
    (tmp / "script.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp / "source.txt").write_text("x")
    inner = pickle.dumps(_Reduce(os.system, _touch(marker)), protocol=2)
    evil_ckpt = tmp / "inner-evil.ckpt"
    torch.save(_evil_checkpoint(marker), evil_ckpt)
    return {
        "os.system": _pickle(_call(_global("os", "system"), _str(_touch(marker)))),
        "posix.system": pickle.dumps(_Reduce(os.system, _touch(marker)), protocol=2),
        "subprocess.call": pickle.dumps(_Reduce(subprocess.call, ["touch", str(marker)]), protocol=2),
        "subprocess.Popen": pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(marker)]), protocol=2),
        "builtins.eval": pickle.dumps(_Reduce(eval, _open_code(marker)), protocol=2),
        "builtins.exec": pickle.dumps(_Reduce(exec, _open_code(marker)), protocol=2),
        "builtins.open": pickle.dumps(_Reduce(open, str(marker), "w"), protocol=2),
        "getattr(__import__('os'), 'system')": _pickle(
            _call(
                _call(_global("builtins", "getattr"), _call(_global("builtins", "__import__"), _str("os")), _str("system")),
                _str(_touch(marker)),
            )
        ),
        "importlib.import_module": _pickle(_call(_global("importlib", "import_module"), _str("marker_module"))),
        "runpy.run_path": _pickle(_call(_global("runpy", "run_path"), _str(str(tmp / "script.py")))),
        "pickle.loads": _pickle(_call(_global("pickle", "loads"), _bytes(inner)), protocol=3),
        "shutil.copyfile": _pickle(_call(_global("shutil", "copyfile"), _str(str(tmp / "source.txt")), _str(str(marker)))),
        "functools.partial(os.system)": pickle.dumps(_Reduce(functools.partial(os.system, _touch(marker))), protocol=2),
        "numpy runstring": _pickle(
            _call(_global("numpy.testing._private.utils", "runstring"), _str(_open_code(marker)), b"}")
        ),
        "partial(torch.load)": pickle.dumps(
            _Reduce(functools.partial(torch.load, weights_only=False), str(evil_ckpt)), protocol=2
        ),
        "torch.storage._load_from_bytes": _pickle(
            _call(_global("torch.storage", "_load_from_bytes"), _bytes(_torch_bytes(_evil_checkpoint(marker)))),
            protocol=3,
        ),
        "protocol 0 INST": f"(S{_touch(marker)!r}\nios\nsystem\n.".encode(),
        # torch and numpy functions that write files are refused as soon as they are named.
        "torch.save": pickle.dumps(_Reduce(torch.save, {"w": 1}, str(marker)), protocol=2),
        "torch.from_file": pickle.dumps(_Reduce(torch.from_file, str(marker), True, 4), protocol=2),
        "numpy.savetxt": pickle.dumps(_Reduce(np.savetxt, str(marker), np.zeros(1)), protocol=2),
    }


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _unpickle_normally(paths: list[Path], *, torch_file: bool) -> None:
    """The control: load each file the ordinary, unsafe way, in one child process, from its own folder."""
    loader = "torch.load(p, weights_only=False)" if torch_file else "pickle.loads(open(p, 'rb').read())"
    code = textwrap.dedent(
        f"""
        import os, pickle, sys, torch
        for p in sys.argv[1:]:
            os.chdir(os.path.dirname(p))
            sys.path.insert(0, os.path.dirname(p))
            try:
                result = {loader}
                if hasattr(result, "wait"):
                    result.wait()
            except BaseException:
                pass
            sys.path.pop(0)
        """
    )
    subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, timeout=300)


def _assert_refused(path: Path, marker: Path) -> UnsafePickleError:
    with pytest.raises(UnsafePickleError) as caught:
        open_checkpoint(path)
    assert not marker.exists(), "the payload ran"
    error = caught.value
    assert error.path == str(path)
    assert str(path) in str(error)
    assert f"{error.module}.{error.name}" in str(error)
    return error


# --- the tests ----------------------------------------------------------------------

PLAIN_NAMES = [
    "os.system",
    "posix.system",
    "subprocess.call",
    "subprocess.Popen",
    "builtins.eval",
    "builtins.exec",
    "builtins.open",
    "getattr(__import__('os'), 'system')",
    "importlib.import_module",
    "runpy.run_path",
    "pickle.loads",
    "shutil.copyfile",
    "functools.partial(os.system)",
    "numpy runstring",
    "partial(torch.load)",
    "torch.storage._load_from_bytes",
    "protocol 0 INST",
    "torch.save",
    "torch.from_file",
    "numpy.savetxt",
]

EXPECTED_REFUSED_MODULE = {
    "os.system": "os",
    "posix.system": "posix",
    "subprocess.call": "subprocess",
    "subprocess.Popen": "subprocess",
    "builtins.eval": "builtins",
    "builtins.exec": "builtins",
    "builtins.open": "io",  # open is io.open
    "getattr(__import__('os'), 'system')": "builtins",
    "importlib.import_module": "importlib",
    "runpy.run_path": "runpy",
    "pickle.loads": "pickle",
    "shutil.copyfile": "shutil",
    "functools.partial(os.system)": "posix",
    "numpy runstring": "numpy.testing._private.utils",
    "partial(torch.load)": "torch.serialization",
    "torch.storage._load_from_bytes": "posix",
    "protocol 0 INST": "os",
    "torch.save": "torch.serialization",
    "torch.from_file": "torch",  # getattr(torch._C._VariableFunctionsClass, "from_file")
    "numpy.savetxt": "numpy",
}


def _zip_with_evil_hyper_parameters(path: Path, marker: Path) -> None:
    torch.save(_evil_checkpoint(marker), path)


def _zip_with_evil_callback(path: Path, marker: Path) -> None:
    checkpoint = _evil_checkpoint(marker)
    checkpoint["hyper_parameters"] = {}
    checkpoint["callbacks"] = {"Evil": _Reduce(subprocess.call, ["touch", str(marker)])}
    torch.save(checkpoint, path)


def _legacy_torch_file(path: Path, marker: Path) -> None:
    torch.save(_evil_checkpoint(marker), path, _use_new_zipfile_serialization=False)


def _inference_with_evil_module(path: Path, marker: Path) -> None:
    model = torch.nn.Linear(2, 2)
    model.hook = _Reduce(os.system, _touch(marker))
    torch.save(model, path)


TORCH_FILES = {
    "zip-hyper_parameters": _zip_with_evil_hyper_parameters,
    "zip-callbacks": _zip_with_evil_callback,
    "legacy-format": _legacy_torch_file,
    "pickled-model": _inference_with_evil_module,
}


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> dict[str, tuple[Path, Path, bool]]:
    """``name -> (file, marker, whether loading it normally created the marker)``.

    All controls run in one child process (importing torch once), each from its own folder.
    """
    made: dict[str, tuple[Path, Path]] = {}
    for number, name in enumerate(PLAIN_NAMES):
        folder = tmp_path_factory.mktemp(f"plain{number}")
        marker = folder / MARKER
        path = folder / "evil.pkl"
        path.write_bytes(plain_payloads(folder, marker)[name])
        made[name] = (path, marker)
    for name, write in TORCH_FILES.items():
        folder = tmp_path_factory.mktemp(name)
        marker = folder / MARKER
        write(folder / "evil.ckpt", marker)
        made[name] = (folder / "evil.ckpt", marker)
    _unpickle_normally([made[n][0] for n in PLAIN_NAMES], torch_file=False)
    _unpickle_normally([made[n][0] for n in TORCH_FILES], torch_file=True)
    result = {}
    for name, (path, marker) in made.items():
        result[name] = (path, marker, marker.exists())
        marker.unlink(missing_ok=True)
    return result


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_malicious_plain_pickle_is_refused_and_nothing_runs(name, payloads):
    path, marker, control_ran = payloads[name]
    assert control_ran, f"control failed: {name} does not create the marker when unpickled normally"
    error = _assert_refused(path, marker)
    assert error.module == EXPECTED_REFUSED_MODULE[name]


@pytest.mark.parametrize("name", list(TORCH_FILES))
def test_malicious_torch_file_is_refused_and_nothing_runs(name, payloads):
    path, marker, control_ran = payloads[name]
    assert control_ran, "control failed: torch.load does not run the payload"
    _assert_refused(path, marker)


#: Appended to a writer script: remove the marker its import made, then load the file the unsafe way.
_CONTROL = """
import os
if os.path.exists("PWNED"):
    os.remove("PWNED")
torch.load("thing.ckpt", weights_only=False)
"""


def test_setstate_of_an_importable_class_never_runs(tmp_path, monkeypatch):
    """A class whose module and __setstate__ would create the marker stays a placeholder."""
    marker = tmp_path / MARKER
    _write_module(
        tmp_path,
        "evil_setstate",
        f"""
        open({str(marker)!r}, 'w').close()  # on import

        class Thing:
            def __setstate__(self, state):
                open({str(marker)!r}, 'w').close()
        """,
    )
    code = textwrap.dedent(
        """
        import pickle, evil_setstate, torch
        thing = evil_setstate.Thing.__new__(evil_setstate.Thing)
        thing.__dict__["x"] = 1
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 1, "hyper_parameters": {"thing": thing}}, "thing.ckpt")
        """
    )
    subprocess.run([sys.executable, "-c", code + _CONTROL], cwd=tmp_path, check=True, capture_output=True)
    assert marker.exists(), "control failed: loading normally calls __setstate__"
    marker.unlink()

    monkeypatch.syspath_prepend(str(tmp_path))  # importable, yet the reader must not import it
    with open_checkpoint(tmp_path / "thing.ckpt") as checkpoint:
        thing = checkpoint.raw["hyper_parameters"]["thing"]
        assert is_placeholder(thing)
        assert thing.ph_path == "evil_setstate.Thing"
        assert thing.ph_state == {"x": 1}
        assert ("evil_setstate", "Thing") in checkpoint.opaque_classes
    assert "evil_setstate" not in sys.modules
    assert not marker.exists()


def test_dangerous_callable_in_placeholder_state_is_refused(tmp_path):
    marker = tmp_path / MARKER
    _write_module(
        tmp_path,
        "evil_state",
        """
        class Thing:
            def __setstate__(self, state):
                state["run"](state["command"])
        """,
    )
    code = textwrap.dedent(
        f"""
        import os, evil_state, torch
        thing = evil_state.Thing.__new__(evil_state.Thing)
        thing.__dict__.update(run=os.system, command={_touch(marker)!r})
        torch.save({{"state_dict": {{}}, "epoch": 1, "hyper_parameters": {{"thing": thing}}}}, "thing.ckpt")
        """
    )
    subprocess.run([sys.executable, "-c", code + _CONTROL], cwd=tmp_path, check=True, capture_output=True)
    assert marker.exists(), "control failed: loading normally calls os.system"
    marker.unlink()

    error = _assert_refused(tmp_path / "thing.ckpt", marker)
    assert (error.module, error.name) == ("posix", "system")


@pytest.mark.parametrize(
    "module, name",
    [
        ("torch", "load"),
        ("torch", "save"),
        ("torch.hub", "load"),
        ("torch._C", "_jit_pass_inline"),
        ("torch.jit", "load"),
        ("torch.serialization", "load"),
        ("torch.fx.graph_module", "reduce_graph_module"),
        ("torch.nn.functional", "gelu"),
        ("numpy", "load"),
        ("numpy", "frompyfunc"),
        ("socket", "socket"),
        ("sys", "exit"),
        ("nt", "system"),
        ("builtins", "compile"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("__builtin__", "eval"),
        ("types", "FunctionType"),
        ("marshal", "loads"),
        ("ctypes", "CDLL"),
        ("dill._dill", "_create_function"),
        ("copyreg", "_reconstructor_evil"),
        ("operator", "attrgetter"),
        ("operator", "methodcaller"),
        ("importlib.util", "spec_from_file_location"),
    ],
)
def test_dangerous_globals_are_refused_by_name(module, name, tmp_path):
    path = tmp_path / "global.pkl"
    path.write_bytes(_pickle(_call(_global(module, name), _str("x"))))
    with pytest.raises(UnsafePickleError) as caught:
        open_checkpoint(path)
    assert caught.value.path == str(path)
    assert f"{module}.{name}" in str(caught.value) or caught.value.module == "builtins"


def test_referring_to_a_refused_global_without_calling_it_is_refused(tmp_path):
    path = tmp_path / "ref.pkl"
    path.write_bytes(_pickle(b"}" + _str("f") + _global("posix", "system") + b"s"))
    with pytest.raises(UnsafePickleError):
        open_checkpoint(path)


def test_build_on_a_class_object_is_refused(tmp_path):
    # BUILD with slot state on a class would setattr on it (monkey-patching a real class).
    payload = _pickle(_global("collections", "Counter") + b"N}" + _str("__init__") + _global("collections", "OrderedDict") + b"s\x86b")
    with pytest.raises(UnsafePickleError):
        loads(payload)


# --- ordinary data still loads ----------------------------------------------------------


class Colour(enum.Enum):
    RED = 1


SAFE_VALUES = {
    "OrderedDict": collections.OrderedDict(a=1, b=[1, 2]),
    "defaultdict": collections.defaultdict(list, {"a": [1]}),
    "Counter": collections.Counter("abca"),
    "deque": collections.deque([1, 2, 3], maxlen=5),
    "set": {1, 2, 3},
    "frozenset": frozenset({"a"}),
    "complex": 1 + 2j,
    "bytes": b"\x00\xffabc",
    "bytearray": bytearray(b"xyz"),
    "slice": slice(1, 10, 2),
    "datetime": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc),
    "date": datetime.date(2020, 1, 1),
    "timedelta": datetime.timedelta(hours=6),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": decimal.Decimal("1.25"),
    "NoneType": type(None),
    "Ellipsis": ...,
    "numpy array": np.arange(6, dtype=np.float32).reshape(2, 3),
    "numpy scalar": np.float64(2.5),
    "numpy int": np.int64(7),
    "numpy dtype": np.dtype("int16"),
    "tensor": torch.arange(4.0),
    "torch dtype": torch.bfloat16,
    "torch size": torch.Size([2, 3]),
    "torch device": torch.device("cpu"),
}


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("name", sorted(SAFE_VALUES))
def test_ordinary_values_load_as_themselves(name, protocol):
    value = SAFE_VALUES[name]
    loaded = loads(pickle.dumps(value, protocol=protocol))
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(loaded, value)
        assert loaded.dtype == value.dtype
    elif isinstance(value, torch.Tensor):
        assert torch.equal(loaded, value)
    else:
        assert loaded == value
        assert type(loaded) is type(value)


def test_paths_become_pure_paths():
    loaded = loads(pickle.dumps(pathlib.PosixPath("/data/x.zarr"), protocol=2))
    assert loaded == pathlib.PurePosixPath("/data/x.zarr")
    assert not hasattr(loaded, "unlink")


def test_unknown_classes_enums_and_typing_become_placeholders():
    value = {"colour": Colour.RED, "hint": typing.Dict[str, typing.Any], "maybe": typing.Optional[int]}
    loaded = loads(pickle.dumps(value, protocol=2))
    assert isinstance(loaded["colour"], Placeholder)
    assert loaded["colour"].ph_path == f"{__name__}.Colour"
    assert loaded["colour"].ph_args == (1,)
    assert to_plain(loaded["hint"]) == "typing.Dict[str, typing.Any]"
    assert to_plain(loaded["maybe"]).startswith("typing.Union[")


def test_functools_partial_of_a_harmless_class_is_inert():
    loaded = loads(pickle.dumps(functools.partial(Colour, 1), protocol=2))
    assert is_placeholder(loaded) and loaded.ph_path == "functools.partial"


@pytest.mark.parametrize(
    "value",
    [
        _Reduce(list, torch.zeros(3)),
        _Reduce(collections.defaultdict, torch._utils._rebuild_tensor_v2),
        _Reduce(bytearray, 10**9),
        _Reduce(type, "Evil", (object,), {}),
    ],
    ids=["list(tensor)", "defaultdict(rebuilder)", "bytearray(size)", "type(name, bases, dict)"],
)
def test_allowed_callables_are_narrowed(value):
    """Allow-listed constructors refuse the arguments that would make them build classes or eat memory."""
    from anemoi_ckpt_nb.errors import CorruptCheckpointError

    with pytest.raises(CorruptCheckpointError):
        loads(pickle.dumps(value, protocol=2))


# --- functions a model keeps as attributes: inert references, refused when called -------------

#: A function -> the ``module.name`` its reference carries (as pickle names it).
FUNCTION_REFERENCES = {
    "torch.nn.functional.gelu": (torch.nn.functional.gelu, "torch._C._nn.gelu"),
    "torch.nn.functional.silu": (torch.nn.functional.silu, "torch.nn.functional.silu"),
    "torch.relu": (torch.relu, "torch.relu"),  # getattr(torch._C._VariableFunctionsClass, "relu")
    "torch.Tensor.add": (torch.Tensor.add, "torch.Tensor.add"),  # getattr(torch._C.TensorBase, "add")
    "torch.utils.checkpoint.checkpoint": (torch.utils.checkpoint.checkpoint, "torch.utils.checkpoint.checkpoint"),
    "torch.nn.init.xavier_uniform_": (torch.nn.init.xavier_uniform_, "torch.nn.init.xavier_uniform_"),
    "torch.fft.fft": (torch.fft.fft, "torch._C._fft.fft_fft"),
    "torch.set_default_dtype": (torch.set_default_dtype, "torch.set_default_dtype"),
    "numpy.add": (np.add, "numpy.add"),
    "math.sqrt": (math.sqrt, "math.sqrt"),
    "operator.add": (operator.add, "_operator.add"),
}


@pytest.mark.parametrize("name", list(FUNCTION_REFERENCES))
def test_a_function_stored_on_a_pickled_model_reads_as_an_inert_reference(name, tmp_path):
    function, path_in_file = FUNCTION_REFERENCES[name]
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.GELU())
    model.activation = function
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.kind == "inference"
        assert list(checkpoint.weights) == list(model.state_dict())
        reference = state_dict(checkpoint.raw)["activation"]
        assert is_reference(reference)
        assert not callable(reference)
        assert reference.ph_path == path_in_file
        assert reference.ph_original in checkpoint.opaque_classes
        assert f"{reference.ph_original[0]}.{reference.ph_original[1]}" in checkpoint.summary()["opaque_classes"]
        assert to_plain(reference) == path_in_file


def test_the_example_inference_checkpoint_keeps_its_activation_function(tmp_path):
    written = examples.write_inference_checkpoint(tmp_path / "inference.ckpt", weights_bytes=20_000)
    with open_checkpoint(written.path) as checkpoint:
        assert checkpoint.kind == "inference"
        assert list(checkpoint.weights) == written.state_dict_names
        encoder_processor_decoder = state_dict(state_dict(checkpoint.raw)["_modules"]["model"])
        activation = encoder_processor_decoder["activation"]
        assert is_reference(activation) and activation.ph_path == "torch._C._nn.gelu"
        layer = encoder_processor_decoder["_modules"]["activation_layer"]
        assert layer.ph_path == "torch.nn.modules.activation.GELU"
        assert {("torch._C._nn", "gelu"), ("torch.nn.modules.activation", "GELU")} <= set(checkpoint.opaque_classes)


def test_functools_partial_of_a_torch_function_is_inert():
    value = {"act": functools.partial(torch.nn.functional.gelu, approximate="tanh")}
    loaded = loads(pickle.dumps(value, protocol=2))["act"]
    assert is_placeholder(loaded) and loaded.ph_path == "functools.partial"
    assert is_reference(loaded.ph_args[0]) and loaded.ph_args[0].ph_path == "torch._C._nn.gelu"
    assert to_plain(loaded)["state"][:3] == ["torch._C._nn.gelu", [], {"approximate": "tanh"}]


GELU = _global("torch._C._nn", "gelu")
RELU = _call(_global("builtins", "getattr"), _global("torch._C", "_VariableFunctionsClass"), _str("relu"))

#: Each way a pickle could call (or hand state to) a function it names -> the global refused.
CALLS_OF_A_REFERENCE = {
    "REDUCE": (_pickle(_call(GELU, _bytes(b"x"))), ("torch._C._nn", "gelu")),
    "NEWOBJ": (_pickle(GELU + b")\x81"), ("torch._C._nn", "gelu")),
    "NEWOBJ_EX": (_pickle(GELU + b")}\x92", protocol=4), ("torch._C._nn", "gelu")),
    "OBJ": (_pickle(b"(" + GELU + b"o"), ("torch._C._nn", "gelu")),
    "INST": (b"(itorch.nn.functional\ngelu\n.", ("torch.nn.functional", "gelu")),
    "BUILD": (_pickle(GELU + b"}b"), ("torch._C._nn", "gelu")),
    "APPEND": (_pickle(GELU + b"Na"), ("torch._C._nn", "gelu")),
    "SETITEM": (_pickle(GELU + b"NNs"), ("torch._C._nn", "gelu")),
    "defaultdict factory": (_pickle(_call(_global("collections", "defaultdict"), GELU)), ("torch._C._nn", "gelu")),
    "copyreg.__newobj__": (_pickle(_call(_global("copyreg", "__newobj__"), GELU)), ("torch._C._nn", "gelu")),
    "copyreg._reconstructor": (
        _pickle(_call(_global("copyreg", "_reconstructor"), _global("torch", "Size"), GELU, b"N")),
        ("torch._C._nn", "gelu"),
    ),
    "_rebuild_from_type_v2": (
        _pickle(_call(_global("torch._tensor", "_rebuild_from_type_v2"), GELU, b"N)N")),
        ("torch._C._nn", "gelu"),
    ),
    # Stored first (memoized, as a model attribute would be), then fetched back and called.
    "stored, then called from the memo": (
        _pickle(b"}" + _str("act") + GELU + b"q\x00s0h\x00(" + _bytes(b"x") + b"tR"),
        ("torch._C._nn", "gelu"),
    ),
    "getattr method, then REDUCE": (_pickle(_call(RELU, b"N")), ("torch", "relu")),
    "the namespace class itself": (_pickle(_call(_global("torch._C", "_VariableFunctionsClass"))), ("torch._C", "_VariableFunctionsClass")),
    "the partial wrapping it": (_pickle(_call(_call(_global("functools", "partial"), GELU), b"N")), ("functools", "partial")),
}


@pytest.mark.parametrize("name", list(CALLS_OF_A_REFERENCE))
def test_calling_a_referenced_function_is_refused(name, tmp_path):
    payload, (module, function) = CALLS_OF_A_REFERENCE[name]
    path = tmp_path / "call.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError) as caught:
        open_checkpoint(path)
    assert (caught.value.module, caught.value.name) == (module, function)
    assert caught.value.path == str(path)


def test_the_functions_called_above_read_when_only_named():
    """So the refusals above happen at the call, not at the name."""
    assert loads(_pickle(GELU)).ph_path == "torch._C._nn.gelu"
    assert loads(_pickle(RELU)).ph_path == "torch.relu"
    assert loads(b"ctorch.nn.functional\ngelu\n.").ph_path == "torch.nn.functional.gelu"


def test_a_referenced_function_is_never_run(tmp_path):
    """torch.set_default_dtype changes the process: the control shows the call, the reader refuses it."""
    payload = pickle.dumps(_Reduce(torch.set_default_dtype, torch.float64), protocol=2)
    before = torch.get_default_dtype()
    try:
        pickle.loads(payload)
        assert torch.get_default_dtype() == torch.float64, "control failed: unpickling does not call the function"
    finally:
        torch.set_default_dtype(before)
    with pytest.raises(UnsafePickleError) as caught:
        loads(payload)
    assert (caught.value.module, caught.value.name) == ("torch", "set_default_dtype")
    assert torch.get_default_dtype() == before


def test_a_model_that_calls_a_torch_function_while_unpickling_is_refused(tmp_path):
    """The same function that reads as a stored attribute is refused once the pickle calls it."""
    model = torch.nn.Linear(2, 2)
    model.activation = torch.nn.functional.gelu
    model.computed = _Reduce(torch.nn.functional.gelu, torch.ones(2))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with pytest.raises(UnsafePickleError) as caught:
        open_checkpoint(path)
    assert (caught.value.module, caught.value.name) == ("torch._C._nn", "gelu")


@pytest.mark.parametrize(
    "value, module, name",
    [
        (torch.load, "torch.serialization", "load"),
        (torch.save, "torch.serialization", "save"),
        (torch.from_file, "torch", "from_file"),
        (torch.hub.load, "torch.hub", "load"),
        (torch.hub.load_state_dict_from_url, "torch.hub", "load_state_dict_from_url"),
        (np.load, "numpy", "load"),
        (np.fromfile, "numpy", "fromfile"),
        (np.savetxt, "numpy", "savetxt"),
        (operator.attrgetter, "operator", "attrgetter"),
        (os.system, "posix", "system"),
        (eval, "builtins", "eval"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_functions_that_touch_files_or_run_code_are_refused_even_unused(value, module, name):
    with pytest.raises(UnsafePickleError) as caught:
        loads(pickle.dumps({"kept": value}, protocol=2))
    assert (caught.value.module, caught.value.name) == (module, name)


@pytest.mark.parametrize(
    "module, name",
    [
        ("torch", "load"),  # the name, whatever the module says
        ("torch.utils.model_zoo", "load_url"),
        ("torch.cuda.memory", "_save_memory_usage"),
        ("numpy.lib._npyio_impl", "genfromtxt"),
        ("torch._C", "_nn"),  # a module, not a function
        ("torch", "nn"),
        ("torch._C", "import_ir_module"),
        ("torch", "load.__globals__"),
        ("torch.nn.functional", "gelu.__globals__"),
    ],
)
def test_dangerous_torch_and_numpy_names_are_refused_without_a_call(module, name):
    with pytest.raises(UnsafePickleError):
        loads(_pickle(b"}" + _str("kept") + _global(module, name) + b"s"))


def test_an_alias_of_a_denied_function_is_refused():
    """A function found under a harmless module but defined in a denied one (functools.wraps in torch.overrides)."""
    import torch.overrides

    if getattr(torch.overrides, "wraps", None) is not functools.wraps:
        pytest.skip("this torch does not import functools.wraps into torch.overrides")
    with pytest.raises(UnsafePickleError) as caught:
        loads(_pickle(b"}" + _str("kept") + _global("torch.overrides", "wraps") + b"s"))
    assert (caught.value.module, caught.value.name) == ("torch.overrides", "wraps")


def test_getattr_is_only_for_methods_of_references_and_placeholders():
    getattr_ = _global("builtins", "getattr")
    for target in (_str("text"), _global("torch", "Size"), b"N"):
        with pytest.raises(UnsafePickleError) as caught:
            loads(_pickle(_call(getattr_, target, _str("upper"))))
        assert (caught.value.module, caught.value.name) == ("builtins", "getattr")
    with pytest.raises(UnsafePickleError):  # interpreter internals, never
        loads(_pickle(_call(getattr_, _global("torch._C", "_VariableFunctionsClass"), _str("__class__"))))
    # A bound method of an unknown object and an enum member looked up by name are references.
    bound = loads(_pickle(_call(getattr_, _call(_global("anemoi.models.layers", "Block"), b")"), _str("forward"))))
    assert is_reference(bound) and bound.ph_path == "anemoi.models.layers.Block.forward"
    member = loads(_pickle(_call(getattr_, _global("anemoi.models.enums", "Kind"), _str("RED"))))
    assert is_reference(member) and member.ph_path == "anemoi.models.enums.Kind.RED"


# --- hostile sizes, codec names and attributes -------------------------------------------


def _peak_bytes(payload: bytes) -> int:
    """Peak memory Python allocated while ``loads`` refused ``payload``."""
    import tracemalloc

    from anemoi_ckpt_nb.errors import CorruptCheckpointError

    loads(pickle.dumps(np.zeros(1, dtype=np.uint8), protocol=2))  # imports and caches outside the measure
    tracemalloc.start()
    try:
        with pytest.raises(CorruptCheckpointError):
            loads(payload)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


CLAIMED = 64 * 1024 * 1024


def test_a_bytearray_length_the_file_does_not_hold_allocates_nothing():
    # BYTEARRAY8 claiming 64 MiB, followed by 3 bytes: the stock unpickler zeroes 64 MiB first.
    payload = _pickle(b"\x96" + struct.pack("<Q", CLAIMED) + b"abc", protocol=5)
    assert _peak_bytes(payload) < CLAIMED // 8


def test_numpy_frombuffer_of_a_size_allocates_nothing():
    # _frombuffer(<int>, ...) would run bytes(<int>): 64 MiB of zeros from a 100-byte file.
    dtype = _call(_global("numpy", "dtype"), _str("u1"))
    payload = _pickle(
        _call(_global("numpy._core.numeric", "_frombuffer"), b"J" + struct.pack("<i", CLAIMED), dtype, b"K\x01\x85", _str("C"))
    )
    assert _peak_bytes(payload) < CLAIMED // 8


def test_codecs_are_never_looked_up_by_a_name_from_the_file():
    """str(data, enc), bytes(text, enc), bytearray(text, enc) and NEWOBJ str would consult every codec search
    function (third-party ones included) and import ``encodings.<name>``."""
    import codecs

    from anemoi_ckpt_nb.errors import CorruptCheckpointError

    looked_up: list[str] = []

    def search(name: str):
        looked_up.append(name)
        return None

    codecs.register(search)
    try:
        payloads = [
            _call(_global("builtins", "str"), _bytes(b"abc"), _str("anemoi_ckpt_test_codec_a")),
            _call(_global("builtins", "bytes"), _str("abc"), _str("anemoi_ckpt_test_codec_b")),
            _call(_global("builtins", "bytearray"), _str("abc"), _str("anemoi_ckpt_test_codec_c")),
            # NEWOBJ: str.__new__(str, b"abc", "anemoi_ckpt_test_codec_d")
            _global("builtins", "str") + b"(" + _bytes(b"abc") + _str("anemoi_ckpt_test_codec_d") + b"t\x81",
        ]
        for payload in payloads:
            with pytest.raises(CorruptCheckpointError, match="encodings are allowed"):
                loads(_pickle(payload, protocol=3))
    finally:
        codecs.unregister(search)
    assert looked_up == []
    assert loads(pickle.dumps(bytearray(b"\xffok"), protocol=2)) == bytearray(b"\xffok")  # latin-1 still reads


@pytest.mark.parametrize(
    "payload",
    [
        _call(_global("fractions", "Fraction"), _str("1e100000")),
        _call(_global("fractions", "Fraction"), b"\x8a\x02\x01\x00" + b"\x8b" + struct.pack("<i", 9000) + b"\x01" * 9000),
        _call(_global("builtins", "int"), _call(_global("decimal", "Decimal"), _str("1e100000"))),
        _call(
            _global("copyreg", "_reconstructor"),
            _global("builtins", "int"),
            _global("builtins", "int"),
            _call(_global("decimal", "Decimal"), _str("1e100000")),
        ),
    ],
    ids=["Fraction(1e100000)", "Fraction(huge, huge)", "int(Decimal(1e100000))", "_reconstructor(int, Decimal)"],
)
def test_numbers_that_take_minutes_to_build_are_refused(payload):
    # With a 30-byte file, the exponent 3000000 instead of 100000 keeps int(Decimal) busy for minutes.
    from anemoi_ckpt_nb.errors import CorruptCheckpointError

    with pytest.raises(CorruptCheckpointError, match="digits is refused"):
        loads(_pickle(payload, protocol=3))


def test_ordinary_fractions_and_decimals_still_read():
    import fractions

    value = {"f": fractions.Fraction(3, 4), "d": decimal.Decimal("1.5e10"), "i": int(decimal.Decimal("12"))}
    assert loads(pickle.dumps(value, protocol=2)) == value
    assert loads(_pickle(_call(_global("fractions", "Fraction"), _str("3/4")))) == fractions.Fraction(3, 4)


def test_pickled_attributes_never_shadow_methods():
    """An instance attribute named like a method would make later code (``dict(od)``, ``t.numel()``)
    call what the file put there; ordinary attributes such as a state dict's ``_metadata`` stay."""
    od = collections.OrderedDict(a=1)
    od._metadata = {"": {"version": 1}}
    od.keys = dict  # dict(od) calls od.keys(): it would read as {}
    loaded = loads(pickle.dumps(od, protocol=2))
    assert dict(loaded) == {"a": 1}
    assert "keys" not in vars(loaded)
    assert loaded._metadata == {"": {"version": 1}}

    tensor = torch.arange(3.0)
    tensor.numel = int  # would make numel() return 0
    tensor.note = "kept"
    loaded = loads(pickle.dumps(tensor, protocol=2))
    assert loaded.numel() == 3
    assert loaded.note == "kept"
    assert "numel" not in vars(loaded)
