"""Training -> inference conversion: content, formats, metadata, determinism, failures, batches."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.conversion.batch import ConvertOutcome, convert_many
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.conversion.plan import default_name, map_name, sidecar_path
from anemoi_ckpt_nb.errors import ConvertError
from anemoi_ckpt_nb.storage.hashing import sha256_file
from rootless import held_to_permissions

# --- a Lightning checkpoint made of plain data, so the test can read it back with plain torch.load ----

INFERENCE_NAMES = {
    "model.model.encoder.weight": "model.encoder.weight",
    "model.model.encoder.bias": "model.encoder.bias",
    "model.model.processor.0.weight": "model.processor.0.weight",
    "model.pre_processors.normalizer._norm_mul": "pre_processors.normalizer._norm_mul",
}


def write_lightning_checkpoint(path: Path, *, grid: int = 40) -> dict:
    """A training checkpoint as Lightning saves an Anemoi run: weights under ``model.``, a loss
    buffer of the Lightning module itself, Adam state, and metadata embedded by the real anemoi-utils."""
    from anemoi.utils.checkpoints import save_metadata

    generator = torch.Generator().manual_seed(1)
    state = {
        "model.model.encoder.weight": torch.randn(16, 8, generator=generator),
        "model.model.encoder.bias": torch.randn(16, generator=generator),
        "model.model.processor.0.weight": torch.randn(16, 16, generator=generator).to(torch.bfloat16),
        "model.pre_processors.normalizer._norm_mul": torch.rand(8, generator=generator),
        "loss.node_weights": torch.rand(grid, generator=generator),
    }
    params = [t for name, t in state.items() if name.startswith("model.")]
    adam = {
        "state": {
            i: {"step": torch.tensor(30.0), "exp_avg": torch.randn(p.shape) * 1e-3, "exp_avg_sq": torch.rand(p.shape) * 1e-6}
            for i, p in enumerate(params)
        },
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "params": list(range(len(params)))}],
    }
    metadata = {
        "version": "1.0",
        "uuid": str(uuid.uuid4()),
        "run_id": str(uuid.uuid4()),
        "dataset": {"variables": ["2t", "msl"], "shape": [10, 2, 1, grid]},
        "training": {"current_epoch": 3, "global_step": 300},
    }
    arrays = {"latitudes": np.linspace(-90, 90, grid), "longitudes": np.linspace(0, 360, grid, endpoint=False)}
    checkpoint = {
        "epoch": 3,
        "global_step": 300,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}}},
        "callbacks": {},
        "optimizer_states": [adam],
        "lr_schedulers": [{"last_epoch": 300}],
        "hyper_parameters": {"metadata": metadata},
    }
    torch.save(checkpoint, path)
    save_metadata(str(path), metadata, supporting_arrays=arrays)
    return {"state": state, "adam": adam, "metadata": metadata, "arrays": arrays}


@pytest.fixture
def lightning(tmp_path) -> tuple[Path, dict]:
    path = tmp_path / "runs" / "last.ckpt"
    path.parent.mkdir()
    return path, write_lightning_checkpoint(path)


@pytest.fixture
def out(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


# --- content ---------------------------------------------------------------------------------------


def test_weights_equal_the_training_state_dict_under_inference_names(lightning, out):
    path, written = lightning
    result = convert(path, out)

    source = torch.load(path, weights_only=True)["state_dict"]
    converted = torch.load(result.destination, weights_only=True)

    assert type(converted) is dict
    assert list(converted) == list(INFERENCE_NAMES.values())
    for training_name, inference_name in INFERENCE_NAMES.items():
        assert converted[inference_name].dtype == source[training_name].dtype
        assert converted[inference_name].shape == source[training_name].shape
        assert torch.equal(_bits(converted[inference_name]), _bits(source[training_name])), inference_name
    assert result.dropped == ["loss.node_weights"]
    assert result.tensors == 4
    assert result.weights_bytes == sum(source[name].nbytes for name in INFERENCE_NAMES)
    assert result.destination == out / "inference-last.ckpt"


def test_output_loads_into_the_inference_model(lightning, out):
    """The names are those of AnemoiModelInterface, which anemoi-training pickles for inference."""
    path, _ = lightning

    class Normalizer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("_norm_mul", torch.zeros(8))

    class Interface(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.encoder = torch.nn.Linear(8, 16)
            self.model.processor = torch.nn.ModuleList([torch.nn.Linear(16, 16, bias=False, dtype=torch.bfloat16)])
            self.pre_processors = torch.nn.Module()
            self.pre_processors.normalizer = Normalizer()

    model = Interface()
    weights = torch.load(convert(path, out).destination, weights_only=True, mmap=True)
    model.load_state_dict(weights, strict=True)
    assert torch.equal(model.model.encoder.bias, torch.load(path, weights_only=True)["state_dict"]["model.model.encoder.bias"])


def test_name_mapping_strips_the_lightning_module_prefix_once():
    assert map_name("model.model.encoder.weight") == "model.encoder.weight"
    assert map_name("model.pre_processors.normalizer._norm_mul") == "pre_processors.normalizer._norm_mul"
    assert map_name("loss.node_weights") is None
    assert map_name("model.") is None
    assert map_name("model.encoder.weight", "inference") == "model.encoder.weight"


def test_no_optimizer_state_in_the_output(lightning, out):
    path, written = lightning
    result = convert(path, out)

    with zipfile.ZipFile(result.destination) as zf:
        storages = [n for n in zf.namelist() if "/data/" in n]
        stored = sum(zf.getinfo(n).file_size for n in storages)
        blob = b"".join(zf.read(n) for n in storages)
    assert len(storages) == 4
    assert stored == result.weights_bytes
    for state in written["adam"]["state"].values():
        for key in ("exp_avg", "exp_avg_sq"):
            assert _bits(state[key]).numpy().tobytes() not in blob
    assert result.size < os.path.getsize(path) / 2


def test_torch_loads_the_output_with_weights_only_and_mmap(lightning, out):
    path, _ = lightning
    result = convert(path, out)
    for mmap in (False, True):
        weights = torch.load(result.destination, weights_only=True, mmap=mmap)
        assert set(weights) == set(INFERENCE_NAMES.values())


# --- metadata ----------------------------------------------------------------------------------------


def test_anemoi_utils_reads_the_metadata_and_supporting_arrays(lightning, out):
    from anemoi.utils.checkpoints import load_metadata

    path, written = lightning
    result = convert(path, out)

    metadata, arrays = load_metadata(str(result.destination), supporting_arrays=True)

    assert metadata == json.loads(result.sidecar.read_text())
    assert metadata["dataset"] == written["metadata"]["dataset"]
    assert set(arrays) == {"latitudes", "longitudes"}
    for name, array in written["arrays"].items():
        np.testing.assert_array_equal(arrays[name], array)


def test_anemoi_utils_reads_an_example_training_checkpoint_conversion(training_checkpoint, out):
    from anemoi.utils.checkpoints import load_metadata

    result = convert(training_checkpoint.path, out)
    metadata, arrays = load_metadata(str(result.destination), supporting_arrays=True)

    assert metadata["run_id"] == training_checkpoint.run_id
    assert metadata["converted_from"]["uuid"] == training_checkpoint.uuid
    for name, array in training_checkpoint.supporting_arrays.items():
        np.testing.assert_array_equal(arrays[name], array)
    names = {n.split(".", 1)[1] for n in training_checkpoint.state_dict_names}
    assert set(torch.load(result.destination, weights_only=True)) == names


def test_anemoi_utils_metadata_command_reads_it(lightning, out):
    path, written = lightning
    result = convert(path, out)
    command = Path(sys.executable).with_name("anemoi-utils")
    if not command.exists():
        pytest.skip("the anemoi-utils command is not installed beside this python")

    dumped = subprocess.run(
        [str(command), "metadata", "--dump", "--json", str(result.destination)], capture_output=True, text=True, check=True
    )
    listed = subprocess.run(
        [str(command), "metadata", "--supporting-arrays", str(result.destination)], capture_output=True, text=True, check=True
    )

    assert json.loads(dumped.stdout) == result.metadata
    assert "latitudes: shape=(40,) dtype=float64" in listed.stdout


def test_sidecar_has_the_enriched_metadata_without_supporting_arrays(tmp_path, out):
    ckpt = examples.write_training_checkpoint(tmp_path / "big-grid.ckpt", grid_points=5000)
    result = convert(ckpt.path, out)

    assert result.sidecar == sidecar_path(result.destination) == out / "inference-big-grid.ckpt.json"
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar == result.metadata

    def longest_list(value) -> int:
        if isinstance(value, dict):
            return max([longest_list(v) for v in value.values()], default=0)
        if isinstance(value, list):
            return max([len(value), *(longest_list(v) for v in value)])
        return 0

    assert longest_list(sidecar) < 5000  # the arrays are in the archive, described, not listed
    assert sidecar["supporting_arrays_paths"]["latitudes"] == {
        "path": "inference-big-grid/anemoi-metadata/latitudes.numpy",
        "shape": [5000],
        "dtype": "float64",
    }
    assert result.sidecar.stat().st_size < 50_000


def test_new_uuid_and_converted_from(lightning, out):
    path, written = lightning
    result = convert(path, out)
    metadata = result.metadata

    assert metadata["uuid"] == result.uuid != written["metadata"]["uuid"]
    uuid.UUID(result.uuid)
    assert metadata["converted_from"] == {
        "uuid": written["metadata"]["uuid"],
        "sha256": sha256_file(path),
        "path": str(path.resolve()),
    }
    assert metadata["conversion"]["tool"] == "anemoi-ckpt-nb"
    assert metadata["conversion"]["version"]
    assert metadata["conversion"]["format"] == "anemoi"
    assert metadata["conversion"]["time"].endswith("+00:00")
    assert metadata["run_id"] == written["metadata"]["run_id"]
    assert result.sha256 == sha256_file(result.destination)
    assert result.size == result.destination.stat().st_size


def test_a_known_source_hash_is_used_as_given(lightning, out):
    path, _ = lightning
    result = convert(path, out, source_sha256="ab" * 32)
    assert result.source_sha256 == "ab" * 32
    assert result.metadata["converted_from"]["sha256"] == "ab" * 32


def test_safetensors_format(lightning, out):
    from safetensors import safe_open

    path, written = lightning
    result = convert(path, out, format="safetensors")

    assert result.destination == out / "inference-last.safetensors"
    assert not result.destination.read_bytes().startswith(b"PK")  # no zip, no pickle
    source = torch.load(path, weights_only=True)["state_dict"]
    with safe_open(str(result.destination), framework="pt") as opened:
        metadata = json.loads(opened.metadata()["anemoi"])
        for training_name, inference_name in INFERENCE_NAMES.items():
            assert torch.equal(_bits(opened.get_tensor(inference_name)), _bits(source[training_name]))
        for name, array in written["arrays"].items():
            assert metadata["supporting_arrays_paths"][name]["path"] == f"anemoi-supporting-arrays/{name}"
            np.testing.assert_array_equal(opened.get_tensor(f"anemoi-supporting-arrays/{name}").numpy(), array)
    assert metadata == json.loads(result.sidecar.read_text()) == result.metadata
    assert metadata["conversion"]["format"] == "safetensors"
    assert result.sha256 == sha256_file(result.destination)
    assert result.source_sha256 == sha256_file(path)


def test_inference_checkpoint_source_keeps_its_names(tmp_path, out):
    training = examples.write_training_checkpoint(tmp_path / "t.ckpt")
    inference = examples.write_inference_checkpoint(tmp_path / "inference-t.ckpt", source=training)

    result = convert(inference.path, out)

    assert set(torch.load(result.destination, weights_only=True)) == set(inference.state_dict_names)
    assert result.metadata["converted_from"]["uuid"] == inference.uuid


def test_metadata_only_in_hyper_parameters(tmp_path, out):
    from anemoi.utils.checkpoints import load_metadata

    ckpt = examples.write_training_checkpoint(tmp_path / "old.ckpt", embedded=None)
    result = convert(ckpt.path, out)

    metadata, arrays = load_metadata(str(result.destination), supporting_arrays=True)
    assert metadata["converted_from"]["uuid"] == ckpt.uuid
    assert metadata["dataset"] == ckpt.metadata["dataset"]
    np.testing.assert_array_equal(arrays["latitudes"], ckpt.supporting_arrays["latitudes"])


def test_metadata_entries_are_written_by_one_shared_definition(lightning, out, tmp_path):
    """The converter's streaming writer appends exactly what embedded.write_embedded appends."""
    from anemoi_ckpt_nb.read.embedded import embedded_entries, write_embedded

    path, written = lightning
    result = convert(path, out)
    with zipfile.ZipFile(result.destination) as zf:
        streamed = {n: zf.read(n) for n in zf.namelist() if "/anemoi-metadata/" in n}

    metadata, entries = embedded_entries("inference-last", result.metadata, written["arrays"])
    assert metadata == result.metadata
    assert dict(entries) == streamed
    assert list(streamed)[0] == "inference-last/anemoi-metadata/anemoi.json"

    with zipfile.ZipFile(tmp_path / "appended.zip", "w") as zf:
        write_embedded(zf, "inference-last", result.metadata, written["arrays"])
    with zipfile.ZipFile(tmp_path / "appended.zip") as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == streamed


