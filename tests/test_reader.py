"""The safe reader against real torch files, real anemoi-utils metadata and damaged files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from anemoi.utils.checkpoints import load_metadata, save_metadata

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.read.classmap import to_plain
from anemoi_ckpt_nb.errors import (
    CheckpointNotFoundError,
    CheckpointReadError,
    CorruptCheckpointError,
    NotACheckpointError,
)
from anemoi_ckpt_nb.read.checkpoint import TensorInfo
from anemoi_ckpt_nb.read.reader import open_checkpoint

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.uint16,
    torch.uint32,
]


def _sample(dtype: torch.dtype, shape=(3, 5)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    values = torch.randn(shape, generator=generator) * 50
    if dtype == torch.bool:
        return values > 0
    if dtype.is_complex:
        return torch.complex(values, -values).to(dtype)
    if not dtype.is_floating_point:
        return values.abs().to(torch.int64).to(dtype)
    return values.to(dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape or a.stride() != b.stride():
        return False
    return torch.equal(a.view(torch.uint8) if a.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else a,
                       b.view(torch.uint8) if b.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else b)


# --- round trips against torch.save -------------------------------------------------


#: torch can write the legacy format only for dtypes that had a storage class (FloatStorage, ...).
CASES = [(dtype, False) for dtype in DTYPES] + [
    (dtype, True) for dtype in DTYPES if dtype in torch.storage._dtype_to_storage_type_map()
]


@pytest.mark.parametrize(
    "dtype, legacy", CASES, ids=[f"{str(d).removeprefix('torch.')}-{'legacy' if lg else 'zip'}" for d, lg in CASES]
)
def test_every_dtype_round_trips(dtype, legacy, tmp_path):
    state = {"a": _sample(dtype), "b": _sample(dtype, (7,)), "scalar": _sample(dtype, ())}
    path = tmp_path / "weights.pt"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    expected = torch.load(path, weights_only=True)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.kind == "state-dict"
        assert checkpoint.format == ("legacy" if legacy else "zip")
        assert list(checkpoint.weights) == ["a", "b", "scalar"]
        for name, tensor in checkpoint.iter_weights():
            assert _same(tensor, expected[name]), name
            info = checkpoint.weights[name]
            assert info == TensorInfo(name, tuple(expected[name].shape), str(dtype).removeprefix("torch."), expected[name].nbytes)
        assert checkpoint.parameter_count == sum(t.numel() for t in expected.values())
        assert checkpoint.weights_bytes == sum(t.nbytes for t in expected.values())


def test_views_shared_storages_and_parameters_round_trip(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    param = torch.nn.Parameter(torch.randn(3, 3))
    state = {
        "base": base,
        "transposed": base.t(),  # non-contiguous view of the same storage
        "row": base[2],  # offset view
        "strided": base[:, ::2],
        "param": param,
        "tied": param,  # the same tensor under two names
        "empty": torch.empty(0, 5),
    }
    path = tmp_path / "views.pt"
    torch.save(state, path)
    expected = torch.load(path, weights_only=True)
    with open_checkpoint(path) as checkpoint:
        for name, tensor in checkpoint.iter_weights():
            assert _same(tensor, expected[name]), name
        # Shared bytes are counted once: base's storage and param's storage.
        assert checkpoint.weights_bytes == base.nbytes + param.nbytes
        # Views that cover distinct elements count; the tied parameter counts once.
        distinct = [base, base.t(), base[2], base[:, ::2], param, torch.empty(0, 5)]
        assert checkpoint.parameter_count == sum(t.numel() for t in distinct)
        assert checkpoint.tensor("transposed").stride() == (1, 6)


def test_tensors_are_memory_mapped_not_copied(tmp_path):
    path = tmp_path / "mapped.pt"
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, path)
    with open_checkpoint(path) as checkpoint:
        tensor = checkpoint.tensor("w")
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(next(n for n in zf.namelist() if n.endswith("/data/0")))
        # The tensor's bytes are those of the file at the entry's data offset.
        raw = path.read_bytes()
        start = raw.index(torch.arange(1000, dtype=torch.float32).numpy().tobytes())
        assert info.file_size == 4000
        assert bytes(tensor.numpy().tobytes()) == raw[start : start + 4000]
        tensor.add_(1)  # a private mapping: writing never reaches the file
    assert path.read_bytes() == raw


def test_plain_pickle_of_tensors(tmp_path):
    import pickle

    path = tmp_path / "plain.pkl"
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    path.write_bytes(pickle.dumps(state))
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == "pickle"
        assert checkpoint.kind == "state-dict"
        for name, tensor in checkpoint.iter_weights():
            assert _same(tensor, state[name])


# --- anemoi checkpoints -------------------------------------------------------------


def test_training_checkpoint(training_checkpoint):
    written = training_checkpoint
    with open_checkpoint(written.path) as checkpoint:
        assert checkpoint.kind == "training"
        assert list(checkpoint.weights) == written.state_dict_names
        assert (checkpoint.uuid, checkpoint.run_id, checkpoint.parent_uuid) == (written.uuid, written.run_id, None)
        assert (checkpoint.epoch, checkpoint.global_step) == (written.epoch, written.global_step)
        assert checkpoint.metadata_source == "anemoi.json"
        weights = examples._make_weights(written.weights_bytes, written.dtype, written.seed)
        for name, tensor in checkpoint.iter_weights():
            assert torch.equal(tensor, weights[name])
        assert checkpoint.parameter_count == sum(t.numel() for t in weights.values())
        assert checkpoint.weights_bytes == sum(t.nbytes for t in weights.values())
        # Adam: exp_avg and exp_avg_sq per parameter, plus a 4-byte step tensor each.
        assert checkpoint.optimizer_bytes == 2 * checkpoint.weights_bytes + 4 * len(weights)
        assert checkpoint.total_bytes == written.path.stat().st_size
        assert checkpoint.other_bytes == checkpoint.total_bytes - checkpoint.weights_bytes - checkpoint.optimizer_bytes
        assert ("omegaconf.dictconfig", "DictConfig") in checkpoint.opaque_classes
        assert ("anemoi.models.data_indices.collection", "IndexCollection") in checkpoint.opaque_classes


def test_metadata_is_what_anemoi_utils_reads(training_checkpoint):
    expected, arrays = load_metadata(str(training_checkpoint.path), supporting_arrays=True)
    with open_checkpoint(training_checkpoint.path) as checkpoint:
        assert checkpoint.metadata == expected
        assert checkpoint.supporting_arrays.keys() == arrays.keys()
        for name, array in arrays.items():
            np.testing.assert_array_equal(checkpoint.supporting_arrays[name], array)
            assert checkpoint.supporting_arrays[name].dtype == array.dtype


@pytest.mark.parametrize("name", ["anemoi.json", "ai-models.json"])
@pytest.mark.parametrize("nested", [False, True], ids=["one-dataset", "per-dataset"])
def test_metadata_written_by_anemoi_utils_save_metadata(name, nested, tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"model.w": torch.ones(4)}, path)
    metadata = {"version": "1.0", "uuid": "u-1", "run_id": "r-1", "parent_uuid": "p-0", "dataset": {"shape": [1, 2, 1, 5]}}
    arrays = {"latitudes": np.linspace(-90, 90, 5), "mask": np.array([True, False, True])}
    if nested:
        arrays = {"era5": arrays, "cerra": {"latitudes": np.arange(3, dtype=np.float32)}}
    save_metadata(str(path), metadata, supporting_arrays=arrays, name=name)

    expected, expected_arrays = load_metadata(str(path), supporting_arrays=True)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.metadata == expected
        assert checkpoint.metadata_source == name
        assert (checkpoint.uuid, checkpoint.run_id, checkpoint.parent_uuid) == ("u-1", "r-1", "p-0")

        def compare(got, want):
            assert got.keys() == want.keys()
            for key, value in want.items():
                if isinstance(value, dict):
                    compare(got[key], value)
                else:
                    np.testing.assert_array_equal(got[key], value)
                    assert got[key].dtype == value.dtype

        compare(checkpoint.supporting_arrays, expected_arrays)


@pytest.mark.parametrize("config_type", ["omegaconf", "pydantic"])
def test_metadata_from_hyper_parameters_when_not_embedded(config_type, tmp_path):
    written = examples.write_training_checkpoint(tmp_path / "old.ckpt", embedded=None, config_type=config_type)
    with open_checkpoint(written.path) as checkpoint:
        assert checkpoint.metadata_source == "hyper_parameters"
        assert checkpoint.metadata == written.metadata
        assert checkpoint.uuid == written.uuid
        for name, array in written.supporting_arrays.items():
            np.testing.assert_array_equal(checkpoint.supporting_arrays[name], array)
        config = to_plain(checkpoint.raw["hyper_parameters"]["config"])
        if config_type == "omegaconf":
            assert config == written.metadata["config"]
        else:
            assert config["model"]["num_channels"] == written.metadata["config"]["model"]["num_channels"]
            assert config["training"]["run_id"] == written.run_id
        indices = to_plain(checkpoint.raw["hyper_parameters"]["data_indices"])
        assert indices["name_to_index"] == written.metadata["data_indices"]["name_to_index"]
        assert indices["input"]["full"] == list(range(len(examples.VARIABLES)))  # a tensor, as a list


def test_omegaconf_translation_matches_to_container(tmp_path):
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "a": 1,
            "b": {"c": [1, "x", None, {"d": 2.5}], "ref": "${a}", "missing": "???"},
            "flag": True,
            "nothing": None,
            "empty": {},
            "typed": OmegaConf.structured({"x": 1}),
        }
    )
    path = tmp_path / "config.pt"
    torch.save({"state_dict": {}, "epoch": 0, "hyper_parameters": {"config": config}}, path)
    with open_checkpoint(path) as checkpoint:
        assert to_plain(checkpoint.raw["hyper_parameters"]["config"]) == OmegaConf.to_container(config, resolve=False)


def test_inference_checkpoint(tmp_path, training_checkpoint):
    written = examples.write_inference_checkpoint(tmp_path / "inference.ckpt", source=training_checkpoint)
    with open_checkpoint(written.path) as checkpoint, open_checkpoint(training_checkpoint.path) as training:
        assert checkpoint.kind == "inference"
        assert list(checkpoint.weights) == written.state_dict_names
        assert checkpoint.uuid == training_checkpoint.uuid
        assert checkpoint.optimizer_bytes == 0
        assert checkpoint.parameter_count == training.parameter_count
        for name, tensor in checkpoint.iter_weights():
            assert torch.equal(tensor, training.tensor(f"model.{name}"))
        assert ("anemoi.models.interface", "AnemoiModelInterface") in checkpoint.opaque_classes


def test_inference_checkpoint_of_a_real_torch_module(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    model[1].register_buffer("scratch", torch.zeros(2), persistent=False)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    expected = model.state_dict()
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.kind == "inference"
        assert list(checkpoint.weights) == list(expected)
        for name, tensor in checkpoint.iter_weights():
            assert torch.equal(tensor, expected[name])
        assert ("torch.nn.modules.linear", "Linear") in checkpoint.opaque_classes


def test_safetensors(tmp_path, training_checkpoint):
    metadata = {k: v for k, v in training_checkpoint.metadata.items() if k != "supporting_arrays_paths"}
    path = tmp_path / "weights.safetensors"
    weights = examples.write_safetensors(path, metadata=metadata, dtype="bfloat16")
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.kind == checkpoint.format == "safetensors"
        assert checkpoint.metadata == metadata
        assert checkpoint.uuid == training_checkpoint.metadata["uuid"]  # the embedded metadata it was given
        assert sorted(checkpoint.weights) == sorted(weights)
        for name, tensor in checkpoint.iter_weights():
            assert _same(tensor, weights[name])
        assert checkpoint.weights_bytes == sum(t.nbytes for t in weights.values())
        assert checkpoint.other_bytes == checkpoint.total_bytes - checkpoint.weights_bytes


def test_safetensors_supporting_arrays(tmp_path):
    from safetensors.torch import save_file

    from anemoi_ckpt_nb.read.embedded import SAFETENSORS_ARRAY_PREFIX

    path = tmp_path / "with-arrays.safetensors"
    latitudes = torch.linspace(-90, 90, 7, dtype=torch.float64)
    save_file({"w": torch.ones(2, 2), f"{SAFETENSORS_ARRAY_PREFIX}era5/latitudes": latitudes}, str(path))
    with open_checkpoint(path) as checkpoint:
        assert list(checkpoint.weights) == ["w"]
        np.testing.assert_array_equal(checkpoint.supporting_arrays["era5"]["latitudes"], latitudes.numpy())


def test_checkpoint_whose_classes_do_not_exist_reads_where_anemoi_is_blocked(training_checkpoint, tmp_path):
    """In a process where omegaconf, anemoi.models, anemoi.training and torch_geometric cannot be imported."""
    inference = examples.write_inference_checkpoint(tmp_path / "inference.ckpt", source=training_checkpoint)
    old = examples.write_training_checkpoint(tmp_path / "old.ckpt", embedded=None)
    code = textwrap.dedent(
        """
        import json, sys
        for name in ("omegaconf", "anemoi.models", "anemoi.training", "torch_geometric", "pydantic"):
            sys.modules[name] = None  # import of these now raises ImportError
        from anemoi_ckpt_nb.read.reader import open_checkpoint
        out = []
        for path in sys.argv[1:]:
            with open_checkpoint(path) as ck:
                out.append({"summary": ck.summary(), "metadata": ck.metadata})
        blocked = [m for m in ("omegaconf", "anemoi.models", "anemoi.training", "torch_geometric", "pydantic") if sys.modules.get(m) is not None]
        print(json.dumps({"results": out, "imported": blocked}))
        """
    )
    paths = [training_checkpoint.path, inference.path, old.path]
    done = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["imported"] == []
    kinds = [r["summary"]["kind"] for r in report["results"]]
    assert kinds == ["training", "inference", "training"]
    assert report["results"][0]["metadata"] == training_checkpoint.metadata
    assert report["results"][2]["metadata"] == old.metadata
    assert report["results"][2]["summary"]["metadata_source"] == "hyper_parameters"
    assert "omegaconf.dictconfig.DictConfig" in report["results"][2]["summary"]["opaque_classes"]


def test_renamed_modules_are_mapped_to_current_names(tmp_path):
    """A class pickled under an old aifs path is seen under today's anemoi path."""
    import types

    module = types.ModuleType("aifs.data.dataindices")
    sys.modules["aifs"] = types.ModuleType("aifs")
    sys.modules["aifs.data"] = types.ModuleType("aifs.data")
    sys.modules["aifs.data.dataindices"] = module

    class IndexCollection:
        pass

    IndexCollection.__module__ = "aifs.data.dataindices"
    IndexCollection.__qualname__ = "IndexCollection"
    module.IndexCollection = IndexCollection
    collection = IndexCollection()
    collection.name_to_index = {"2t": 0}
    path = tmp_path / "old.ckpt"
    try:
        torch.save({"state_dict": {}, "epoch": 0, "hyper_parameters": {"data_indices": collection}}, path)
    finally:
        for name in ("aifs.data.dataindices", "aifs.data", "aifs"):
            del sys.modules[name]
    with open_checkpoint(path) as checkpoint:
        placeholder = checkpoint.raw["hyper_parameters"]["data_indices"]
        assert placeholder.ph_path == "anemoi.models.data_indices.collection.IndexCollection"
        assert placeholder.ph_original == ("aifs.data.dataindices", "IndexCollection")
        assert to_plain(placeholder) == {"name_to_index": {"2t": 0}}
        assert ("aifs.data.dataindices", "IndexCollection") in checkpoint.opaque_classes


