"""Hostile checkpoint files that run no code but try to fool or exhaust the reader (issue 18).

* archive names that differ only in case (``DATA.PKL`` before ``data.pkl``: torch reads the first);
* amplification from tiny files: shared references (a DAG the pickle memo makes cheap to write)
  must expand at most once or be refused, memoized inputs count each time they are used, and a
  compressed catalogue document is read with a limit on its inflated size;
* malformed documents give exit 2 naming the file, never exit 3 ("internal error").

Each hostile command runs in a subprocess with a memory limit and a timeout, so a test that
fails cannot hang or exhaust the machine. Public entry points only: ``anemoi-ckpt`` and
``anemoi_ckpt_nb.open_checkpoint``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import types
import uuid as _uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from security_helpers import catalogue_with_one_checkpoint, is_ckpt_error

from anemoi_ckpt_nb import Catalogue, examples, open_checkpoint

#: Address space allowed to a hostile command: torch's own mappings plus some room.
MEMORY_LIMIT = 3 * 1024**3
TIMEOUT = 120


def _limit_memory() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def bounded_cli(*args: str) -> subprocess.CompletedProcess:
    """``anemoi-ckpt ARGS`` in a child that may not use more than MEMORY_LIMIT nor TIMEOUT."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "anemoi_ckpt_nb", *args],
            capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=_limit_memory, env=dict(os.environ),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"anemoi-ckpt {' '.join(args)} ran past {TIMEOUT} s: the work is not bounded")


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert lines and "Traceback" not in result.stderr, result.stderr[-2000:]
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return lines[-1]



def metadata(**extra) -> dict:
    meta = examples.make_metadata(uuid=str(_uuid.uuid4()), run_id=str(_uuid.uuid4()))
    meta.update(extra)
    return meta


def lightning_file(path: Path, hyper_parameters: dict) -> Path:
    """A Lightning training checkpoint (metadata only in ``hyper_parameters``), written by torch.save."""
    import torch

    torch.save(
        {
            "epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.5.0",
            "state_dict": {"model.model.weight": torch.ones(4)},
            "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": hyper_parameters,
        },
        path,
    )
    return path


# --- 5. names that differ only in case ----------------------------------------------------------


def test_an_archive_with_names_differing_only_in_case_is_refused(tmp_path):
    source = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    hostile = tmp_path / "hostile.ckpt"
    with zipfile.ZipFile(source.path) as zin, zipfile.ZipFile(hostile, "w", zipfile.ZIP_STORED) as zout:
        top = zin.namelist()[0].split("/", 1)[0]
        # Written first, so torch (whose zip reader ignores case) takes it for data.pkl.
        zout.writestr(f"{top}/DATA.PKL", pickle.dumps({"state_dict": {}, "hostile": True}, protocol=2))
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
    # torch's zip reader compares names ignoring case and may take either pickle (the first, in a
    # small archive; whichever its binary search meets, in a larger one): the file means two things.

    with pytest.raises(Exception) as caught:
        open_checkpoint(hostile)
    assert is_ckpt_error(caught.value) and "case" in str(caught.value)
    one_line_error(bounded_cli("inspect", str(hostile)), str(hostile))
    validated = bounded_cli("validate", str(hostile))
    assert validated.returncode == 2, (validated.stdout, validated.stderr)


def test_an_archive_whose_first_entry_names_another_folder_is_refused(tmp_path):
    source = examples.write_training_checkpoint(tmp_path / "a.ckpt", weights_bytes=20_000)
    hostile = tmp_path / "hostile.ckpt"
    with zipfile.ZipFile(source.path) as zin, zipfile.ZipFile(hostile, "w", zipfile.ZIP_STORED) as zout:
        zout.writestr("other/data.pkl", pickle.dumps({"state_dict": {}}, protocol=2))  # torch's archive name
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
    one_line_error(bounded_cli("inspect", str(hostile)), str(hostile))


# --- 8. amplification ----------------------------------------------------------------------------


def _throwaway_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module


def _shared_tree(leaf, *, ways: int, depth: int):
    import torch

    node = leaf
    for _ in range(depth):
        parent = torch.nn.Module()
        for i in range(ways):
            parent.add_module(f"m{i}", node)
        node = parent
    return node