def test_safetensors_layout_of_nested_supporting_arrays(tmp_path, out):
    """Per-dataset (nested) supporting arrays, one of them big-endian, through the safetensors layout."""
    from anemoi.utils.checkpoints import save_metadata

    from anemoi_ckpt_nb.read.embedded import safetensors_array_keys, safetensors_array_name, safetensors_arrays
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    arrays = {
        "era5": {"latitudes": np.linspace(-90, 90, 7), "longitudes": np.linspace(0, 360, 7).astype(">f8")},
        "cerra": {"latitudes": np.linspace(20, 70, 5, dtype=np.float32)},
    }
    path = tmp_path / "multi.ckpt"
    metadata = {"version": "1.0", "uuid": str(uuid.uuid4())}
    state = {"model.model.w": torch.ones(3, 2)}
    torch.save({"epoch": 1, "global_step": 1, "state_dict": state, "optimizer_states": [], "hyper_parameters": {"metadata": metadata}}, path)
    save_metadata(str(path), metadata, supporting_arrays=arrays)

    result = convert(path, out, format="safetensors")

    tensors, paths = safetensors_arrays(arrays)
    assert [name for name, _ in tensors] == [
        "anemoi-supporting-arrays/era5/latitudes",
        "anemoi-supporting-arrays/era5/longitudes",
        "anemoi-supporting-arrays/cerra/latitudes",
    ]
    assert result.metadata["supporting_arrays_paths"] == paths
    assert paths["era5"]["longitudes"] == {"path": "anemoi-supporting-arrays/era5/longitudes", "shape": [7], "dtype": "float64"}
    with open_checkpoint(result.destination) as ck:
        assert list(ck.weights) == ["model.w"]
        assert ck.supporting_arrays.keys() == arrays.keys()
        for dataset, values in arrays.items():
            for key, array in values.items():
                np.testing.assert_array_equal(ck.supporting_arrays[dataset][key], array)
    assert safetensors_array_keys(safetensors_array_name(["era5", "latitudes"])) == ["era5", "latitudes"]
    assert safetensors_array_keys("model.w") is None
    assert safetensors_array_keys("anemoi-supporting-arrays/") is None