# --- bad files ----------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as caught:
        open_checkpoint(tmp_path / "nope.ckpt")
    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.path == str(tmp_path / "nope.ckpt")


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world\n", b'{"a": 1}', bytes(range(256)) * 4],
    ids=["empty", "text", "json", "random"],
)
def test_not_a_checkpoint(content, tmp_path):
    path = tmp_path / "file.ckpt"
    path.write_bytes(content)
    with pytest.raises(NotACheckpointError) as caught:
        open_checkpoint(path)
    assert caught.value.path == str(path)


def test_directory_zip_without_pickle_and_non_checkpoint_pickles(tmp_path):
    with pytest.raises(NotACheckpointError):
        open_checkpoint(tmp_path)
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("folder/readme.txt", "hi")
    with pytest.raises(NotACheckpointError, match="without data.pkl"):
        open_checkpoint(archive)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(NotACheckpointError, match="list"):
        open_checkpoint(listing)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(NotACheckpointError, match="TorchScript"):
        open_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999, 100 / 594_000], ids=["half", "90%", "all-but-end", "first-100-bytes"])
def test_truncated_archive(keep, fresh_training_checkpoint, tmp_path):
    data = fresh_training_checkpoint.path.read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: max(100, int(len(data) * keep))])
    with pytest.raises(CorruptCheckpointError) as caught:
        open_checkpoint(path)
    assert caught.value.path == str(path)


