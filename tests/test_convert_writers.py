"""The streaming writers behind `convert`: torch zip archives and safetensors files, read by the real libraries."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
import torch

from anemoi_ckpt_nb.conversion.writers import (
    OutputFile,
    SafetensorsWriter,
    TensorEntry,
    TorchZipWriter,
    VerificationError,
    safetensors_order,
    verify_safetensors,
    verify_torch_zip,
)


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "encoder.weight": torch.randn(7, 5, generator=generator),
        "encoder.bias": torch.randn(7, generator=generator).to(torch.float16),
        "processor.weight": torch.randn(3, 4, generator=generator).to(torch.bfloat16),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "counts": torch.arange(9, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "small": torch.arange(5).to(torch.uint16),
        "float8": torch.randn(6, generator=generator).to(torch.float8_e4m3fn),
    }


def _entry(name: str, tensor: torch.Tensor, *, split: int = 3) -> TensorEntry:
    data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()

    def chunks():
        # Several chunks per tensor, as the converter hands them over.
        for start in range(0, data.nbytes, split):
            yield data[start : start + split]

    return TensorEntry(name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), data.nbytes, chunks)


def _write_zip(path, tensors, *, zip64_limit=None, metadata=None):
    entries = [_entry(name, t) for name, t in tensors.items()]
    with open(path, "wb", buffering=0) as file:
        out = OutputFile(file.fileno(), path)
        try:
            options = {} if zip64_limit is None else {"zip64_limit": zip64_limit}
            writer = TorchZipWriter(out, path.stem, **options)
            crcs = writer.add_tensors(entries)
            writer.add_bytes("anemoi-metadata/anemoi.json", json.dumps(metadata or {"version": "1.0"}).encode())
            writer.finish()
            digest, _ = out.finish()
        finally:
            out.close()
    return entries, crcs, digest


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("mmap", [False, True])
def test_torch_loads_the_archive_with_weights_only(tmp_path, mmap):
    tensors = _tensors()
    path = tmp_path / "weights.ckpt"
    _, _, digest = _write_zip(path, tensors)

    loaded = torch.load(path, weights_only=True, mmap=mmap)

    assert type(loaded) is dict
    assert list(loaded) == list(tensors)
    for name, tensor in tensors.items():
        assert _same(loaded[name], tensor), name
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_matches_torch_so_its_offset_calculation_finds_every_storage(tmp_path, monkeypatch):
    """torch can compute storage offsets from the miniz layout instead of reading headers;
    with TORCH_SERIALIZATION_DEBUG it checks each computed offset against the real one."""
    from torch.utils.serialization import config

    tensors = _tensors()
    path = tmp_path / "weights.ckpt"
    _write_zip(path, tensors)
    monkeypatch.setenv("TORCH_SERIALIZATION_DEBUG", "1")

    with config.patch({"load.calculate_storage_offsets": True}):
        for mmap in (False, True):
            loaded = torch.load(path, weights_only=True, mmap=mmap)
            assert all(_same(loaded[name], tensor) for name, tensor in tensors.items())


def test_storages_are_aligned_and_entries_have_fixed_timestamps(tmp_path):
    path = tmp_path / "weights.ckpt"
    _write_zip(path, _tensors())
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names[:4] == ["weights/data.pkl", "weights/.format_version", "weights/.storage_alignment", "weights/byteorder"]
        assert names[-3:] == ["weights/version", "weights/.data/serialization_id", "weights/anemoi-metadata/anemoi.json"]
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_STORED
            raw.seek(info.header_offset + 26)
            name_len, extra_len = (int.from_bytes(raw.read(2), "little") for _ in range(2))
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename


def test_same_tensors_give_identical_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_zip(tmp_path / "a" / "weights.ckpt", _tensors())
    _write_zip(tmp_path / "b" / "weights.ckpt", _tensors())
    assert (tmp_path / "a" / "weights.ckpt").read_bytes() == (tmp_path / "b" / "weights.ckpt").read_bytes()


def test_zip64_records_read_back(tmp_path):
    """Sizes and offsets from 4 GiB on need ZIP64 fields; a lowered limit exercises them on small files."""
    from anemoi.utils.checkpoints import load_metadata

    tensors = _tensors()
    path = tmp_path / "weights.ckpt"
    entries, crcs, _ = _write_zip(path, tensors, zip64_limit=100, metadata={"version": "1.0", "uuid": "u"})

    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert zf.getinfo("weights/data/0").file_size == tensors["encoder.weight"].nbytes
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert all(_same(loaded[name], tensor) for name, tensor in tensors.items())
    assert load_metadata(str(path))["uuid"] == "u"
    verify_torch_zip(path, entries, crcs, {"version": "1.0", "uuid": "u"})


def test_announced_size_is_enforced(tmp_path):
    with open(tmp_path / "x.ckpt", "wb", buffering=0) as file:
        out = OutputFile(file.fileno(), tmp_path / "x.ckpt")
        writer = TorchZipWriter(out, "x")
        short = TensorEntry("w", "float32", (4,), 16, lambda: [b"\0" * 8])
        with pytest.raises(ValueError, match="8 bytes instead of the 16 announced"):
            writer.add_tensors([short])
        out.close()


def test_verification_catches_a_changed_byte(tmp_path):
    tensors = _tensors()
    path = tmp_path / "weights.ckpt"
    entries, crcs, _ = _write_zip(path, tensors)
    verify_torch_zip(path, entries, crcs, {"version": "1.0"})

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("weights/data/0")
    data = bytearray(path.read_bytes())
    name_len, extra_len = (int.from_bytes(data[info.header_offset + i : info.header_offset + i + 2], "little") for i in (26, 28))
    start = info.header_offset + 30 + name_len + extra_len
    data[start + 3] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(VerificationError):
        verify_torch_zip(path, entries, crcs, {"version": "1.0"})


def test_safetensors_file_opens_with_safetensors(tmp_path):
    from safetensors import safe_open

    tensors = {name: t for name, t in _tensors().items() if name != "scalar"} | {"scalar": torch.tensor([2.0])}
    entries = safetensors_order([_entry(name, t) for name, t in tensors.items()])
    header = {"anemoi": json.dumps({"version": "1.0"})}
    path = tmp_path / "weights.safetensors"
    with open(path, "wb", buffering=0) as file:
        out = OutputFile(file.fileno(), path)
        crcs = SafetensorsWriter(entries, header).write(out)
        digest, _ = out.finish()
        out.close()

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    with safe_open(str(path), framework="pt") as opened:
        assert opened.metadata() == header
        assert set(opened.keys()) == set(tensors)
        for name, tensor in tensors.items():
            assert _same(opened.get_tensor(name), tensor), name
    verify_safetensors(path, entries, crcs, header)
    with pytest.raises(VerificationError, match="header metadata differs"):
        verify_safetensors(path, entries, crcs, {"anemoi": "{}"})


def test_safetensors_refuses_a_dtype_it_cannot_store():
    entry = _entry("q", torch.zeros(2, dtype=torch.complex128))
    with pytest.raises(ValueError, match="cannot store dtype complex128"):
        SafetensorsWriter([entry], {})
