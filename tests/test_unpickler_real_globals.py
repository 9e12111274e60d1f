"""The harmless globals anemoi-training's pickles hold are read; hostile uses of the same globals are refused.

A real ``inference-*.ckpt`` of anemoi-training 0.17.1 (``model=gnn``) names
``types.GenericAlias`` (a ``tuple[...]`` annotation torch-geometric >= 2.5 keeps),
``_operator.getitem`` (``typing.Union[...]``), ``builtins.getattr``,
``_codecs.encode``, ``inspect._empty``, ``pathlib.PosixPath``,
``hydra._internal.target_policy._DeferredTarget`` and ``typing.Union/OrderedDict/Any``.
Each hostile payload below is built from those globals and creates a marker file when
unpickled the ordinary way (proved in a child process first); the reader must refuse it
and the marker must not appear.
"""

from __future__ import annotations

import pathlib
import pickle
import struct
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from anemoi_ckpt_nb.read.classmap import to_plain
from anemoi_ckpt_nb.errors import UnsafePickleError
from anemoi_ckpt_nb.read.placeholders import is_placeholder
from anemoi_ckpt_nb.read.torchfile import loads

MARKER = "PWNED"


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


def _pickle(expression: bytes) -> bytes:
    return b"\x80\x02" + expression + b"."


GETATTR = _global("builtins", "getattr")
GETITEM = _global("_operator", "getitem")


def _hostile(marker: Path) -> dict[str, bytes]:
    touch = f"touch {marker}"
    # typing.sys is the sys module; sys.modules["os"].system(...)
    os_via_typing = _call(GETITEM, _call(GETATTR, _global("typing", "sys"), _str("modules")), _str("os"))
    return {
        "getattr(typing.sys.modules['os'], 'system')": _pickle(
            _call(_call(GETATTR, os_via_typing, _str("system")), _str(touch))
        ),
        "GenericAlias(os.system(...))": _pickle(
            _call(_global("types", "GenericAlias"), _call(_global("os", "system"), _str(touch)), b")")
        ),
        "getattr(PosixPath(marker), 'touch')()": _pickle(
            _call(_call(GETATTR, _call(_global("pathlib", "PosixPath"), _str(str(marker))), _str("touch")))
        ),
        "getattr(pathlib.PosixPath, 'touch')(path)": _pickle(
            _call(
                _call(GETATTR, _global("pathlib", "PosixPath"), _str("touch")),
                _call(_global("pathlib", "PosixPath"), _str(str(marker))),
            )
        ),
        "getattr(GenericAlias, 'mro')()": _pickle(
            _call(_call(GETATTR, _global("types", "GenericAlias"), _str("mro")))
        ),
        "getattr(inspect._empty, 'os')": _pickle(
            _call(
                _call(GETATTR, _call(GETITEM, _call(GETATTR, _global("inspect", "sys"), _str("modules")), _str("os")),
                      _str("system")),
                _str(touch),
            )
        ),
    }


#: What each control needs: a real pickle runs these only when the payload's globals exist.
CONTROL_RUNS = {
    "getattr(typing.sys.modules['os'], 'system')",
    "GenericAlias(os.system(...))",
    "getattr(PosixPath(marker), 'touch')()",
    "getattr(pathlib.PosixPath, 'touch')(path)",
    "getattr(inspect._empty, 'os')",
}


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> dict[str, tuple[bytes, Path, bool]]:
    folder = tmp_path_factory.mktemp("hostile")
    made = {}
    for number, (name, data) in enumerate(_hostile(folder / MARKER).items()):
        sub = folder / str(number)
        sub.mkdir()
        marker = sub / MARKER
        made[name] = (_hostile(marker)[name], marker)
        (sub / "evil.pkl").write_bytes(made[name][0])
    code = textwrap.dedent(
        """
        import pickle, sys
        for p in sys.argv[1:]:
            try:
                pickle.loads(open(p, "rb").read())
            except BaseException:
                pass
        """
    )
    paths = [str(marker.parent / "evil.pkl") for _, marker in made.values()]
    subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, timeout=120)
    result = {}
    for name, (data, marker) in made.items():
        result[name] = (data, marker, marker.exists())
        marker.unlink(missing_ok=True)
    return result


@pytest.mark.parametrize("name", sorted(_hostile(Path("/nonexistent")).keys()))
def test_hostile_uses_of_the_globals_real_files_hold_are_refused(name, payloads):
    data, marker, control_ran = payloads[name]
    if name in CONTROL_RUNS:
        assert control_ran, f"control failed: {name} does not create the marker when unpickled normally"
    with pytest.raises(UnsafePickleError):
        loads(data, source="evil.pkl")
    assert not marker.exists(), "the payload ran"


def test_builtin_generic_annotations_read_as_inert_placeholders():
    value = {
        "plain": tuple[int, str],
        "nested": dict[str, list[typing.Optional[int]]],
        "annotation": typing.Union[tuple[int, int], None],
        "path": pathlib.PosixPath("/data/x.zarr"),
    }
    loaded = loads(pickle.dumps(value, protocol=2))
    assert is_placeholder(loaded["plain"])
    assert loaded["plain"].ph_path == "types.GenericAlias"
    assert to_plain(loaded["plain"]) == "tuple[int, str]"
    assert to_plain(loaded["nested"]).startswith("dict[str, list[typing.Union[")
    assert to_plain(loaded["annotation"]).startswith("typing.Union[tuple[int, int]")
    assert loaded["path"] == pathlib.PurePosixPath("/data/x.zarr")


def test_a_generic_alias_placeholder_cannot_be_called_into_code():
    alias = loads(pickle.dumps(tuple[int, str], protocol=2))
    # The placeholder records what the pickle gave it; it has no behaviour of its own.
    assert not hasattr(alias, "__origin__")
    assert not callable(alias)
