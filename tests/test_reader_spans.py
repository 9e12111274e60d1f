"""`CheckpointFile.tensor_span`: where a weight's bytes lie in the file, from the file's structure alone."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.read.reader import open_checkpoint


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _state() -> dict[str, torch.Tensor]:
    """Several dtypes, and views that share a storage at various offsets, some not contiguous."""
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(6, 10, generator=generator)
    half = torch.randn(9, 4, generator=generator).to(torch.float16)
    return {
        "float32": torch.randn(5, 3, generator=generator),
        "float64": torch.randn(7, generator=generator).to(torch.float64),
        "bfloat16": torch.randn(4, 4, generator=generator).to(torch.bfloat16),
        "int64": torch.arange(-5, 6),
        "int8": torch.arange(-3, 9, dtype=torch.int8),
        "bool": torch.tensor([True, False, False, True, True]),
        "uint16": torch.arange(7).to(torch.uint16),
        "float8": torch.randn(10, generator=generator).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "base": base,
        "rows": base[2:5],  # contiguous view: storage_offset 20
        "row": base[4],  # contiguous view: storage_offset 40
        "tail": base.reshape(-1)[37:],  # contiguous view, odd offset
        "columns": base[:, 3:7],  # not contiguous
        "transposed": base.t(),  # not contiguous
        "strided": base.reshape(-1)[::3],  # not contiguous
        "half_rows": half[3:],  # float16 view: offset in 2-byte elements
        "half_t": half.t(),  # not contiguous
    }


NOT_CONTIGUOUS = {"columns", "transposed", "strided", "half_t"}


def _check_spans(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, tuple[int, int] | None]:
    raw = path.read_bytes()
    spans = {}
    with open_checkpoint(path) as checkpoint:
        for name, tensor in expected.items():
            span = spans[name] = checkpoint.tensor_span(name)
            if name in NOT_CONTIGUOUS:
                assert span is None, name
                continue
            assert span is not None, name
            offset, nbytes = span
            assert nbytes == tensor.numel() * tensor.element_size() == checkpoint.weights[name].nbytes, name
            assert raw[offset : offset + nbytes] == _bytes(tensor), name
            # and it is what the reader hands out for that name
            assert raw[offset : offset + nbytes] == _bytes(checkpoint.tensor(name)), name
    return spans


def test_spans_of_a_torch_zip_archive_hold_the_tensor_bytes(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_state(), path)
    spans = _check_spans(path, torch.load(path, weights_only=True))

    # Views of one storage lie inside that storage's zip entry, at their element offsets.
    assert spans["rows"][0] == spans["base"][0] + 20 * 4
    assert spans["row"][0] == spans["base"][0] + 40 * 4
    assert spans["tail"][0] == spans["base"][0] + 37 * 4
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("weights/data/0")
        assert spans["float32"][0] > info.header_offset  # after the local header, not at it


def test_spans_of_a_lightning_checkpoint_under_its_state_dict_names(training_checkpoint):
    expected = torch.load(training_checkpoint.path, weights_only=False, map_location="cpu", pickle_module=_lenient())
    _check_spans(training_checkpoint.path, {name: expected["state_dict"][name] for name in training_checkpoint.state_dict_names})


def _lenient():
    """A pickle module that loads the example's stand-in classes as plain objects."""
    import pickle
    import types

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                return type(name, (), {"__setstate__": lambda self, state: None})

    module = types.ModuleType("lenient")
    module.Unpickler, module.load = Unpickler, pickle.load
    return module


def test_spans_of_a_legacy_torch_file(tmp_path):
    path = tmp_path / "legacy.pt"
    state = {name: t for name, t in _state().items() if t.dtype in torch.storage._dtype_to_storage_type_map()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == "legacy"
    _check_spans(path, torch.load(path, weights_only=True))


def test_spans_of_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    state = {name: t.contiguous().clone() for name, t in _state().items() if name not in NOT_CONTIGUOUS}
    save_file(state, str(path))
    _check_spans(path, state)


def test_no_span_for_bytes_that_are_not_the_files(tmp_path):
    """Compressed entries, byte-swapped storages and tensors pickled in memory are not runs of the file."""
    source = tmp_path / "little.pt"
    values = torch.linspace(-3, 3, 11, dtype=torch.float64)
    torch.save({"w": values}, source)

    compressed = tmp_path / "compressed.pt"
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(source) as src:
        with zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info))
        with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename.endswith("/byteorder"):
                    data = b"big"
                elif info.filename.endswith("/data/0"):
                    data = np.frombuffer(data, dtype="<f8").astype(">f8").tobytes()
                dst.writestr(info, data)

    nested = tmp_path / "nested.pt"
    buffer = io.BytesIO()
    torch.save(values, buffer)
    import pickle

    nested.write_bytes(pickle.dumps({"w": _Nested(buffer.getvalue())}, protocol=2))

    for path in (compressed, big, nested):
        with open_checkpoint(path) as checkpoint:
            assert torch.equal(checkpoint.tensor("w"), values), path.name
            assert checkpoint.tensor_span("w") is None, path.name


class _Nested:
    """Pickles as ``torch.storage._load_from_bytes(data)``: a tensor held inside the pickle."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))


def test_span_errors_name_the_weight(tmp_path):
    path = tmp_path / "weights.safetensors"
    examples.write_safetensors(path)
    checkpoint = open_checkpoint(path)
    name = next(iter(checkpoint.weights))
    with pytest.raises(KeyError, match="no weight 'nope'"):
        checkpoint.tensor_span("nope")
    checkpoint.close()
    with pytest.raises(ValueError, match="closed"):
        checkpoint.tensor_span(name)


@pytest.mark.parametrize("first_byte", [0x80, ord("("), ord("}"), ord("c")])
def test_safetensors_whose_header_length_starts_like_a_pickle(tmp_path, first_byte):
    """The header length is little-endian, so its first byte can be a pickle opcode; it is still safetensors."""
    import json
    import struct

    values = torch.arange(4, dtype=torch.float32)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    length = 256 + first_byte
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", length) + header.ljust(length, b" ") + _bytes(values))

    with open_checkpoint(path) as checkpoint:
        assert checkpoint.kind == "safetensors"
        assert torch.equal(checkpoint.tensor("w"), values)
        assert checkpoint.tensor_span("w") == (8 + length, 16)
