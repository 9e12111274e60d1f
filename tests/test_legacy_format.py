"""The legacy ``torch.save`` format (``_use_new_zipfile_serialization=False``) read without torch.

A legacy file is five pickles (magic number, protocol, system information, the data, the
list of storage keys) followed by each storage as ``<int64 count><raw bytes>``. The files
here are written by torch itself; the damaged ones are torch's files with bytes changed.
Each damage is refused the same way read without torch (``describe=True``, what every
command does first) and with torch, and nothing is kept open.
"""

from __future__ import annotations

import collections
import pickle
import pickletools
import struct
from pathlib import Path

import pytest
import torch

from anemoi_ckpt_nb import open_checkpoint
from anemoi_ckpt_nb.errors import CheckpointReadError, CorruptCheckpointError, NotACheckpointError
from anemoi_ckpt_nb.read.tensorrefs import NeedsTorch
from anemoi_ckpt_nb.read.torchfile import load_torch_file


def _mixed() -> dict[str, torch.Tensor]:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "plain": base,
        "view": base[1:, 2:5],  # a strided view of a shared storage
        "transposed": base.t(),
        "row": base[2],  # an offset view: one run of the file
        "bf16": torch.linspace(-3, 3, 10, dtype=torch.bfloat16),
        "f64": torch.randn(3, 3, dtype=torch.float64),
        "u16": torch.arange(9, dtype=torch.int32).to(torch.uint16),  # an UntypedStorage (_rebuild_tensor_v3)
        "f8": torch.ones(7).to(torch.float8_e4m3fn),
        "param": torch.nn.Parameter(torch.randn(3, 2)),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.empty(0, 5),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
    }


def _bits(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def test_a_legacy_file_written_by_torch_is_read_without_torch(tmp_path):
    saved = _mixed()
    path = tmp_path / "legacy.pt"
    torch.save(saved, path, _use_new_zipfile_serialization=False)
    loaded = load_torch_file(path, describe=True)
    assert loaded.described and loaded.format == "legacy" and not loaded.file.closed
    loaded.close()
    assert loaded.file is None
    # torch writes the uint16 tensor (an UntypedStorage) but cannot load it back
    # (torch.serialization's legacy loader asks UntypedStorage for a dtype): compare with what was saved.
    expected = saved
    raw = path.read_bytes()
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == "legacy" and checkpoint.kind == "state-dict"
        assert not checkpoint._tensors  # described, not made by torch
        assert list(checkpoint.weights) == list(expected)
        for name, tensor in expected.items():
            info = checkpoint.weights[name]
            assert (info.dtype, tuple(info.shape)) == (str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape))
            got = checkpoint.tensor(name)
            assert got.dtype == tensor.dtype and got.stride() == tensor.stride(), name
            assert _bits(got) == _bits(tensor), name
            assert bytes(checkpoint.read_bytes(name)) == _bits(tensor), name
            span = checkpoint.tensor_span(name)
            if span is not None:
                assert raw[span[0] : span[0] + span[1]] == _bits(tensor), name
            assert checkpoint.tensor_crc32(name) is None  # only zip archives record CRCs
        assert checkpoint.tensor_span("view") is None and checkpoint.tensor_span("row") is not None
        assert checkpoint.parameter_count == sum(t.numel() for t in expected.values())  # each view counted, as with torch
        assert checkpoint.weights_bytes == sum(
            t.untyped_storage().nbytes() for n, t in expected.items() if n not in ("view", "transposed", "row")
        )


def test_a_legacy_training_checkpoint_is_read_without_torch(tmp_path):
    from anemoi_ckpt_nb import examples

    example = examples.write_training_checkpoint(tmp_path / "last.ckpt", embedded=None, legacy=True)
    loaded = load_torch_file(example.path, describe=True)
    loaded.close()
    assert loaded.described and loaded.format == "legacy"
    with open_checkpoint(example.path) as checkpoint:
        assert (checkpoint.kind, checkpoint.format, checkpoint.uuid) == ("training", "legacy", example.uuid)
        assert checkpoint.metadata_source == "hyper_parameters"
        assert checkpoint.optimizer_bytes > checkpoint.weights_bytes > 0


