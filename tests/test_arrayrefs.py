"""Reading without numpy gives what reading with numpy gives (issue 16).

``inspect`` of a real anemoi file imports neither torch nor numpy: the pickle's
plain numeric arrays (statistics, supporting arrays) and the archive's ``.numpy``
entries are described (``arrayrefs``) and made numpy arrays only when asked for.
These tests run the commands in their own interpreter and check which modules
they imported, and hold the described arrays to numpy's own unpickling, including
the fallback to numpy for everything but plain numeric arrays.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.errors import CorruptCheckpointError
from anemoi_ckpt_nb.read.arrayrefs import ArrayRef
from anemoi_ckpt_nb.read.reader import open_checkpoint
from anemoi_ckpt_nb.read.torchfile import load_torch_file

REAL = Path(os.environ.get("ANEMOI_CKPT_REAL_FIXTURES", Path(__file__).parent / "data" / "real"))

#: Runs ``anemoi-ckpt ARGS`` and writes the names of the modules imported by then to $MODULES_OUT.
RUNNER = r"""
import json, os, sys
from anemoi_ckpt_nb.cli import main
status = main(sys.argv[1:])
with open(os.environ["MODULES_OUT"], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(status)
"""


def _modules_imported_by(tmp_path: Path, *args: str | Path) -> tuple[set[str], str]:
    out = tmp_path / "modules.json"
    env = dict(os.environ, MODULES_OUT=str(out))
    done = subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text())), done.stdout


def _roots(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.skipif(not REAL.is_dir(), reason="the real anemoi fixtures are not here")
def test_inspect_of_real_files_imports_neither_torch_nor_numpy(tmp_path):
    training = sorted(REAL.glob("*/*/run/*/last.ckpt"))
    inference = [path.with_name("inference-last.ckpt") for path in training]
    assert training and all(path.exists() for path in inference)
    modules, stdout = _modules_imported_by(tmp_path, "inspect", "--json", *training, *inference)
    assert not _roots(modules) & {"torch", "numpy", "safetensors"}, sorted(_roots(modules))
    summaries = [json.loads(line) for line in stdout.splitlines()]
    assert [s["kind"] for s in summaries] == ["training"] * len(training) + ["inference"] * len(inference)
    # The shapes were read all the same.
    assert all(s["supporting_arrays"] for s in summaries), [s["path"] for s in summaries if not s["supporting_arrays"]]


def test_inspect_of_an_example_imports_neither_and_a_caller_still_gets_numpy_arrays(tmp_path):
    source = examples.write_training_checkpoint(tmp_path / "train.ckpt", weights_bytes=100_000)
    modules, stdout = _modules_imported_by(tmp_path, "inspect", "--json", source.path)
    assert not _roots(modules) & {"torch", "numpy"}
    shapes = json.loads(stdout)["supporting_arrays"]
    with open_checkpoint(source.path) as ck:
        arrays = ck.supporting_arrays
        assert arrays is ck.supporting_arrays  # made once: changes a caller makes stay
        assert arrays and all(type(a) is np.ndarray for a in arrays.values())
        assert {name: list(a.shape) for name, a in arrays.items()} == shapes


#: Every plain numeric dtype, both byte orders, C and Fortran order, 0-d and empty arrays.
PLAIN = {
    **{f"{code}": np.arange(6, dtype=code).reshape(2, 3) for code in ("f8", "f4", "f2", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1", "c16", "c8")},
    "bool": np.array([True, False, True]),
    "big-endian": np.arange(5, dtype=">f8"),
    "fortran": np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)),
    "0-d": np.array(3.5),
    "empty": np.zeros((0, 4), dtype="f4"),
    "shared": None,  # the same array twice: one object, as numpy's unpickling gives
}
PLAIN["shared"] = PLAIN["f8"]


def _saved(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "file.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "arrays": obj}, path)
    return path


def test_described_arrays_are_the_arrays_numpy_unpickles(tmp_path):
    path = _saved(tmp_path, PLAIN)
    loaded = load_torch_file(path, describe=True)
    try:
        described = loaded.raw["arrays"]
        assert all(type(a) is ArrayRef for a in described.values())
        assert described["shared"] is described["f8"]
        made = {name: a.numpy() for name, a in described.items()}
    finally:
        loaded.close()
    assert made["shared"] is made["f8"]
    for name, expected in PLAIN.items():
        got = made[name]
        assert type(got) is np.ndarray and got.dtype == expected.dtype and got.shape == expected.shape, name
        assert np.array_equal(got, expected), name
        assert (got.flags.c_contiguous, got.flags.f_contiguous, got.flags.writeable) == (
            expected.flags.c_contiguous,
            expected.flags.f_contiguous,
            True,
        ), name
        assert got.tobytes(order="A") == expected.tobytes(order="A"), name


@pytest.mark.parametrize(
    "value",
    [
        np.array(["a", "bc"]),  # unicode
        np.array([1, "x", None], dtype=object),  # object: numpy's own checks
        np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")]),  # structured
        np.array(["2025-01-01"], dtype="datetime64[D]"),
        np.float64(2.5),  # a scalar
        np.dtype("f8,i4"),  # a dtype numpy pickles otherwise
    ],
    ids=["unicode", "object", "structured", "datetime", "scalar", "dtype"],
)
def test_anything_else_of_numpy_is_read_with_numpy_as_before(tmp_path, value):
    path = _saved(tmp_path, {"value": value, "plain": np.arange(3.0)})
    loaded = load_torch_file(path, describe=True)
    try:
        got = loaded.raw["arrays"]
    finally:
        loaded.close()
    assert type(got["plain"]) is np.ndarray  # the whole file read with numpy, not half described
    assert type(got["value"]) is type(value)
    if isinstance(value, np.ndarray):
        assert got["value"].dtype == value.dtype and (got["value"] == value).all()
    else:
        assert got["value"] == value


class _Forged:
    """Pickles as numpy does, with the state it is given (what a forged file could hold)."""

    def __init__(self, state: tuple) -> None:
        self.state = state

    def __reduce__(self):
        return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state)


@pytest.mark.parametrize(
    "state",
    [
        (1, (10,), np.dtype("f8"), False, b"\0" * 8),  # fewer bytes than the shape needs
        (1, (1,), np.dtype("f8"), False, b"\0" * 80),  # more
        (1, (-1,), np.dtype("f8"), False, b"\0" * 8),  # a negative dimension
    ],
    ids=["short", "long", "negative"],
)
def test_a_forged_array_state_is_refused_as_numpy_refuses_it(tmp_path, state):
    path = _saved(tmp_path, {"bad": _Forged(state)})
    with pytest.raises(CorruptCheckpointError):
        load_torch_file(path, describe=True)
    with pytest.raises(CorruptCheckpointError):
        load_torch_file(path)  # with torch and numpy: the same answer


def test_arrays_from_archive_entries_are_read_only_views_as_anemoi_utils_gives_them():
    ref = ArrayRef.from_bytes(np.arange(3.0).tobytes(), "float64", (3,))
    assert ref.shape == (3,) and str(ref.dtype) == "float64" and ref.nbytes == 24
    assert np.array_equal(ref.numpy(), np.arange(3.0)) and not ref.numpy().flags.writeable
    with pytest.raises(ValueError):
        ArrayRef.from_bytes(b"\0" * 7, "float64", (1,))
    assert pickle.dumps(ref.numpy())  # what callers get is a plain numpy array