@pytest.mark.parametrize("leaf", ["linear", "relu"])
def test_submodules_shared_ten_ways_eight_deep_are_bounded(tmp_path, leaf):
    import torch

    # A leaf without tensors still makes the walk meet 10**8 modules.
    node = _shared_tree(torch.nn.Linear(2, 2) if leaf == "linear" else torch.nn.ReLU(), ways=10, depth=8)
    path = tmp_path / "inference-bomb.ckpt"
    torch.save(node, path)
    assert path.stat().st_size < 20_000
    result = bounded_cli("inspect", "--json", str(path))
    if result.returncode == 0:
        summary = json.loads(result.stdout)
        assert summary["parameter_count"] == (6 if leaf == "linear" else 0)
    else:
        one_line_error(result, str(path), "shared")


def test_a_shared_submodule_is_listed_under_each_name_as_torch_does(tmp_path):
    import torch

    # Tied layers are real: the state dict names a shared module under each of its names.
    node = _shared_tree(torch.nn.Linear(2, 2), ways=3, depth=3)
    path = tmp_path / "tied.ckpt"
    torch.save(node, path)
    with open_checkpoint(path) as ck:
        assert sorted(ck.weights) == sorted(node.state_dict())
        assert ck.parameter_count == 6


def test_tuple_keys_sharing_members_are_bounded(tmp_path):
    def graph(p: Pickle) -> None:
        p.text("hyper_parameters").op(pickle.EMPTY_DICT).text("graph").op(pickle.EMPTY_DICT)
        p.text("edge").op(pickle.TUPLE1)
        key = p.put()
        for _ in range(64):  # hashing the last key naively visits 2**64 leaves
            p.op(pickle.POP).get(key).get(key).op(pickle.TUPLE2)  # only the newest tuple stays on the stack
            key = p.put()
        p.op(pickle.BININT1, bytes([1]), pickle.SETITEM, pickle.SETITEM)

    path = torch_zip(tmp_path / "tuples.ckpt", Pickle().lightning(graph))
    assert path.stat().st_size < 20_000
    # Refused by the tuple bound itself (the pickle is otherwise well formed: the key's dict takes it).
    one_line_error(bounded_cli("inspect", "--json", str(path)), str(path), "hashing it visits more than")


def test_frozensets_sharing_members_are_bounded(tmp_path):
    value: object = frozenset({"a"})
    for i in range(64):
        value = frozenset({(value, 0), (value, 1)})
    path = lightning_file(tmp_path / "sets.ckpt", {"metadata": metadata(graph=value)})
    result = bounded_cli("register", str(path), "--catalogue", str(tmp_path / "catalogue"))
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])