def test_truncated_storage_data_is_caught(tmp_path):
    """A file cut inside its storages, with the central directory rebuilt, is refused, not read past its end."""
    source = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(100_000)}, source)
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data/0"):
                data = data[:1000]  # the archive now holds 1000 bytes where the pickle expects 400000
            dst.writestr(info, data)
    with pytest.raises(CorruptCheckpointError, match="storage 0"):
        open_checkpoint(damaged)


def test_corrupt_pickle_and_missing_storage(tmp_path):
    source = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3), "v": torch.zeros(2)}, source)

    def rewrite(target: Path, change) -> None:
        with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                changed = change(info.filename, src.read(info))
                if changed is not None:
                    dst.writestr(info, changed)

    garbled = tmp_path / "garbled.pt"
    rewrite(garbled, lambda name, data: data[:10] + b"\xff\xfe" + data[12:] if name.endswith("data.pkl") else data)
    with pytest.raises(CorruptCheckpointError, match="damaged"):
        open_checkpoint(garbled)

    missing = tmp_path / "missing.pt"
    rewrite(missing, lambda name, data: None if name.endswith("/data/1") else data)
    with pytest.raises(CorruptCheckpointError, match="lacks"):
        open_checkpoint(missing)

    flipped = tmp_path / "flipped.pt"
    raw = bytearray(source.read_bytes())
    position = raw.index(b"data.pkl") + 40  # inside the stored pickle: the CRC no longer matches
    raw[position] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError):
        open_checkpoint(flipped)


