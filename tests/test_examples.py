"""The example writer makes what DESIGN.md says a training checkpoint holds."""

from __future__ import annotations

import pickletools
import subprocess
import sys
import zipfile

import pytest
import torch

from anemoi_ckpt_nb import examples

LIGHTNING_KEYS = {
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "loops",
    "callbacks",
    "optimizer_states",
    "lr_schedulers",
    "hyper_parameters",
    "task_state",
    "migrations",
}


def _globals(path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    found = set()
    ops = list(pickletools.genops(data))
    for i, (op, arg, _) in enumerate(ops):
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            module, name = ops[i - 2][1], ops[i - 1][1]
            found.add(f"{module}.{name}")
    return found


def _load_with_classes(path):
    """torch.load in a process where the throw-away classes exist again."""
    with examples._throwaway_modules():
        return torch.load(path, weights_only=False, map_location="cpu")


def test_training_checkpoint_has_every_key_and_adam_state(training_checkpoint):
    checkpoint = _load_with_classes(training_checkpoint.path)
    assert set(checkpoint) == LIGHTNING_KEYS
    state = checkpoint["state_dict"]
    assert list(state) == training_checkpoint.state_dict_names
    assert all(name.startswith("model.") for name in state)
    adam = checkpoint["optimizer_states"][0]["state"]
    assert len(adam) == len(state)
    for index, tensor in enumerate(state.values()):
        assert adam[index]["exp_avg"].shape == tensor.shape
        assert adam[index]["exp_avg_sq"].shape == tensor.shape
    assert checkpoint["hyper_parameters"]["metadata"]["uuid"] == training_checkpoint.uuid


def test_pickle_refers_to_classes_that_do_not_exist_at_read_time(training_checkpoint):
    names = _globals(training_checkpoint.path)
    assert "omegaconf.dictconfig.DictConfig" in names
    assert "anemoi.models.data_indices.collection.IndexCollection" in names
    assert "torch_geometric.data.hetero_data.HeteroData" in names
    code = (
        "import torch, sys\n"
        f"torch.load({str(training_checkpoint.path)!r}, weights_only=False)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "No module named" in result.stderr
    assert not any(m.startswith(("anemoi.models", "torch_geometric")) for m in sys.modules)


def test_pydantic_config_variant_pickles_schema_objects(tmp_path):
    written = examples.write_training_checkpoint(tmp_path / "p.ckpt", config_type="pydantic")
    assert "anemoi.training.schemas.base_schema.BaseSchema" in _globals(written.path)


def test_embedded_metadata_is_what_anemoi_utils_reads(training_checkpoint):
    checkpoints = pytest.importorskip("anemoi.utils.checkpoints")
    metadata, arrays = checkpoints.load_metadata(str(training_checkpoint.path), supporting_arrays=True)
    assert metadata == training_checkpoint.metadata
    assert set(arrays) == {"latitudes", "longitudes", "grid_indices"}
    assert (arrays["latitudes"] == training_checkpoint.supporting_arrays["latitudes"]).all()


def test_older_files_use_ai_models_json_or_no_embedded_metadata(tmp_path):
    old = examples.write_training_checkpoint(tmp_path / "old.ckpt", embedded="ai-models.json")
    bare = examples.write_training_checkpoint(tmp_path / "bare.ckpt", embedded=None)
    with zipfile.ZipFile(old.path) as zf:
        assert any(n.endswith("anemoi-metadata/ai-models.json") for n in zf.namelist())
    with zipfile.ZipFile(bare.path) as zf:
        assert not any("anemoi-metadata" in n for n in zf.namelist())
    assert "supporting_arrays_paths" not in bare.metadata


def test_size_follows_weights_bytes(tmp_path):
    small = examples.write_training_checkpoint(tmp_path / "s.ckpt", weights_bytes=100_000)
    large = examples.write_training_checkpoint(tmp_path / "l.ckpt", weights_bytes=4_000_000)
    # weights plus twice as much Adam state, give or take the layer rounding
    assert 2.4 * 4_000_000 < large.path.stat().st_size < 3.6 * 4_000_000
    assert small.path.stat().st_size < large.path.stat().st_size / 5


def test_runs_carry_lineage_as_anemoi_training_does(example_project):
    base, resumed, forked = example_project["base"], example_project["resumed"], example_project["forked"]
    assert len({c.uuid for run in example_project.values() for c in run}) == 7
    assert all(c.parent_uuid is None for c in base)
    assert {c.run_id for c in base} == {base[0].run_id}
    assert all(c.run_id == base[0].run_id and c.parent_uuid == base[-1].uuid for c in resumed)
    assert [c.epoch for c in resumed] == [4, 5]
    assert all(c.run_id != base[0].run_id and c.parent_uuid == base[1].uuid for c in forked)
    assert all(c.metadata["fork_run_id"] == base[0].run_id for c in forked)


def test_inference_checkpoint_pickles_the_whole_model(training_checkpoint, tmp_path):
    inference = examples.write_inference_checkpoint(tmp_path / "inf.ckpt", source=training_checkpoint)
    assert "anemoi.models.interface.AnemoiModelInterface" in _globals(inference.path)
    model = _load_with_classes(inference.path)
    training = _load_with_classes(training_checkpoint.path)["state_dict"]
    state = model.state_dict()
    assert list(state) == inference.state_dict_names
    for name, tensor in state.items():
        assert torch.equal(tensor, training["model." + name])
    assert inference.uuid == training_checkpoint.uuid


def test_run_rejects_unknown_relation(tmp_path):
    with pytest.raises(ValueError, match="relation"):
        examples.write_run(tmp_path, relation="clone")
