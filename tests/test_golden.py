"""Every golden file (tests/data/golden/) is read and migrated on every run and compared with
its expected output, so a change that breaks an old format fails here.

The golden inputs imitate what older anemoi releases wrote and must never be edited;
``tests/data/make_golden.py`` made them (see its docstring before regenerating anything).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from anemoi_ckpt_nb.compat.anemoi_metadata import CURRENT_VERSION, parse_metadata
from anemoi_ckpt_nb.read.embedded import find_metadata_entry
from anemoi_ckpt_nb.compat.migrate import migrate
from anemoi_ckpt_nb.read.renames import resolve_class
from anemoi_ckpt_nb.compat.upgrade import RECORD_KEY, upgrade_checkpoint
from anemoi_ckpt_nb.read.reader import open_checkpoint

GOLDEN = Path(__file__).parent / "data" / "golden"
DOCUMENTS = sorted(p for p in GOLDEN.glob("metadata-*.json") if not p.name.endswith(".expected.json"))
CHECKPOINTS = sorted(GOLDEN.glob("*.ckpt"))


def placeholder_classes(obj, seen=None) -> dict[str, tuple[str, str]]:
    """``module.name`` (as renamed by the reader) -> as the file wrote it, for every placeholder in ``obj``."""
    from anemoi_ckpt_nb.read.placeholders import is_placeholder, is_placeholder_class

    seen = set() if seen is None else seen
    found: dict[str, tuple[str, str]] = {}
    if id(obj) in seen:
        return found
    seen.add(id(obj))
    if is_placeholder_class(obj) or is_placeholder(obj):
        found[f"{obj.ph_module}.{obj.ph_name}"] = tuple(obj.ph_original)
    children = []
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    elif is_placeholder(obj):
        children = [obj.ph_args, obj.ph_state, obj.ph_listitems, obj.ph_dictitems]
    for child in children:
        found.update(placeholder_classes(child, seen))
    return found


def expected(path: Path) -> dict:
    return json.loads((GOLDEN / f"{path.stem}.expected.json").read_text())


def test_the_golden_set_covers_every_format():
    names = {p.stem for p in DOCUMENTS} | {p.stem for p in CHECKPOINTS}
    assert {"metadata-0.0-dataset-list", "metadata-1.0-anemoi-training", "metadata-2.0-multi-dataset",
            "ckpt-anemoi-json", "ckpt-ai-models-json", "ckpt-hyper-parameters-only", "ckpt-aifs-modules"} <= names
    assert all((GOLDEN / f"{n}.expected.json").exists() for n in names)
    assert all(p.stat().st_size < 200_000 for p in GOLDEN.iterdir()), "golden files must stay small"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.stem)
def test_golden_document_migrates_to_its_expected_output(path):
    want = expected(path)
    result = migrate(json.loads(path.read_text()))
    assert result.steps_applied == want["steps_applied"]
    assert (result.from_version, result.to_version) == (want["from_version"], want["to_version"])
    assert result.document == want["document"]
    if result.to_version == CURRENT_VERSION:
        parse_metadata(result.document)


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.stem)
def test_golden_checkpoint_reads_safely_and_migrates_to_its_expected_output(path):
    want = expected(path)
    with open_checkpoint(path) as ck:
        metadata = ck.metadata
        classes = placeholder_classes(ck.raw)
    with zipfile.ZipFile(path) as zf:
        found = find_metadata_entry(zf.namelist())
    assert (found[1] if found else "hyper_parameters") == want["metadata_source"]
    result = migrate(metadata)
    assert result.steps_applied == want["steps_applied"]
    assert (result.from_version, result.to_version) == (want["from_version"], want["to_version"])
    assert result.document == want["document"]
    # Classes that moved reach the reader's translation table under their current names.
    for old, new in want["renamed_classes"]:
        assert resolve_class(*old.rsplit(".", 1)) == tuple(new.rsplit(".", 1))
        assert old not in classes
        assert classes[new] == tuple(old.rsplit(".", 1))


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.stem)
def test_golden_checkpoint_upgrades_to_current_metadata(path, tmp_path):
    want = expected(path)
    result = upgrade_checkpoint(path, tmp_path / "up.ckpt")
    upgraded = result.metadata
    record = upgraded.pop(RECORD_KEY)
    upgraded.pop("supporting_arrays_paths", None)
    document = dict(want["document"])
    document.pop("supporting_arrays_paths", None)
    assert upgraded == document
    assert record["upgrades"][-1]["steps"][: len(want["steps_applied"])] == want["steps_applied"]
    assert result.to_version == CURRENT_VERSION