def test_oversized_pickle_is_refused_before_reading(tmp_path):
    path = tmp_path / "big-pickle.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1, "blob": "x" * 200_000}, path)
    with pytest.raises(CheckpointReadError, match="over the limit"):
        open_checkpoint(path, max_pickle_bytes=100_000)
    with open_checkpoint(path) as checkpoint:
        assert list(checkpoint.weights) == ["w"]


def test_compressed_pickle_bomb_is_capped(tmp_path):
    """A data.pkl that inflates to far more than the cap is stopped after reading the cap."""
    source = tmp_path / "small.pt"
    torch.save({"w": torch.ones(2)}, source)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("data.pkl"):
                dst.writestr(info.filename, src.read(info) + b"\x00" * 50_000_000, compress_type=zipfile.ZIP_DEFLATED)
            else:
                dst.writestr(info, src.read(info))
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(CheckpointReadError, match="over the limit"):
        open_checkpoint(bomb, max_pickle_bytes=1_000_000)


def test_tensor_errors_and_close(training_checkpoint):
    checkpoint = open_checkpoint(training_checkpoint.path)
    with pytest.raises(KeyError, match="no weight"):
        checkpoint.tensor("model.nope")
    checkpoint.close()
    with pytest.raises(ValueError, match="closed"):
        checkpoint.tensor(training_checkpoint.state_dict_names[0])