@pytest.mark.parametrize("command", ["register", "validate", "convert"])
def test_a_metadata_list_shared_two_to_the_forty_ways_is_refused(tmp_path, command):
    shared: list = ["x"]
    for _ in range(40):
        shared = [shared, shared]
    path = lightning_file(tmp_path / "list.ckpt", {"metadata": metadata(bomb=shared)})
    assert path.stat().st_size < 20_000
    Catalogue.create(tmp_path / "catalogue")
    if command == "register":
        result = bounded_cli("register", str(path), "--catalogue", str(tmp_path / "catalogue"))
    elif command == "validate":
        result = bounded_cli("validate", str(path))
    else:
        result = bounded_cli("convert", str(path), "-o", str(tmp_path / "out"))
    assert result.returncode in (1, 2), (result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr + result.stdout


class Pickle:
    """A pickle written opcode by opcode: shared references the ``pickle`` module would need
    the hostile object itself to write (hashing a shared tuple key would hang this test)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.out.write(pickle.PROTO + bytes([4]))
        self.memo = 0

    def op(self, *parts: bytes) -> Pickle:
        for part in parts:
            self.out.write(part)
        return self

    def text(self, value: str) -> Pickle:
        data = value.encode()
        return self.op(pickle.BINUNICODE, struct.pack("<I", len(data)), data)

    def put(self) -> int:
        self.op(pickle.LONG_BINPUT, struct.pack("<I", self.memo))
        self.memo += 1
        return self.memo - 1

    def get(self, index: int) -> Pickle:
        return self.op(pickle.LONG_BINGET, struct.pack("<I", index))

    def lightning(self, extra: Callable[[Pickle], None]) -> bytes:
        """``{"epoch": 1, "global_step": 1, "state_dict": {}, **extra}``."""
        self.op(pickle.EMPTY_DICT, pickle.MARK)
        self.text("epoch").op(pickle.BININT1, bytes([1]))
        self.text("global_step").op(pickle.BININT1, bytes([1]))
        self.text("state_dict").op(pickle.EMPTY_DICT)
        extra(self)
        return self.op(pickle.SETITEMS, pickle.STOP).out.getvalue()


def torch_zip(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/version", b"3\n")
    return path


def _memo_bomb(tmp_path: Path, call: tuple[str, str], payload: bytes, times: int) -> Path:
    """A Lightning checkpoint whose pickle calls ``module.name(B)`` ``times`` times on one memoized ``B``."""

    def bombs(p: Pickle) -> None:
        module, name = call
        p.text("bombs").op(pickle.EMPTY_LIST, pickle.MARK)
        p.op(pickle.GLOBAL, f"{module}\n{name}\n".encode())
        function = p.put()
        p.op(pickle.BINBYTES, struct.pack("<I", len(payload)), payload, pickle.TUPLE1)
        arguments = p.put()
        p.op(pickle.REDUCE)
        for _ in range(times - 1):
            p.get(function).get(arguments).op(pickle.REDUCE)
        p.op(pickle.APPENDS)

    return torch_zip(tmp_path / "memo.ckpt", Pickle().lightning(bombs))


def test_a_memoized_bytes_object_fed_to_bytearray_many_times_counts_every_time(tmp_path):
    path = _memo_bomb(tmp_path, ("builtins", "bytearray"), b"\0" * (1 << 20), 1200)
    assert path.stat().st_size < 2 << 20
    one_line_error(bounded_cli("inspect", str(path)), str(path))


def test_a_memoized_torch_file_loaded_many_times_counts_every_time(tmp_path):
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1 << 18)}, buffer)  # 1 MiB of storage
    path = _memo_bomb(tmp_path, ("torch.storage", "_load_from_bytes"), buffer.getvalue(), 1200)
    one_line_error(bounded_cli("inspect", str(path)), str(path))


def test_a_gzip_bomb_in_the_index_snapshot_is_refused_and_reindex_repairs_it(tmp_path):
    url = tmp_path / "catalogue"
    catalogue, ck = catalogue_with_one_checkpoint(url, tmp_path)
    catalogue.rebuild_index()
    snapshot = url / "index" / "snapshot.json.gz"
    document = json.loads(gzip.decompress(snapshot.read_bytes()))
    text = json.dumps(document)
    # Valid JSON that inflates to 1.2 GiB: whitespace before the closing brace.
    with gzip.open(snapshot, "wb", compresslevel=9) as out:
        out.write(text[:-1].encode())
        block = b" " * (1 << 24)
        for _ in range(75):
            out.write(block)
        out.write(b"}")
    assert snapshot.stat().st_size < 4 << 20
    one_line_error(bounded_cli("ls", "--catalogue", str(url)), "snapshot", "reindex")
    repaired = bounded_cli("reindex", "--catalogue", str(url))
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    listed = bounded_cli("ls", "--catalogue", str(url), "--json")
    assert listed.returncode == 0 and ck.uuid in listed.stdout


# --- 10. exit 2 naming the file, not exit 3 ------------------------------------------------------


def test_circular_metadata_is_refused_by_register_with_exit_2(tmp_path):
    meta = metadata()
    meta["config"]["self"] = meta
    path = lightning_file(tmp_path / "circular.ckpt", {"metadata": meta})
    Catalogue.create(tmp_path / "catalogue")
    one_line_error(bounded_cli("register", str(path), "--catalogue", str(tmp_path / "catalogue")), str(path))


def _safetensors(path: Path, tensors: dict[str, bytes], metadata_text: str | None) -> Path:
    header: dict = {}
    offset = 0
    for name, data in tensors.items():
        header[name] = {"dtype": "U8", "shape": [len(data)], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    if metadata_text is not None:
        header["__metadata__"] = {"anemoi": metadata_text}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(tensors.values()))
    return path


def test_deeply_nested_safetensors_metadata_gives_exit_2(tmp_path):
    nested = "[" * 200_000 + "]" * 200_000
    path = _safetensors(tmp_path / "nested.safetensors", {"w": b"\0" * 8}, nested)
    one_line_error(bounded_cli("inspect", str(path)), str(path))


def test_safetensors_arrays_named_a_and_a_slash_b_give_exit_2(tmp_path):
    meta = json.dumps(metadata())
    path = _safetensors(
        tmp_path / "clash.safetensors",
        {"w": b"\0" * 8, "anemoi-supporting-arrays/a": b"\0" * 8, "anemoi-supporting-arrays/a/b": b"\0" * 8},
        meta,
    )
    one_line_error(bounded_cli("inspect", str(path)), str(path))
