"""A training file's two uuids in the catalogue, the hint that names the parent, and a resume keeping its parent's bytes.

The real files of anemoi-training are checked in ``test_real_files.py``; these cases need a
catalogue in a state the fixtures do not produce (filed by an earlier release, blob-less records).
"""

from __future__ import annotations

import json
import shutil

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.records import inspect_file, make_record
from anemoi_ckpt_nb.catalogue.register import import_records
from anemoi_ckpt_nb.compat import environment as env
from anemoi_ckpt_nb.errors import MissingParentError, RunPlanError


def _snapshot() -> env.EnvironmentSnapshot:
    base = {name: examples.DEFAULT_MODULE_VERSIONS.get(name) for name in env.TRACKED_PACKAGES}
    return env.EnvironmentSnapshot(python="3.11.9", packages=base)


def test_either_uuid_finds_a_training_file(tmp_path):
    written = examples.write_training_checkpoint(tmp_path / "run" / "last.ckpt", weights_bytes=20_000)
    assert written.embedded_uuid and written.embedded_uuid != written.uuid
    catalogue = Catalogue.create(tmp_path / "catalogue")
    catalogue.register(written.path)
    assert catalogue.get(written.uuid).uuid == written.uuid
    assert catalogue.get(written.embedded_uuid).uuid == written.uuid
    alias = json.loads((tmp_path / "catalogue" / layout.alias_key(written.embedded_uuid)).read_text())
    assert alias["uuid"] == written.uuid


def test_a_record_filed_under_the_embedded_uuid_by_an_earlier_release_is_found_again(tmp_path):
    parent = examples.write_training_checkpoint(tmp_path / "run" / "a.ckpt", weights_bytes=20_000)
    child = examples.write_training_checkpoint(
        tmp_path / "run" / "b.ckpt", weights_bytes=20_000, run_id=None, parent_uuid=parent.uuid
    )
    catalogue = Catalogue.create(tmp_path / "catalogue")
    # What an earlier release wrote: the record keyed by the embedded uuid, no alias.
    facts = inspect_file(parent.path)
    facts.metadata_uuid = parent.embedded_uuid
    facts.other_uuids = []
    old = make_record(facts, parents=[], name=None, blob=None, metadata_blob=None)
    assert old.uuid == parent.embedded_uuid
    import_records(catalogue.store, [old])
    with pytest.raises(MissingParentError):
        catalogue.register(child.path)
    # Registering the parent again finds its old record and files the lineage uuid as an alias.
    again = catalogue.register(parent.path)
    assert again.uuid == parent.embedded_uuid
    registered = catalogue.register(child.path)
    assert [(p.uuid, p.relation) for p in registered.parents] == [(parent.embedded_uuid, "forked-from")]


def test_the_hint_names_the_training_file_not_the_inference_file_beside_it(tmp_path):
    run = tmp_path / "run"
    parent = examples.write_training_checkpoint(run / "anemoi-by_epoch-epoch_001-step_000100.ckpt", weights_bytes=20_000)
    examples.write_inference_checkpoint(run / "inference-anemoi-by_epoch-epoch_001-step_000100.ckpt", source=parent)
    child = examples.write_training_checkpoint(
        run / "last.ckpt", weights_bytes=20_000, run_id=parent.run_id, parent_uuid=parent.uuid, epoch=2, global_step=200
    )
    catalogue = Catalogue.create(tmp_path / "catalogue")
    with pytest.raises(MissingParentError) as caught:
        catalogue.register(child.path)
    assert f"anemoi-ckpt register {parent.path}`" in caught.value.hint
    assert "inference-" not in caught.value.hint


def test_resume_uploads_the_checkpoint_it_resumes_from_when_no_site_holds_it(tmp_path):
    written = examples.write_run(tmp_path / "runs", checkpoints=1, weights_bytes=20_000)
    catalogue = Catalogue.create(tmp_path / "catalogue")
    catalogue.register(written[0].path, upload=False)
    parent = catalogue.get(written[0].uuid)
    assert parent.record.blob is None
    parent.resume(cache=tmp_path / "cache", environment=_snapshot(), prefetch=False, layout="system")
    stored = tmp_path / "catalogue" / layout.blob_key(parent.record.sha256)
    assert stored.read_bytes() == written[0].path.read_bytes()


def test_resume_refuses_when_the_bytes_cannot_be_kept(tmp_path):
    written = examples.write_run(tmp_path / "runs", checkpoints=1, weights_bytes=20_000)
    catalogue = Catalogue.create(tmp_path / "catalogue")
    catalogue.register(written[0].path, upload=False)
    shutil.rmtree(tmp_path / "runs")  # the file is gone and no site holds a copy
    with pytest.raises(RunPlanError, match="no site holds a copy") as caught:
        catalogue.get(written[0].uuid).resume(
            cache=tmp_path / "cache", environment=_snapshot(), prefetch=False, layout="system"
        )
    assert "anemoi-ckpt replicate" in caught.value.hint
    assert not (tmp_path / "catalogue" / "manifests").exists() or not any((tmp_path / "catalogue" / "manifests").iterdir())