def test_file_rewritten_by_anemoi_utils_replace_metadata(tmp_path):
    """replace_metadata rebuilds the archive with Python's zipfile: entries move and lose their alignment."""
    from anemoi.utils.checkpoints import replace_metadata

    path = tmp_path / "edited.ckpt"
    weights = {"model.w": torch.randn(33, 7), "model.b": torch.arange(5, dtype=torch.int64), "model.h": torch.ones(3, dtype=torch.float16)}
    torch.save({"state_dict": weights, "epoch": 2, "global_step": 20}, path)
    save_metadata(str(path), {"version": "1.0", "uuid": "first"})
    replace_metadata(str(path), {"version": "1.0", "uuid": "second"}, {"latitudes": np.arange(4.0)})
    expected, arrays = load_metadata(str(path), supporting_arrays=True)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.metadata == expected and checkpoint.uuid == "second"
        assert checkpoint.supporting_arrays.keys() == arrays.keys()
        for name, tensor in checkpoint.iter_weights():
            assert torch.equal(tensor, weights[name])


def test_big_endian_archive(tmp_path):
    source = tmp_path / "little.pt"
    values = torch.linspace(-3, 3, 11, dtype=torch.float64)
    torch.save({"w": values}, source)
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif info.filename.endswith("/data/0"):
                data = np.frombuffer(data, dtype="<f8").astype(">f8").tobytes()
            dst.writestr(info, data)
    assert torch.equal(torch.load(big, weights_only=True)["w"], values)  # torch agrees on the format
    with open_checkpoint(big) as checkpoint:
        assert torch.equal(checkpoint.tensor("w"), values)


