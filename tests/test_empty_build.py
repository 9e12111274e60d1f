"""Building a model with its parameters on the meta device and filling it from a file (``conversion/empty``).

Plain torch modules and real torch and safetensors files; ``load_model`` itself is judged on the
real anemoi-models (tests/test_loader_real.py: same predict_step output, ties kept, nothing on meta).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from anemoi_ckpt_nb import examples, open_checkpoint
from anemoi_ckpt_nb.conversion import empty
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.errors import CheckpointChangedError


class Shared(torch.nn.Module):
    """Two layer norms sharing their parameters (as anemoi-models' graph transformer's), and a buffer computed at build."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(4)
        self.norm_dest = torch.nn.LayerNorm(4)
        self.norm_dest.weight, self.norm_dest.bias = self.norm.weight, self.norm.bias
        self.linear = torch.nn.Linear(4, 3)
        self.register_buffer("mask", torch.nonzero(torch.tensor([0.0, 1.0, 2.0])), persistent=False)


def test_parameters_are_made_on_meta_and_buffers_stay_real():
    with empty.parameters_on_meta():
        model = Shared()
    assert all(parameter.is_meta for parameter in model.parameters())
    assert type(model.linear.weight) is torch.nn.Parameter and model.linear.weight.requires_grad
    assert model.mask.tolist() == [[1], [2]]  # data-dependent: the meta device could not have computed it
    assert sorted(empty.meta_tensors(model)) == ["linear.bias", "linear.weight", "norm.bias", "norm.weight",
                                                 "norm_dest.bias", "norm_dest.weight"]
    assert not any(parameter.is_meta for parameter in torch.nn.Linear(2, 2).parameters()), "the patch outlived its block"


def test_another_thread_building_meanwhile_gets_real_parameters():
    built: list[torch.nn.Module] = []
    with empty.parameters_on_meta():
        thread = threading.Thread(target=lambda: built.append(torch.nn.Linear(2, 2)))
        thread.start()
        thread.join()
        assert torch.nn.Linear(2, 2).weight.is_meta
    assert not built[0].weight.is_meta


def test_assigned_weights_keep_shared_parameters_shared():
    reference = Shared()
    state = {name: tensor.clone() for name, tensor in reference.state_dict().items()}
    with empty.parameters_on_meta():
        model = Shared()
    groups = empty.tied(model)
    assert groups == [["norm.weight", "norm_dest.weight"], ["norm.bias", "norm_dest.bias"]]
    model.load_state_dict(state, strict=True, assign=True)
    assert model.norm.weight is not model.norm_dest.weight  # what assign does alone
    empty.tie(model, groups)
    assert model.norm.weight is model.norm_dest.weight and model.norm_dest is not model.norm
    assert empty.meta_tensors(model) == [] and empty.tied(model) == groups
    x = torch.randn(2, 4)
    assert torch.equal(model.linear(model.norm_dest(x)), reference.linear(reference.norm_dest(x)))


def file_mappings(path) -> list[tuple[int, int]]:
    """Address ranges of the memory maps of ``path`` in this process (Linux's /proc/self/maps)."""
    target = str(Path(path).resolve())
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def in_mapping(tensor, ranges) -> bool:
    start = tensor.data_ptr()
    return any(low <= start and start + tensor.nbytes <= high for low, high in ranges)


@pytest.mark.parametrize("fmt", ["anemoi", "safetensors"])
def test_weights_are_read_into_memory_of_their_own(tmp_path, fmt):
    example = examples.write_training_checkpoint(tmp_path / "train.ckpt", weights_bytes=20_000)
    converted = convert(example.path, tmp_path / "out", format=fmt).destination
    with open_checkpoint(converted) as checkpoint:
        names = {name: name for name in checkpoint.weights}
        assert any(checkpoint.tensor_span(name) is not None for name in names)
        weights = empty.read_weights(checkpoint, names, torch.nn.Module())
        for name, tensor in weights.items():
            assert torch.equal(tensor, checkpoint.tensor(name))
            tensor.add_(1)  # writable, and not the file's bytes
            assert not torch.equal(tensor, checkpoint.tensor(name))
        assert not any(in_mapping(tensor, file_mappings(converted)) for tensor in weights.values())


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
@pytest.mark.parametrize("fmt", ["anemoi", "safetensors"])
def test_mapped_weights_are_the_files_pages_and_writes_never_reach_the_file(tmp_path, fmt):
    example = examples.write_training_checkpoint(tmp_path / "train.ckpt", weights_bytes=20_000)
    converted = convert(example.path, tmp_path / "out", format=fmt).destination
    before = converted.read_bytes()
    with open_checkpoint(converted) as checkpoint:
        names = {name: name for name in checkpoint.weights}
        spans = {name for name in names if checkpoint.tensor_span(name) is not None}
        assert spans
        weights = empty.read_weights(checkpoint, names, torch.nn.Module(), mapped=True)
        ranges = file_mappings(converted)
        for name, tensor in weights.items():
            assert torch.equal(tensor, checkpoint.tensor(name))
            assert in_mapping(tensor, ranges) == (name in spans), name  # no copy: the file's own pages
            assert tensor.untyped_storage().nbytes() == tensor.nbytes  # its own bytes, not the whole file's
            tensor.add_(1)  # copy-on-write: this process's copy of the page changes
    del weights
    assert converted.read_bytes() == before
    with open_checkpoint(converted) as checkpoint:
        again = empty.read_weights(checkpoint, names, torch.nn.Module(), mapped=True)
        assert all(torch.equal(again[name], checkpoint.tensor(name)) for name in names)
        assert all(torch.equal(again[name], torch.frombuffer(bytearray(before[a:a + n]), dtype=again[name].dtype).reshape(again[name].shape))
                   for name in spans for a, n in [checkpoint.tensor_span(name)] if n)


@pytest.mark.parametrize("mapped", [False, True])
def test_a_file_rewritten_while_its_weights_are_read_is_refused(tmp_path, mapped):
    example = examples.write_training_checkpoint(tmp_path / "train.ckpt", weights_bytes=20_000)
    converted = convert(example.path, tmp_path / "out", format="safetensors").destination
    with open_checkpoint(converted) as checkpoint:
        names = {name: name for name in checkpoint.weights}
        with open(converted, "r+b") as file:
            file.truncate(converted.stat().st_size // 2)
        with pytest.raises(CheckpointChangedError, match="changed on disk"):
            empty.read_weights(checkpoint, names, torch.nn.Module(), mapped=mapped)