def test_checkpoint_convert_registers_the_output_without_hashing_it_again(tmp_path, monkeypatch):
    """The converter computed the output's sha256 as it read it back; registration uses that one."""
    from anemoi_ckpt_nb.api import Catalogue
    from anemoi_ckpt_nb.storage import hashing
    from anemoi_ckpt_nb.catalogue.register import register_paths
    from anemoi_ckpt_nb.errors import CatalogueError

    catalogue = Catalogue.create(str(tmp_path / "catalogue"))
    training = examples.write_training_checkpoint(tmp_path / "run" / "last.ckpt", weights_bytes=50_000)
    registered = catalogue.register(training.path)
    hashed: list[Path] = []
    real = hashing.sha256_file

    def counting(path, **options):
        hashed.append(Path(path).resolve())
        return real(path, **options)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    inference = registered.convert(tmp_path / "inference")

    destination = tmp_path / "inference" / "inference-last.ckpt"
    assert destination.resolve() not in hashed
    assert inference.sha256 == real(destination)
    assert inference.kind == "inference"
    assert [(p.uuid, p.relation) for p in inference.parents] == [(training.uuid, "converted-from")]
    with pytest.raises(CatalogueError, match="single checkpoint"):
        register_paths(catalogue.store, [destination, training.path], sha256=inference.sha256)