def test_deeply_nested_supporting_arrays_are_a_clear_error_not_a_recursion_error(tmp_path):
    """A hand-made pickle whose hyper_parameters["supporting_arrays"] nests 200,000 lists."""
    import struct

    from anemoi_ckpt_nb.errors import CorruptCheckpointError
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    def text(value: str) -> bytes:
        return b"X" + struct.pack("<I", len(value)) + value.encode()

    depth = 200_000
    nested = b"]" * depth + b"a" * (depth - 1)  # EMPTY_LIST pushes, then APPENDs fold them into one chain
    data = (
        b"\x80\x02}(" + text("epoch") + b"K\x01" + text("global_step") + b"K\x01" + text("state_dict") + b"}"
        + text("hyper_parameters") + b"}(" + text("metadata") + b"}" + text("supporting_arrays")
        + b"}(" + text("latitudes") + nested + b"uuu."
    )
    path = tmp_path / "deep.ckpt"
    path.write_bytes(data)
    with pytest.raises(CorruptCheckpointError, match="nested too deeply"):
        open_checkpoint(path)


def test_a_file_truncated_after_opening_is_an_error_not_a_crash(tmp_path):
    """Tensors are slices of a memory map: touching one past a truncated end is SIGBUS."""
    import os

    from anemoi_ckpt_nb.errors import CheckpointReadError

    ckpt = examples.write_training_checkpoint(tmp_path / "last.ckpt", weights_bytes=2_000_000)
    with open_checkpoint(ckpt.path) as ck:
        name = next(iter(ck.weights))
        assert not ck.changed_on_disk()
        os.truncate(ck.path, 1000)
        assert ck.changed_on_disk()
        with pytest.raises(CheckpointReadError, match="changed on disk since it was opened") as caught:
            ck.tensor(name)
        assert "open it again" in caught.value.hint