def test_legacy_without_embedded_metadata_only():
    from anemoi_ckpt_nb import examples

    with pytest.raises(ValueError, match="embedded=None"):
        examples.write_training_checkpoint("never.ckpt", legacy=True)


# --- damaged files: refused the same way without torch and with it ------------------------


def _pickle_ends(data: bytes) -> list[int]:
    """Where each of the five pickles of a legacy file ends (the byte after its STOP)."""
    ends, position = [], 0
    for _ in range(5):
        for opcode, _, at in pickletools.genops(data[position:]):
            if opcode.name == "STOP":
                position += at + 1
                break
        ends.append(position)
    return ends


def _legacy(tmp_path: Path, state: dict) -> tuple[Path, bytes, list[int]]:
    path = tmp_path / "source.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    return path, data, _pickle_ends(data)


def _both_refuse(path: Path, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        load_torch_file(path, describe=True)
    with pytest.raises(error, match=match):
        load_torch_file(path)
    with pytest.raises(error, match=match):
        open_checkpoint(path)


def test_a_truncated_legacy_file_is_refused(tmp_path):
    path, data, _ = _legacy(tmp_path, {"w": torch.ones(100)})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[:-4])
    _both_refuse(cut, CorruptCheckpointError, "run past the end of the file: it is truncated")
    header_cut = tmp_path / "header-cut.pt"
    header_cut.write_bytes(data[: _pickle_ends(data)[-1] + 3])
    _both_refuse(header_cut, CorruptCheckpointError, "is missing: the file is truncated")


def test_a_legacy_storage_whose_count_lies_is_refused(tmp_path):
    path, data, ends = _legacy(tmp_path, {"w": torch.ones(100)})
    (count,) = struct.unpack("<q", data[ends[-1] : ends[-1] + 8])
    assert count == 100
    lying = tmp_path / "lying.pt"
    lying.write_bytes(data[: ends[-1]] + struct.pack("<q", 101) + data[ends[-1] + 8 :])
    _both_refuse(lying, CorruptCheckpointError, "holds 101 elements, the pickle expects 100")


@pytest.mark.parametrize(
    "keys, match",
    [
        (["12345"], "is not referred to by the pickle"),
        ([], "has no data in the file"),
        ({"not": "a list"}, "key list is damaged"),
    ],
    ids=["unknown-key", "missing-key", "not-a-list"],
)
def test_a_damaged_legacy_key_list_is_refused(tmp_path, keys, match):
    path, data, ends = _legacy(tmp_path, {"w": torch.ones(4)})
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(data[: ends[3]] + pickle.dumps(keys, protocol=2) + data[ends[4] :])
    _both_refuse(damaged, CorruptCheckpointError, match)


def test_a_legacy_tensor_beyond_its_storage_is_refused(tmp_path):
    small = torch.ones(3)
    storage = torch.storage.TypedStorage(wrap_storage=small.untyped_storage(), dtype=torch.float32, _internal=True)
    lying = _Reduce(torch._utils._rebuild_tensor_v2, storage, 1, (3,), (1,), False, collections.OrderedDict())
    path = tmp_path / "lying.pt"
    torch.save({"w": lying}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CorruptCheckpointError, match="holds 12"):
        load_torch_file(path, describe=True)
    with pytest.raises(CorruptCheckpointError):  # torch's own check
        load_torch_file(path)


def test_a_legacy_protocol_or_byte_order_not_torchs_is_refused(tmp_path):
    path, data, ends = _legacy(tmp_path, {"w": torch.ones(4)})
    protocol = tmp_path / "protocol.pt"
    protocol.write_bytes(data[: ends[0]] + pickle.dumps(999, protocol=2) + data[ends[1] :])
    _both_refuse(protocol, CorruptCheckpointError, "unknown legacy torch protocol 999")
    big = tmp_path / "big-endian.pt"
    info = pickle.dumps({"protocol_version": 1001, "little_endian": False, "type_sizes": {}}, protocol=2)
    big.write_bytes(data[: ends[1]] + info + data[ends[2] :])
    _both_refuse(big, NotACheckpointError, "other byte order")