# --- determinism, memory ------------------------------------------------------------------------


def _entries_without_metadata(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith("anemoi.json")}


def _without_fresh_fields(metadata: dict) -> dict:
    metadata = json.loads(json.dumps(metadata))
    del metadata["uuid"], metadata["conversion"]["time"]
    return metadata


def test_same_input_gives_identical_weights(lightning, tmp_path):
    path, _ = lightning
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = convert(path, tmp_path / "a")
    second = convert(path, tmp_path / "b")

    assert first.uuid != second.uuid
    assert _entries_without_metadata(first.destination) == _entries_without_metadata(second.destination)
    # Every byte before the metadata entry (the weights archive proper) is identical.
    with zipfile.ZipFile(first.destination) as zf:
        metadata_offset = zf.getinfo("inference-last/anemoi-metadata/anemoi.json").header_offset
    assert first.destination.read_bytes()[:metadata_offset] == second.destination.read_bytes()[:metadata_offset]
    assert _without_fresh_fields(first.metadata) == _without_fresh_fields(second.metadata)


def test_same_input_gives_identical_safetensors_data(lightning, tmp_path):
    path, _ = lightning
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = convert(path, tmp_path / "a", format="safetensors")
    second = convert(path, tmp_path / "b", format="safetensors")

    def data_section(file: Path) -> bytes:
        raw = file.read_bytes()
        return raw[8 + int.from_bytes(raw[:8], "little") :]

    assert data_section(first.destination) == data_section(second.destination)
    assert _without_fresh_fields(first.metadata) == _without_fresh_fields(second.metadata)


