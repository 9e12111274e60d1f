"""The translation layer: each migration step, the chain, our own documents, the class table."""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.compat.anemoi_metadata import CURRENT_VERSION, MetadataV2, detect_version, parse_metadata
from anemoi_ckpt_nb.errors import SchemaError
from anemoi_ckpt_nb.compat.migrate import (
    ANEMOI_METADATA,
    Step,
    migrate,
    pending_steps,
    register_document_kind,
    register_document_step,
    steps_for,
)
from anemoi_ckpt_nb.compat.migrate import steps as steps_package
from anemoi_ckpt_nb.compat.migrate.documents import unregister_document_kind
from anemoi_ckpt_nb.read.renames import RENAMED_CLASSES, RENAMED_MODULES, rename_module, resolve_class
from anemoi_ckpt_nb.compat.migrate.steps import (
    m01_dataset_list_to_dict,
    m02_dataset_version_ecml_tools,
    m03_variables_metadata_mars,
    m04_module_versions_as_dicts,
    m05_legacy_to_v1,
    m06_single_to_multi_dataset,
)

GOLDEN = Path(__file__).parent / "data" / "golden"


def v1_metadata() -> dict:
    return examples.make_metadata(uuid="u-1", run_id="r-1", timestamp="2025-01-01T00:00:00+00:00", grid_points=8)


def golden_documents() -> list[Path]:
    return sorted(p for p in GOLDEN.glob("metadata-*.json") if not p.name.endswith(".expected.json"))


# --- the chain ---------------------------------------------------------------------------


def test_v1_metadata_reaches_the_current_version_and_validates():
    result = migrate(v1_metadata())
    assert (result.from_version, result.to_version) == ("1.0", CURRENT_VERSION)
    assert result.steps_applied == ["m04_module_versions_as_dicts", "m06_single_to_multi_dataset"]
    assert isinstance(parse_metadata(result.document), MetadataV2)


@pytest.mark.parametrize("path", golden_documents(), ids=lambda p: p.stem)
def test_migrate_never_modifies_its_input(path):
    document = json.loads(path.read_text())
    before = copy.deepcopy(document)
    result = migrate(document)
    assert document == before
    assert result.document is not document


@pytest.mark.parametrize("path", golden_documents(), ids=lambda p: p.stem)
def test_migrating_twice_changes_nothing_more(path):
    once = migrate(json.loads(path.read_text()))
    twice = migrate(once.document)
    assert twice.steps_applied == [] or once.to_version != CURRENT_VERSION
    assert twice.document == once.document


def test_pending_steps_names_what_migrate_would_run():
    assert pending_steps(v1_metadata()) == migrate(v1_metadata()).steps_applied
    assert pending_steps(migrate(v1_metadata()).document) == []


def test_metadata_newer_than_known_is_refused_not_rewritten():
    document = {**v1_metadata(), "version": "3.1"}
    with pytest.raises(SchemaError, match="3.1 is newer"):
        migrate(document)


def test_non_dict_is_refused():
    with pytest.raises(SchemaError, match="JSON object"):
        migrate(["not", "metadata"])


def test_step_names_are_unique_and_each_lives_in_its_own_module():
    chain = steps_for(ANEMOI_METADATA)
    names = [s.name for s in chain]
    assert len(set(names)) == len(names)
    modules = sorted(m.name for m in pkgutil.iter_modules(steps_package.__path__) if not m.name.startswith("_"))
    # One file per step, named like the step, and every step file is in the chain.
    assert modules == sorted(names)
    for name in modules:
        assert importlib.import_module(f"{steps_package.__name__}.{name}").STEP.name == name


def test_a_step_gets_a_private_copy_even_if_it_mutates():
    def careless(document):
        document["dataset"]["variables"].append("oops")
        return document

    step = Step("careless", "mutates", lambda d: True, careless)
    document = v1_metadata()
    before = copy.deepcopy(document)
    assert step(document)["dataset"]["variables"][-1] == "oops"
    assert document == before


def test_a_step_must_return_a_dict():
    with pytest.raises(TypeError, match="careless"):
        Step("careless", "returns nothing", lambda d: True, lambda d: None)({})


# --- each step --------------------------------------------------------------------------


def test_m01_joins_dataset_sources_with_drop_select_and_rename():
    document = {
        "config": {"dataloader": {"training": {"dataset": [
            {"dataset": "a", "drop": ["sst"]},
            {"dataset": "b", "select": ["t_850"]},
            {"dataset": "c", "rename": {"tp": "tp_6h"}},
        ]}}},
        "dataset": [{"variables": ["2t", "sst"]}, {"variables": ["t_850", "z_500"]}, {"variables": ["tp", "2t"]}],
    }
    step = m01_dataset_list_to_dict.STEP
    assert step.applies(document)
    dataset = step(document)["dataset"]
    assert dataset["variables"] == ["2t", "t_850", "tp_6h"]
    assert dataset["version"] == "0.2.0"
    assert [s["action"] for s in dataset["specific"]["datasets"]] == ["drop", "select", "rename"]
    assert not step.applies({"dataset": {"variables": ["2t"]}})