def test_a_legacy_pickle_over_the_limit_is_refused(tmp_path):
    path, _, _ = _legacy(tmp_path, {f"w{n}": torch.ones(2) for n in range(200)})
    for describe in (True, False):
        with pytest.raises(CheckpointReadError, match="over the limit"):
            load_torch_file(path, max_pickle_bytes=2000, describe=describe)


class _Reduce:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return self.args[0], self.args[1:]


class _Storage:
    """Pickled as the persistent id ``pid`` (a storage reference of a legacy file)."""

    def __init__(self, *pid):
        self.pid = pid


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None


def _hand_written_legacy(path: Path, tensors: dict, keys: list[str], storages: bytes) -> None:
    import io

    main = io.BytesIO()
    _Pickler(main, protocol=2).dump(tensors)
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    parts = [pickle.dumps(n, protocol=2) for n in (0x1950A86A20F9469CFC6C, 1001, info)]
    path.write_bytes(b"".join(parts) + main.getvalue() + pickle.dumps(keys, protocol=2) + storages)


def _tensor(storage: _Storage, numel: int) -> _Reduce:
    return _Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (numel,), (1,), False, collections.OrderedDict())


def test_a_hand_written_legacy_file_is_read_like_torchs(tmp_path):
    """The writer above makes what torch.save makes: the tests below change one thing each."""
    path = tmp_path / "hand.pt"
    storage = _Storage("storage", torch.FloatStorage, "0", "cpu", 4, None)
    _hand_written_legacy(path, {"w": _tensor(storage, 4)}, ["0"], struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4))
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.tensor([1.0, 2, 3, 4]))
    with open_checkpoint(path) as checkpoint:
        assert not checkpoint._tensors and checkpoint.tensor("w").tolist() == [1, 2, 3, 4]


def test_a_legacy_storage_named_with_two_types_is_the_first_as_with_torch(tmp_path):
    """torch.save refuses to write one storage as two dtypes; torch.load of a file that does
    keeps the first (its cache of storages by key): so does the reader, without torch."""
    path = tmp_path / "two-types.pt"
    as_float = _Storage("storage", torch.FloatStorage, "0", "cpu", 4, None)
    as_int = _Storage("storage", torch.IntStorage, "0", "cpu", 4, None)
    tensors = {"f": _tensor(as_float, 4), "i": _tensor(as_int, 4)}
    _hand_written_legacy(path, tensors, ["0"], struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4))
    expected = torch.load(path, weights_only=True)
    assert expected["i"].dtype == torch.float32
    with open_checkpoint(path) as checkpoint:
        assert not checkpoint._tensors
        for name in ("f", "i"):
            assert torch.equal(checkpoint.tensor(name), expected[name])


def test_a_legacy_storage_view_is_left_to_torch(tmp_path):
    """Storage views (written by torch before 1.0) are read with torch, its bounds checked."""
    path = tmp_path / "view.pt"
    view = _Storage("storage", torch.FloatStorage, "0", "cpu", 4, ("v", 1, 2))
    _hand_written_legacy(path, {"w": _tensor(view, 2)}, ["0"], struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4))
    with pytest.raises(NeedsTorch):
        load_torch_file(path, describe=True)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.tensor("w").tolist() == [2, 3]
    outside = tmp_path / "outside.pt"
    view = _Storage("storage", torch.FloatStorage, "0", "cpu", 4, ("v", 3, 2))
    _hand_written_legacy(outside, {"w": _tensor(view, 2)}, ["0"], struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4))
    with pytest.raises(CorruptCheckpointError, match="view v is out of bounds"):
        open_checkpoint(outside)