def test_tensors_are_read_by_file_offset_not_through_the_memory_map(training_checkpoint):
    """Reading through the reader's map would keep every weight page resident; the converter
    hands out each tensor's bytes where the reader says they lie: as runs of the file for the
    kernel to copy, or read into one reused buffer."""
    from anemoi_ckpt_nb.conversion.files import SourceFile
    from anemoi_ckpt_nb.conversion.streams import FileRange
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    with open_checkpoint(training_checkpoint.path) as ck, open(training_checkpoint.path, "rb") as raw:
        files = SourceFile(training_checkpoint.path, ck)
        try:
            for name in ck.weights:
                assert files.span(name) == ck.tensor_span(name) is not None, name
                expected = _bits(ck.tensor(name)).numpy().tobytes()
                read, buffers = b"", set()
                for chunk in files.reader(name)():
                    assert isinstance(chunk, memoryview)
                    buffers.add(id(chunk.obj))
                    read += bytes(chunk)
                assert read == expected and len(buffers) <= 1, name  # one buffer, reused
                copied = b""
                for piece in files.reader(name, copy=True)():
                    assert isinstance(piece, FileRange)
                    copied += os.pread(raw.fileno(), piece.nbytes, piece.offset)
                assert copied == expected, name
        finally:
            files.close()


@pytest.mark.parametrize("size", [0, 3, 4096, 4 * 1024 * 1024 + 1, 9 * 1024 * 1024 + 4093])
def test_the_source_hash_thread_hashes_the_whole_file(tmp_path, size, monkeypatch):
    """Sizes around the 4 MiB chunks and the 4 KiB blocks that direct reads use."""
    from anemoi_ckpt_nb.conversion.files import SourceHash

    monkeypatch.setenv("ANEMOI_CKPT_HASH_CACHE", "off")  # read every time (the cache: test_hash_cache.py)
    path = tmp_path / "blob"
    path.write_bytes(np.random.default_rng(size).bytes(size))
    assert SourceHash(path).result() == hashlib.sha256(path.read_bytes()).hexdigest()

    cancelled = SourceHash(path)
    cancelled.cancel()  # returns: the threads stop within a chunk
    assert not cancelled._reader.is_alive() and not cancelled._hasher.is_alive()


def test_the_converter_has_no_platform_specific_offset_lookup():
    """Offsets come from the file's structure (tensor_span), not from this process's memory maps."""
    import anemoi_ckpt_nb.conversion.files as convert_files

    assert "/proc/self/maps" not in Path(convert_files.__file__).read_text()


def test_non_contiguous_and_legacy_sources_convert_too(tmp_path, out):
    """A weight that is not a run of the file's bytes is read from memory; a legacy file by offset."""
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    state = {"model.model.a": base, "model.model.t": base.t(), "model.model.rows": base[2:4], "model.model.h": torch.ones(3).half()}
    for legacy in (False, True):
        path = tmp_path / f"{'legacy' if legacy else 'zip'}.ckpt"
        torch.save(
            {"epoch": 1, "global_step": 1, "state_dict": state, "optimizer_states": [], "hyper_parameters": {"metadata": {"uuid": "u"}}},
            path,
            _use_new_zipfile_serialization=not legacy,
        )
        result = convert(path, out)
        converted = torch.load(result.destination, weights_only=True)
        for name, tensor in state.items():
            assert torch.equal(converted[name.removeprefix("model.")], tensor), (legacy, name)
            assert converted[name.removeprefix("model.")].is_contiguous()