def test_m01_without_matching_specs_joins_the_sources_as_they_are():
    document = {"config": {}, "dataset": [{"variables": ["2t", "msl"]}, {"variables": ["msl", "z_500"]}]}
    assert m01_dataset_list_to_dict.STEP(document)["dataset"]["variables"] == ["2t", "msl", "z_500"]


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ({"version": "0.1.7", "arguments": {}}, "0.2.0"),
        ({"version": "0.1.9", "arguments": {}}, "0.2.0"),
        ({"variables": ["2t"]}, "0.1.0"),
        ({"version": "0.30", "arguments": {}}, None),
        ({"arguments": {}}, None),
    ],
)
def test_m02_renumbers_ecml_tools_dataset_versions(dataset, expected):
    document = {"version": "1.0", "dataset": dataset}
    step = m02_dataset_version_ecml_tools.STEP
    assert step.applies(document) is (expected is not None)
    if expected:
        assert step(document)["dataset"]["version"] == expected


def test_m02_leaves_2_0_datasets_alone():
    document = {"version": "2.0", "dataset": {"era5": {"version": "0.1.7"}}}
    assert not m02_dataset_version_ecml_tools.STEP.applies(document)


def test_m03_nests_top_level_mars_keys_in_both_layouts():
    old = {"t_850": {"param": "t", "levelist": 850}, "cos_latitude": {"computed_forcing": True}, "2t": {"mars": {"param": "2t"}}}
    for document in ({"version": "1.0", "dataset": {"variables_metadata": old}},
                     {"version": "2.0", "dataset": {"data": {"variables_metadata": old}}}):
        step = m03_variables_metadata_mars.STEP
        assert step.applies(document)
        migrated = step(document)
        described = migrated["dataset"]["variables_metadata"] if document["version"] == "1.0" else \
            migrated["dataset"]["data"]["variables_metadata"]
        assert described["t_850"]["mars"] == {"param": "t", "levelist": 850}
        assert "mars" not in described["cos_latitude"]
        assert described["2t"] == {"mars": {"param": "2t"}}
        assert not step.applies(migrated)


def test_m04_writes_module_versions_as_anemoi_utils_0_5_does():
    document = {"provenance_training": {"module_versions": {"anemoi.models": "0.3.1", "torch": {"version": "2.5.1", "source": {}}}}}
    migrated = m04_module_versions_as_dicts.STEP(document)
    assert migrated["provenance_training"]["module_versions"] == {
        "anemoi.models": {"version": "0.3.1"}, "torch": {"version": "2.5.1", "source": {}}}
    assert not m04_module_versions_as_dicts.STEP.applies(migrated)
    assert not m04_module_versions_as_dicts.STEP.applies({"provenance_training": None})


def test_m05_needs_dataset_variables_and_data_indices():
    legacy = {k: v for k, v in v1_metadata().items() if k != "version"}
    assert detect_version(legacy) == "0.0"
    assert m05_legacy_to_v1.STEP.applies(legacy)
    assert m05_legacy_to_v1.STEP(legacy)["version"] == "1.0"
    without = {k: v for k, v in legacy.items() if k != "data_indices"}
    assert not m05_legacy_to_v1.STEP.applies(without)


def test_m06_puts_the_dataset_under_its_name_and_derives_variable_names():
    document = v1_metadata()
    document["metadata_inference"] = None
    document["supporting_arrays_paths"] = {"latitudes": {"path": "x/anemoi-metadata/latitudes.numpy", "shape": [8], "dtype": "float64"}}
    migrated = m06_single_to_multi_dataset.STEP(document)
    assert migrated["version"] == "2.0"
    assert list(migrated["dataset"]) == ["data"]
    assert migrated["data_indices"]["data"] == document["data_indices"]
    entry = migrated["metadata_inference"]["data"]
    variables = document["dataset"]["variables"]
    # What anemoi-inference's variable_to_input_tensor_index computes from the same lists.
    data_in, model_in = document["data_indices"]["data"]["input"]["full"], document["data_indices"]["model"]["input"]["full"]
    assert entry["data_indices"]["input"] == {variables[d]: m for d, m in zip(data_in, model_in)}
    assert entry["variable_types"]["forcing"] == examples.FORCINGS
    assert entry["timesteps"] == {"timestep": "6h"}
    assert migrated["metadata_inference"]["dataset_names"] == ["data"]
    assert migrated["supporting_arrays_paths"] == {"data": document["supporting_arrays_paths"]}


def test_m06_keeps_a_1_x_dataset_name_and_existing_entries():
    document = v1_metadata()
    document["metadata_inference"] = {"dataset_names": ["era5"], "era5": {"timesteps": {"timestep": "1h"}, "variable_types": {"forcing": []}}}
    migrated = m06_single_to_multi_dataset.STEP(document)
    assert list(migrated["dataset"]) == ["era5"]
    entry = migrated["metadata_inference"]["era5"]
    assert entry["timesteps"] == {"timestep": "1h"}
    assert entry["variable_types"] == {"forcing": []}
    assert "input" in entry["data_indices"]


