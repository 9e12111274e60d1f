"""``anemoi-ckpt upgrade IN OUT``: metadata migrated and re-embedded, everything else untouched."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from anemoi.utils.checkpoints import load_metadata

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.compat.anemoi_metadata import parse_metadata
from anemoi_ckpt_nb.errors import CkptError, SchemaError
from anemoi_ckpt_nb.storage.hashing import sha256_file
from anemoi_ckpt_nb.compat.upgrade import EMBED_HYPER_PARAMETERS, RENAME_AI_MODELS_JSON, upgrade_checkpoint


def entries(path: Path) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: i for i in zf.infolist()}


def data_offsets(path: Path) -> dict[str, int]:
    """Where each entry's bytes start in the file (after its local header)."""
    offsets = {}
    with open(path, "rb") as f:
        for name, info in entries(path).items():
            f.seek(info.header_offset)
            header = f.read(30)
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            offsets[name] = info.header_offset + 30 + name_length + extra_length
    return offsets


@pytest.fixture
def ai_models_checkpoint(tmp_path) -> examples.ExampleCheckpoint:
    return examples.write_training_checkpoint(tmp_path / "old.ckpt", weights_bytes=4096, embedded="ai-models.json")


def test_upgrade_writes_current_metadata_as_anemoi_utils_reads_it(ai_models_checkpoint, tmp_path):
    source = ai_models_checkpoint.path
    result = upgrade_checkpoint(source, tmp_path / "new.ckpt")
    assert result.metadata_source == "ai-models.json"
    assert (result.from_version, result.to_version) == ("1.0", "2.0")
    assert result.container_steps == [RENAME_AI_MODELS_JSON]
    # Read back with the real anemoi-utils, as anemoi-inference does.
    metadata, arrays = load_metadata(str(result.destination), supporting_arrays=True)
    parse_metadata(metadata)
    assert metadata["version"] == "2.0"
    assert not any(n.endswith("ai-models.json") for n in entries(result.destination))
    for key, array in ai_models_checkpoint.supporting_arrays.items():
        np.testing.assert_array_equal(arrays["data"][key], array)
    upgrade = metadata["anemoi_ckpt_nb"]["upgrades"][0]
    assert upgrade["steps"] == [*result.steps_applied, RENAME_AI_MODELS_JSON]
    assert upgrade["source_sha256"] == sha256_file(source)


def test_upgrade_copies_every_other_entry_byte_for_byte_and_aligned(ai_models_checkpoint, tmp_path):
    source = ai_models_checkpoint.path
    before = sha256_file(source)
    destination = upgrade_checkpoint(source, tmp_path / "new.ckpt").destination
    assert sha256_file(source) == before  # the input is never modified
    old, new = entries(source), entries(destination)
    copied = [n for n in old if "/anemoi-metadata/" not in n]
    assert [n for n in new if "/anemoi-metadata/" not in n] == copied
    offsets = data_offsets(destination)
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(destination) as b:
        for name in copied:
            assert a.read(name) == b.read(name)
            if "/data/" in name:
                assert offsets[name] % 64 == 0, name  # torch memory-maps storages at aligned offsets


def test_upgraded_weights_load_with_torch_memory_mapped(ai_models_checkpoint, tmp_path):
    import torch

    destination = upgrade_checkpoint(ai_models_checkpoint.path, tmp_path / "new.ckpt").destination
    with examples._throwaway_modules():
        original = torch.load(ai_models_checkpoint.path, weights_only=False, map_location="cpu")
        upgraded = torch.load(destination, weights_only=False, map_location="cpu", mmap=True)
    assert original["state_dict"].keys() == upgraded["state_dict"].keys()
    for name, tensor in original["state_dict"].items():
        assert torch.equal(tensor, upgraded["state_dict"][name])


def test_upgrade_embeds_metadata_found_only_in_hyper_parameters(tmp_path):
    source = examples.write_training_checkpoint(tmp_path / "hp.ckpt", weights_bytes=2048, embedded=None)
    result = upgrade_checkpoint(source.path, tmp_path / "new.ckpt")
    assert result.metadata_source == "hyper_parameters"
    assert EMBED_HYPER_PARAMETERS in result.container_steps
    metadata, arrays = load_metadata(str(result.destination), supporting_arrays=True)
    assert metadata["version"] == "2.0" and metadata["uuid"] == source.uuid
    np.testing.assert_array_equal(arrays["data"]["latitudes"], source.supporting_arrays["latitudes"])