def test_an_expanded_weight_is_written_dense_but_a_huge_one_is_refused(tmp_path, out):
    """Elements that overlap in the file (stride 0) are made dense in memory: fine for a small
    weight, refused for one claiming far more than the file holds (a crafted or broken file)."""
    small = torch.arange(4, dtype=torch.float32).expand(3, 4)
    path = tmp_path / "small.ckpt"
    torch.save({"epoch": 1, "global_step": 1, "state_dict": {"model.model.e": small}, "optimizer_states": [],
                "hyper_parameters": {"metadata": {"uuid": "u"}}}, path)
    converted = torch.load(convert(path, out).destination, weights_only=True)
    assert torch.equal(converted["model.e"], small) and converted["model.e"].stride() == (4, 1)

    huge = torch.zeros(1).expand(100_000_000)  # 400 MB claimed over 4 bytes stored
    path = tmp_path / "huge.ckpt"
    torch.save({"epoch": 1, "global_step": 1, "state_dict": {"model.model.h": huge, "model.model.ok": small.clone()},
                "optimizer_states": [], "hyper_parameters": {"metadata": {"uuid": "u"}}}, path)
    with pytest.raises(ConvertError, match=r"model\.model\.h is a view of 4 B stored .* 400\.0 MB") as caught:
        convert(path, out, overwrite=True)
    assert "contiguous" in caught.value.hint
    assert not any(p.name.startswith("inference-huge") for p in out.iterdir())


# --- failures --------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("format", ["anemoi", "safetensors"])
def test_disk_full_mid_write_leaves_no_file(tmp_path, out, format):
    ckpt = examples.write_training_checkpoint(tmp_path / "t.ckpt", weights_bytes=2_000_000)

    def disk_full_halfway(done: int, total: int) -> None:
        if done > total // 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(ConvertError) as raised:
        convert(ckpt.path, out, format=format, progress=disk_full_halfway)

    assert "no space left" in str(raised.value)
    assert str(ckpt.path) in str(raised.value) and "inference-t" in str(raised.value)
    assert raised.value.hint
    assert _leftovers(out) == []


def test_interruption_mid_write_leaves_no_file(tmp_path, out):
    ckpt = examples.write_training_checkpoint(tmp_path / "t.ckpt", weights_bytes=2_000_000)

    def interrupt(done: int, total: int) -> None:
        if done > total // 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ckpt.path, out, progress=interrupt)
    assert _leftovers(out) == []


def test_a_real_write_failure_mid_file_leaves_no_file(tmp_path, out):
    """The operating system refuses to let the file grow past 1 MB (RLIMIT_FSIZE): a real write error."""
    ckpt = examples.write_training_checkpoint(tmp_path / "t.ckpt", weights_bytes=4_000_000)
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.errors import ConvertError
try:
    convert({str(ckpt.path)!r}, {str(out)!r})
except ConvertError as error:
    print(error)
    sys.exit(7)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 7, done.stderr
    assert "file too large" in done.stdout
    assert _leftovers(out) == []


def test_existing_destination_is_refused_without_overwrite(lightning, out):
    path, _ = lightning
    first = convert(path, out)
    before = first.destination.read_bytes()

    with pytest.raises(ConvertError, match="already exists") as raised:
        convert(path, out)
    assert "--overwrite" in raised.value.hint
    assert first.destination.read_bytes() == before

    second = convert(path, out, overwrite=True)
    assert json.loads(second.sidecar.read_text())["uuid"] == second.uuid != first.uuid
    assert _leftovers(out) == ["inference-last.ckpt", "inference-last.ckpt.json"]