def test_m06_refuses_inconsistent_index_lists():
    document = v1_metadata()
    document["data_indices"]["model"]["input"]["full"] = [0, 1]
    with pytest.raises(SchemaError, match="m06_single_to_multi_dataset"):
        migrate(document)


def test_m06_does_not_apply_without_the_1_0_content():
    document = v1_metadata()
    del document["data_indices"]
    result = migrate(document)
    assert "m06_single_to_multi_dataset" not in result.steps_applied
    assert result.to_version == "1.0"


# --- our own documents ----------------------------------------------------------------------


@pytest.fixture
def toy_kind():
    def v1_to_v2(document):
        document["tags"] = document.pop("labels", [])
        document["schema_version"] = 2
        return document

    def v2_to_v3(document):
        document["tags"] = sorted(set(document["tags"]))
        document["schema_version"] = 3
        return document

    register_document_kind("toy", current_version=3)
    register_document_step("toy", from_version=1, step=Step("toy_1_labels_to_tags", "rename", lambda d: True, v1_to_v2))
    register_document_step("toy", from_version=2, step=Step("toy_2_sort_tags", "sort", lambda d: True, v2_to_v3))
    yield "toy"
    unregister_document_kind("toy")


def test_project_document_runs_each_version_step_in_order(toy_kind):
    document = {"schema_version": 1, "labels": ["b", "a", "b"]}
    result = migrate(document, toy_kind)
    assert result.steps_applied == ["toy_1_labels_to_tags", "toy_2_sort_tags"]
    assert (result.from_version, result.to_version) == (1, 3)
    assert result.document == {"schema_version": 3, "tags": ["a", "b"]}
    assert document == {"schema_version": 1, "labels": ["b", "a", "b"]}
    assert migrate(result.document, toy_kind).steps_applied == []


@pytest.mark.parametrize(
    ("document", "message"),
    [({"labels": []}, "no integer schema_version"), ({"schema_version": "1"}, "no integer schema_version"),
     ({"schema_version": 4}, "newer than 3")],
)
def test_project_document_errors(toy_kind, document, message):
    with pytest.raises(SchemaError, match=message):
        migrate(document, toy_kind)


def test_project_step_must_produce_the_next_version(toy_kind):
    register_document_kind("toy", current_version=4)
    register_document_step("toy", from_version=3, step=Step("toy_3_broken", "forgets the version", lambda d: True, lambda d: d))
    with pytest.raises(SchemaError, match="toy_3_broken left schema_version 3"):
        migrate({"schema_version": 3, "tags": []}, "toy")


def test_project_missing_step_is_an_error(toy_kind):
    register_document_kind("toy", current_version=5)
    with pytest.raises(SchemaError, match="from schema_version 3 to 4"):
        migrate({"schema_version": 3, "tags": []}, "toy")


def test_catalogue_documents_are_registered_kinds():
    from anemoi_ckpt_nb.compat.migrate import document_kinds
    from anemoi_ckpt_nb.catalogue.schema import STORED_MODELS

    kinds = document_kinds()
    assert {"record", "tags", "descriptor"} <= set(kinds)
    assert kinds["record"].current_version == STORED_MODELS["catalogue-record"].model_fields["schema_version"].default
    assert migrate({"schema_version": kinds["tags"].current_version, "uuid": "x"}, "tags").steps_applied == []


def test_unknown_kind_is_an_error():
    with pytest.raises(SchemaError, match="no document kind 'nope'"):
        migrate({"schema_version": 1}, "nope")


# --- the class table ------------------------------------------------------------------------


def test_aifs_index_classes_resolve_to_the_anemoi_models_split():
    assert resolve_class("aifs.data.dataindices", "IndexCollection") == ("anemoi.models.data_indices.collection", "IndexCollection")
    assert resolve_class("aifs.data.dataindices", "InputTensorIndex") == ("anemoi.models.data_indices.tensor", "InputTensorIndex")
    assert resolve_class("aifs.train.forecaster", "GraphForecaster") == ("anemoi.training.train.forecaster", "GraphForecaster")


def test_module_renames_use_the_longest_prefix_at_dot_boundaries():
    assert rename_module("anemoi.models.data.data_indices.collection") == "anemoi.models.data_indices.collection"
    assert rename_module("anemoi.training.schemas.hardware") == "anemoi.training.schemas.system"
    assert rename_module("aifs.trainer") == "aifs.trainer"
    assert rename_module("anemoi.models.layers.block") == "anemoi.models.layers.block"
    assert resolve_class("anemoi.training.schemas.hardware", "PathsSchema") == ("anemoi.training.schemas.system", "OutputSchema")
    assert rename_module("anemoi.training.utils.schemas.models.gnn") == "anemoi.training.schemas.models.gnn"
    assert rename_module("anemoi.training.utils.schemas.hardware") == "anemoi.training.schemas.system"


def test_renames_point_at_current_anemoi_packages_and_never_chain():
    targets = list(RENAMED_MODULES.values()) + [m for m, _ in RENAMED_CLASSES.values()]
    assert all(t.startswith("anemoi.") for t in targets)
    # A target is never itself renamed again, so one lookup is enough.
    assert all(rename_module(t) == t for t in targets)