def test_upgrading_an_upgraded_file_changes_nothing(ai_models_checkpoint, tmp_path):
    first = upgrade_checkpoint(ai_models_checkpoint.path, tmp_path / "one.ckpt")
    second = upgrade_checkpoint(first.destination, tmp_path / "two.ckpt")
    assert not second.changed
    assert second.metadata == first.metadata
    assert len(second.metadata["anemoi_ckpt_nb"]["upgrades"]) == 1


def test_upgrade_refuses_to_overwrite_or_write_over_its_input(ai_models_checkpoint, tmp_path):
    source = ai_models_checkpoint.path
    target = tmp_path / "exists.ckpt"
    target.write_bytes(b"keep me")
    with pytest.raises(CkptError, match="already exists.*--overwrite"):
        upgrade_checkpoint(source, target)
    assert target.read_bytes() == b"keep me"
    upgrade_checkpoint(source, target, overwrite=True)
    assert load_metadata(str(target))["version"] == "2.0"
    with pytest.raises(CkptError, match="never modifies its input"):
        upgrade_checkpoint(source, source, overwrite=True)


def test_failed_upgrade_leaves_no_file_behind(tmp_path):
    import json

    legacy = json.loads((Path(__file__).parent / "data/golden/metadata-0.0-no-data-indices.json").read_text())
    source = examples.write_training_checkpoint(tmp_path / "src" / "a.ckpt", weights_bytes=1024)
    with zipfile.ZipFile(source.path) as zf:
        names = zf.namelist()
    # Replace the embedded metadata by legacy metadata that cannot be migrated.
    rebuilt = tmp_path / "src" / "legacy.ckpt"
    with zipfile.ZipFile(source.path) as src, zipfile.ZipFile(rebuilt, "w") as dst:
        for name in names:
            data = src.read(name)
            if name.endswith("anemoi.json"):
                data = json.dumps(legacy).encode()
            dst.writestr(src.getinfo(name), data)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SchemaError, match="cannot be brought to 2.0"):
        upgrade_checkpoint(rebuilt, out / "new.ckpt")
    assert list(out.iterdir()) == []


def test_cli_upgrade_and_its_errors(ai_models_checkpoint, tmp_path, capsys):
    destination = tmp_path / "cli.ckpt"
    assert main(["upgrade", str(ai_models_checkpoint.path), str(destination)]) == 0
    assert "metadata 1.0 -> 2.0 (ai-models.json)" in capsys.readouterr().out
    assert main(["upgrade", str(ai_models_checkpoint.path), str(destination)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert main(["upgrade", str(tmp_path / "missing.ckpt"), str(tmp_path / "x.ckpt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_inference_checkpoint_upgrades_the_same_way(tmp_path):
    source = examples.write_inference_checkpoint(tmp_path / "inference.ckpt", weights_bytes=2048)
    result = upgrade_checkpoint(source.path, tmp_path / "new.ckpt")
    assert result.metadata_source == "anemoi.json" and result.to_version == "2.0"
    assert load_metadata(str(result.destination))["uuid"] == source.uuid


def test_safetensors_is_not_upgraded_in_place_of_a_zip(tmp_path):
    path = tmp_path / "weights.safetensors"
    examples.write_safetensors(path, weights_bytes=1024, metadata=examples.make_metadata(uuid="s", run_id="r"))
    with pytest.raises(CkptError, match="not a torch zip checkpoint"):
        upgrade_checkpoint(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_the_copy_keeps_the_permissions_of_its_source(ai_models_checkpoint, tmp_path):
    # A temporary file is private (0600); a checkpoint in a shared project folder must stay readable to the group.
    import stat

    source = tmp_path / "shared.ckpt"
    source.write_bytes(ai_models_checkpoint.path.read_bytes())
    source.chmod(0o644)
    destination = upgrade_checkpoint(source, tmp_path / "new.ckpt").destination
    assert stat.S_IMODE(destination.stat().st_mode) == 0o644