def test_truncated_source_is_refused_and_named(tmp_path, out):
    ckpt = examples.write_training_checkpoint(tmp_path / "t.ckpt")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(ckpt.path.read_bytes()[: ckpt.path.stat().st_size // 2])

    with pytest.raises(ConvertError) as raised:
        convert(broken, out)
    assert str(broken) in str(raised.value)
    assert raised.value.hint
    assert _leftovers(out) == []


def test_source_without_model_weights_is_refused(tmp_path, out):
    path = tmp_path / "nomodel.ckpt"
    torch.save({"epoch": 1, "global_step": 1, "state_dict": {"loss.w": torch.ones(3)}, "optimizer_states": []}, path)
    with pytest.raises(ConvertError, match="no model weights"):
        convert(path, out)
    assert _leftovers(out) == []


def test_plain_state_dict_is_refused(tmp_path, out):
    path = tmp_path / "weights.pt"
    examples.write_state_dict(path)
    with pytest.raises(ConvertError, match="not a training checkpoint"):
        convert(path, out)


def test_missing_source(tmp_path, out):
    with pytest.raises(ConvertError, match="no such file"):
        convert(tmp_path / "nope.ckpt", out)


def test_bad_destinations(lightning, tmp_path):
    path, _ = lightning
    with pytest.raises(ConvertError, match="does not exist") as raised:
        convert(path, tmp_path / "missing" / "x.ckpt")
    assert "mkdir" in raised.value.hint
    # A missing folder (a trailing slash, or no suffix) is created, as `anemoi-ckpt convert -o` does.
    assert convert(path, f"{tmp_path}/missing-folder/").destination.parent == tmp_path / "missing-folder"
    assert convert(path, tmp_path / "other-folder").destination.parent == tmp_path / "other-folder"
    with pytest.raises(ConvertError, match="unknown format"):
        convert(path, tmp_path, format="onnx")
    with pytest.raises(ConvertError, match="safetensors"):
        convert(path, tmp_path / "x.safetensors")
    with pytest.raises(ConvertError, match=r"\.safetensors name"):
        convert(path, tmp_path / "x.ckpt", format="safetensors")
    with pytest.raises(ConvertError, match="is the source"):
        convert(path, path, overwrite=True)


def test_an_explicit_file_name(lightning, tmp_path):
    path, _ = lightning
    result = convert(path, tmp_path / "aifs.pt")
    assert result.destination == tmp_path / "aifs.pt"
    assert result.sidecar == tmp_path / "aifs.pt.json"
    with zipfile.ZipFile(result.destination) as zf:
        assert zf.namelist()[0] == "aifs/data.pkl"


def test_permission_denied(lightning, tmp_path):
    """A destination folder the user may not write to: one clear error, no file, exit status 1.

    CI runs as root, who may write anywhere; there the conversion runs in a child
    process without root's power over permissions, so the refusal is real too.
    """
    path, _ = lightning
    locked = tmp_path / "locked"
    locked.mkdir()
    preexec = held_to_permissions()
    script = f"""
import sys
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.errors import ConvertError
try:
    convert({str(path)!r}, {str(locked)!r})
except ConvertError as error:
    print("ConvertError:", error)
    print("hint:", error.hint)
else:
    print("converted: the folder was writable")
sys.exit(main(["convert", {str(path)!r}, "-o", {str(locked)!r}]))
"""
    locked.chmod(0o500)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            preexec_fn=preexec,
        )
    finally:
        locked.chmod(0o700)

    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines[0].startswith("ConvertError:") and "permission denied" in lines[0], lines
    assert str(path) in lines[0] and str(locked) in lines[0]
    assert lines[1].startswith("hint:") and "-o" in lines[1]
    (failed,) = lines[2:]  # the command: one line for the one input
    assert failed.startswith("FAILED") and "permission denied" in failed
    assert "Traceback" not in done.stderr
    assert _leftovers(locked) == []


def test_a_source_rewritten_during_the_conversion_is_refused(tmp_path, out):
    """A training job rewriting last.ckpt in place while it is converted: one clear error, no output."""
    ckpt = examples.write_training_checkpoint(tmp_path / "last.ckpt", weights_bytes=3_000_000)
    rewritten = []

    def rewrite_once(done: int, total: int) -> None:
        if not rewritten and done:
            with open(ckpt.path, "r+b") as f:  # same inode, same size, new bytes
                f.seek(100)
                f.write(b"x")
            rewritten.append(done)

    with pytest.raises(ConvertError, match="changed on disk") as caught:
        convert(ckpt.path, out, progress=rewrite_once)
    assert rewritten and "writing it has finished" in caught.value.hint
    assert _leftovers(out) == []


def test_a_source_truncated_during_the_conversion_is_an_error_not_a_crash(tmp_path, out):
    """Its weights are memory-mapped: reading past a truncated end would kill the process (SIGBUS)."""
    ckpt = examples.write_training_checkpoint(tmp_path / "last.ckpt", weights_bytes=3_000_000)

    def truncate_once(done: int, total: int) -> None:
        if done and ckpt.path.stat().st_size > 1000:
            os.truncate(ckpt.path, 1000)

    with pytest.raises(ConvertError, match="changed on disk"):
        convert(ckpt.path, out, progress=truncate_once)
    assert _leftovers(out) == []


def test_a_weight_whose_bytes_do_not_match_the_archive_crc_is_refused(tmp_path, out):
    """Bit rot inside a weight: the zip records each entry's CRC-32, which the conversion checks."""
    import re

    from anemoi_ckpt_nb.read.reader import open_checkpoint

    ckpt = examples.write_training_checkpoint(tmp_path / "rotten.ckpt", weights_bytes=200_000)
    with open_checkpoint(ckpt.path) as ck:
        name = max(ck.weights, key=lambda n: ck.weights[n].nbytes if n.startswith("model.") else -1)
        offset, nbytes = ck.tensor_span(name)
        assert ck.tensor_crc32(name) is not None
    with open(ckpt.path, "r+b") as f:
        f.seek(offset + nbytes // 2)
        byte = f.read(1)
        f.seek(offset + nbytes // 2)
        f.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(ConvertError, match=f"bytes read for {re.escape(name)} do not match the CRC-32") as caught:
        convert(ckpt.path, out)
    assert str(ckpt.path) in caught.value.hint
    assert _leftovers(out) == []


# --- many at once ----------------------------------------------------------------------------------


def test_convert_many_reports_each_input_and_goes_on_after_a_failure(tmp_path):
    good = [examples.write_training_checkpoint(tmp_path / "in" / f"epoch{i}.ckpt", seed=i) for i in range(3)]
    bad = tmp_path / "in" / "corrupt.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    sources = [good[0].path, bad, good[1].path, str(tmp_path / "in" / "nothing-*.ckpt"), good[2].path]
    seen: list[ConvertOutcome] = []
    progress: list[tuple[int, int]] = []

    outcomes = convert_many(
        sources, tmp_path / "out", jobs=2, on_outcome=seen.append, progress=lambda d, t: progress.append((d, t))
    )

    assert [o.source for o in outcomes] == [good[0].path, bad, good[1].path, Path(str(sources[3])), good[2].path]
    assert [o.ok for o in outcomes] == [True, False, True, False, True]
    assert isinstance(outcomes[1].error, ConvertError) and str(bad) in str(outcomes[1].error)
    assert "no file matches" in str(outcomes[3].error)
    assert len(seen) == 5
    for ckpt, outcome in zip(good, [outcomes[0], outcomes[2], outcomes[4]]):
        assert outcome.result.destination == tmp_path / "out" / default_name(ckpt.path)
        assert outcome.result.metadata["converted_from"]["uuid"] == ckpt.uuid
    assert _leftovers(tmp_path / "out") == sorted(
        [f"inference-epoch{i}.ckpt" for i in range(3)] + [f"inference-epoch{i}.ckpt.json" for i in range(3)]
    )
    total = sum(o.result.weights_bytes for o in outcomes if o.ok)
    assert progress[-1] == (total, total)
    assert json.loads(json.dumps([o.to_dict() for o in outcomes]))[1]["ok"] is False


@pytest.mark.parametrize("jobs", [1, 2])
def test_interrupting_a_batch_leaves_only_complete_outputs(tmp_path, jobs):
    sources = [examples.write_training_checkpoint(tmp_path / "in" / f"e{i}.ckpt", weights_bytes=3_000_000).path for i in range(3)]

    def interrupt(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_many(sources, tmp_path / "out", jobs=jobs, progress=interrupt)

    names = _leftovers(tmp_path / "out")
    assert not [n for n in names if n.endswith(".tmp")]
    assert sorted(n for n in names if n.endswith(".ckpt")) == sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))
    assert len(names) < 6


def test_convert_many_expands_globs_and_keeps_run_folders_apart(tmp_path):
    a = examples.write_training_checkpoint(tmp_path / "run1" / "last.ckpt")
    b = examples.write_training_checkpoint(tmp_path / "run2" / "last.ckpt")
    outcomes = convert_many([str(tmp_path / "run*" / "*.ckpt"), a.path], tmp_path / "out", format="safetensors")

    assert [o.source for o in outcomes] == [a.path, b.path]  # the repeated file is converted once
    # The same file name in two run folders: each output keeps its run folder.
    assert [o.result.destination for o in outcomes] == [
        tmp_path / "out" / "run1" / "inference-last.safetensors", tmp_path / "out" / "run2" / "inference-last.safetensors"]


def test_convert_many_checks_its_options(tmp_path):
    with pytest.raises(ConvertError, match="jobs"):
        convert_many([], tmp_path, jobs=0)
    with pytest.raises(ConvertError, match="unknown format"):
        convert_many([], tmp_path, format="gguf")


def test_the_pickled_format_without_anemoi_models_says_so_and_writes_nothing(tmp_path, monkeypatch):
    import sys

    from anemoi_ckpt_nb.conversion.convert import convert
    from anemoi_ckpt_nb.errors import ConvertError, ModelPackageMissingError

    real = Path(__file__).parent / "data" / "real" / "current" / "gnn" / "run"
    source = next(real.glob("*/last.ckpt"))
    monkeypatch.setitem(sys.modules, "anemoi.models.interface", None)  # import fails, installed or not
    with pytest.raises(ConvertError, match="needs anemoi-models==0.19.0 where it converts") as caught:
        convert(source, tmp_path / "out", format="pickled")
    assert isinstance(caught.value.__cause__, ModelPackageMissingError)
    assert "--format anemoi" in caught.value.hint
    assert list((tmp_path / "out").iterdir()) == []
