"""The graph and statistics converted files carry (``anemoi-model/``), and load_model's errors without anemoi-models.

These run in the project's own environment, where anemoi-models is not installed; building
models with the real packages is tested in ``test_loader_real.py``.
"""

from __future__ import annotations

import json
import struct
import zipfile

import numpy as np
import pytest
import torch

from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.errors import CorruptCheckpointError, ModelLoadError, ModelPackageMissingError
from anemoi_ckpt_nb.read.model_inputs import PREFIX, SAFETENSORS_SPEC_KEY, array_refs
from anemoi_ckpt_nb.read.reader import open_checkpoint


@pytest.fixture(scope="module")
def converted(training_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    return {fmt: convert(training_checkpoint.path, out, format=fmt).destination for fmt in ("anemoi", "safetensors")}


def _inputs(path):
    with open_checkpoint(path) as checkpoint:
        return checkpoint.model_inputs(), dict(checkpoint.weights)


def test_a_training_checkpoint_gives_its_graph_statistics_and_indices(training_checkpoint):
    inputs, _ = _inputs(training_checkpoint.path)
    graph = inputs.graph_summary()
    assert graph["nodes"] == {"data": 64, "hidden": 16}
    assert graph["edges"] == {"data->hidden": 64}
    assert inputs.arrays["graph/edges/data/to/hidden/edge_index"].dtype == np.int64
    assert set(inputs.spec["statistics"]["data"]) == {"mean", "stdev", "minimum", "maximum"}
    assert inputs.spec["n_step_input"] == 2 and inputs.spec["n_step_output"] == 1
    assert list(inputs.spec["data_indices"]) == ["data"]
    assert set(array_refs(inputs.spec)) == set(inputs.arrays)


@pytest.mark.parametrize("fmt", ["anemoi", "safetensors"])
def test_both_formats_carry_the_same_inputs_as_the_source(training_checkpoint, converted, fmt):
    source, _ = _inputs(training_checkpoint.path)
    written, weights = _inputs(converted[fmt])
    assert written.spec == source.spec
    assert set(written.arrays) == set(source.arrays)
    for name, array in source.arrays.items():
        assert written.arrays[name].dtype == array.dtype
        assert np.array_equal(written.arrays[name], array), name
    # They are not weights: the state dict is what it was before graphs were stored.
    assert not any(name.startswith(PREFIX) for name in weights)
    # Each array is writable (torch.from_numpy shares it with the model, which may write) and its own.
    arrays = list(written.arrays.values())
    assert all(array.flags.writeable and array.flags.c_contiguous for array in arrays)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])


def test_the_anemoi_format_still_loads_as_a_plain_state_dict(converted):
    state = torch.load(converted["anemoi"], weights_only=True)
    with open_checkpoint(converted["anemoi"]) as checkpoint:
        assert set(state) == set(checkpoint.weights)
    with zipfile.ZipFile(converted["anemoi"]) as zf:
        top = zf.namelist()[0].split("/")[0]
        spec = json.loads(zf.read(f"{top}/anemoi-model/inputs.json"))
        assert f"{top}/anemoi-model/graph/nodes/data/x.numpy" in zf.namelist()
    assert spec["version"] == 1


def test_safetensors_holds_no_pickle_and_names_the_arrays_under_the_prefix(converted):
    from safetensors import safe_open

    with safe_open(str(converted["safetensors"]), framework="pt") as handle:
        names = list(handle.keys())
        header = handle.metadata()
        x = handle.get_tensor("anemoi-model/graph/nodes/data/x")
    assert SAFETENSORS_SPEC_KEY in header
    assert "anemoi-model/graph/edges/data/to/hidden/edge_index" in names
    assert x.shape == (64, 2)


def _rewrite_header(path, change):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    change(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (length - len(text))
    assert len(text) == length
    path.write_bytes(data[:8] + text + data[8 + length :])


def test_a_spec_of_an_unknown_version_is_refused_by_name(converted, tmp_path):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(converted["safetensors"].read_bytes())

    def future(header):
        spec = json.loads(header["__metadata__"][SAFETENSORS_SPEC_KEY])
        spec["version"] = 9
        header["__metadata__"][SAFETENSORS_SPEC_KEY] = json.dumps(spec)

    _rewrite_header(damaged, future)
    with open_checkpoint(damaged) as checkpoint:
        with pytest.raises(CorruptCheckpointError, match="version"):
            checkpoint.model_inputs()


def test_a_plain_state_dict_has_none(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.model_inputs() is None


# --- load_model without the packages it needs --------------------------------------------


def test_load_model_without_anemoi_models_names_the_package_and_version(converted):
    pytest.importorskip("torch")
    try:
        import anemoi.models  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.fail("this test runs where anemoi-models is not installed (the project's own environment)")
    from anemoi_ckpt_nb import load_model

    with pytest.raises(ModelPackageMissingError) as raised:
        load_model(converted["safetensors"])
    error = raised.value
    assert error.package == "anemoi-models"
    assert "anemoi-models" in str(error) and "anemoi-ckpt-nb[inference]" in str(error)
    assert isinstance(error, ImportError)


def test_load_model_of_a_file_without_graph_says_to_convert_again(tmp_path):
    from anemoi_ckpt_nb import load_model

    path = tmp_path / "weights.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(path), metadata={"anemoi": json.dumps({"config": {"model": {}}})})
    with pytest.raises(ModelLoadError, match="holds no graph") as raised:
        load_model(path)
    assert "anemoi-ckpt convert" in raised.value.hint
