"""A shared catalogue is untrusted input (issue 18, docs/threat-model.md).

Everyone who can write to the bucket or folder can edit any JSON document in it. These tests
play that person: they edit records, ``catalogue.json`` and locations documents by hand, then
run the ordinary commands of another user, and check that nothing outside the catalogue, the
cache or the target folder is written or deleted, and that the catalogue itself survives.

Only public entry points are used: ``anemoi_ckpt_nb.Catalogue``, the ``anemoi-ckpt`` command
(``anemoi_ckpt_nb.cli.main``) and the JSON files on disk.
"""

from __future__ import annotations

import json
import os
import uuid as _uuid
from pathlib import Path

import pytest
from security_helpers import catalogue_with_one_checkpoint, is_ckpt_error, run_cli

from anemoi_ckpt_nb import Catalogue, examples, open_checkpoint




def edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


@pytest.fixture
def hostile(tmp_path):
    """A local catalogue with one registered, uploaded checkpoint; its record is ours to edit."""
    url = tmp_path / "catalogue"
    catalogue, ck = catalogue_with_one_checkpoint(url, tmp_path / "run")
    return catalogue, ck, url


def record_path(url: Path, uuid: str) -> Path:
    return url / "records" / f"{uuid}.json"


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, to show nothing changed there."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. arbitrary file write through a record's filename -------------------------------------


@pytest.mark.parametrize("filename", ["ABSOLUTE", "../../escaped.ckpt", "sub/../../escaped.ckpt"])
def test_a_record_filename_never_writes_outside_the_cache(hostile, tmp_path, filename):
    catalogue, ck, url = hostile
    victim = tmp_path / "victim" / "pwned.txt"
    victim.parent.mkdir()
    name = str(victim) if filename == "ABSOLUTE" else filename

    def change(document):
        document["filename"] = name
        document["source"]["host"] = "another-host"  # so the original file is not used

    edit_json(record_path(url, ck.uuid), change)
    cache = tmp_path / "deep" / "er" / "cache"
    try:
        path = Catalogue(url).get(ck.uuid).local_path(cache_dir=cache)
    except Exception as error:  # refused: a typed error naming the record
        assert is_ckpt_error(error), error
        path = None
    assert not victim.exists()
    assert not (tmp_path / "deep" / "escaped.ckpt").exists() and not (tmp_path / "escaped.ckpt").exists()
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - {p for p in (url).rglob("*")} - {
        p for p in (tmp_path / "run").rglob("*")
    }
    assert all(cache in p.parents for p in written), written
    if path is not None:
        assert cache in path.parents and path.read_bytes() == ck.path.read_bytes()


@pytest.mark.parametrize("command", ["download", "prefetch"])
def test_download_and_prefetch_keep_only_a_base_name(hostile, tmp_path, capsys, command):
    catalogue, ck, url = hostile
    victim = tmp_path / "victim.ckpt"
    edit_json(record_path(url, ck.uuid), lambda d: d.update(filename=str(victim)))
    target = tmp_path / "target"
    target.mkdir()
    if command == "download":
        code, out, err = run_cli(capsys, "download", ck.uuid, str(target), "--catalogue", str(url))
    else:
        code, out, err = run_cli(capsys, "prefetch", ck.uuid, "--cache", str(target), "--catalogue", str(url))
    assert code in (0, 2), err
    assert not victim.exists()
    assert all(target in p.parents for p in tmp_path.rglob("*.ckpt") if p != ck.path and url not in p.parents)


# --- 2 and 3. deletion only of what the layout allows ----------------------------------------


def test_a_hostile_site_and_location_cannot_delete_a_users_file(hostile, tmp_path, capsys):
    catalogue, ck, url = hostile
    home = tmp_path / "home"
    thesis = home / "Documents" / "thesis.pdf"
    thesis.parent.mkdir(parents=True)
    thesis.write_bytes(b"four years of work")
    # A second checkpoint of the same run, so that --keep-last 1 selects the first.
    later = examples.write_training_checkpoint(
        tmp_path / "run" / "b.ckpt", weights_bytes=20_000, run_id=ck.run_id, epoch=2, global_step=200
    )
    catalogue.register(later.path, allow_missing_parents=True)
    edit_json(url / "catalogue.json", lambda d: d.setdefault("sites", []).append(
        {"name": "home", "kind": "filesystem", "url": str(home)}
    ))
    record = json.loads(record_path(url, ck.uuid).read_text())
    location = {
        "site": "home", "kind": "filesystem", "key": "Documents/thesis.pdf", "url": str(thesis),
        "sha256": record["sha256"], "size": record["size"],
        "added_at": record["registered_at"], "added_by": record["registered_by"],
        "verified_at": record["registered_at"],
    }
    (url / "locations").mkdir(exist_ok=True)
    (url / "locations" / f"{ck.uuid}.json").write_text(json.dumps({
        "schema_version": 1, "uuid": ck.uuid, "generation": record["registered_at"].replace("Z", "+00:00"),
        "revision": 1, "locations": [location], "history": [],
    }))

    code, dry, err = run_cli(capsys, "clean", "--keep-last", "1", "--catalogue", str(url))
    assert code == 0, err
    code, out, err = run_cli(capsys, "clean", "--keep-last", "1", "--apply", "--catalogue", str(url))
    assert thesis.is_file() and thesis.read_bytes() == b"four years of work"
    # The dry run names every file it would delete (indented under its checkpoint): never the thesis,
    # and it says that the location was left alone.
    listed = [line.strip() for line in dry.splitlines() if line.startswith("    ")]
    assert listed and not any("thesis.pdf" in line for line in listed if not line.startswith("nothing"))
    assert any("left alone" in line for line in listed), dry


def test_a_record_naming_other_keys_as_its_blobs_cannot_destroy_the_catalogue(tmp_path, capsys):
    url = tmp_path / "catalogue"
    catalogue = Catalogue.create(url)
    victim = examples.write_training_checkpoint(tmp_path / "run" / "victim.ckpt", weights_bytes=20_000)
    catalogue.register(victim.path, tags=["production-ready"])
    hostile = examples.write_training_checkpoint(tmp_path / "run" / "old.ckpt", weights_bytes=20_000)
    catalogue.register(hostile.path)

    def change(document):
        document["blob"] = f"records/{victim.uuid}.json"
        document["metadata_blob"] = "catalogue.json"

    edit_json(record_path(url, hostile.uuid), change)
    # Make the hostile record old enough for --older-than.
    edit_json(record_path(url, hostile.uuid), lambda d: d.update(registered_at="2000-01-01T00:00:00Z"))
    Catalogue(url).rebuild_index()
    before = {k: v for k, v in tree(url).items() if k.startswith(("catalogue.json", "records/" + victim.uuid, "blobs/"))}
    run_cli(capsys, "clean", "--older-than", "1", "--apply", "--catalogue", str(url))
    after = tree(url)
    assert after.get("catalogue.json") == before["catalogue.json"]
    assert after.get(f"records/{victim.uuid}.json") == before[f"records/{victim.uuid}.json"]
    # The protected checkpoint is whole: its record, its file and its metadata.
    again = Catalogue(url).get(victim.uuid)
    assert again.download(tmp_path / "back.ckpt").read_bytes() == victim.path.read_bytes()
    with open_checkpoint(victim.path) as read:
        assert again.metadata()["uuid"] == read.metadata["uuid"]


def test_the_dry_run_lists_every_key_clean_deletes(tmp_path, capsys):
    url = tmp_path / "catalogue"
    catalogue = Catalogue.create(url)
    first = examples.write_training_checkpoint(tmp_path / "run" / "a.ckpt", weights_bytes=20_000)
    second = examples.write_training_checkpoint(
        tmp_path / "run" / "b.ckpt", weights_bytes=20_000, run_id=first.run_id, epoch=2, global_step=200
    )
    catalogue.register(first.path)
    catalogue.register(second.path, allow_missing_parents=True)
    site = tmp_path / "site"
    catalogue.add_site("shared", path=site)
    catalogue.get(first.uuid).replicate("shared")
    plan = catalogue.clean(keep_last=1)
    listed = set(plan.keys) if hasattr(plan, "keys") else set()
    code, dry, _ = run_cli(capsys, "clean", "--keep-last", "1", "--catalogue", str(url))
    before = set(tree(url)) | {f"site:{k}" for k in tree(site)}
    run_cli(capsys, "clean", "--keep-last", "1", "--apply", "--catalogue", str(url))
    after = set(tree(url)) | {f"site:{k}" for k in tree(site)}
    gone = {k for k in before - after if not k.startswith("index/")}
    assert gone, "clean deleted nothing"
    for key in gone:
        name = key.removeprefix("site:")
        assert name in dry or name in listed, f"{key} was deleted but the dry run did not list it:\n{dry}"


# --- 7 and 9. uuids are uuids, and a record is what its key says -------------------------------


@pytest.mark.parametrize("bad", ["a/b/c", "x", '"><img src=x onerror=alert(1)>/y', "PRODUCTION"])
def test_a_file_whose_uuid_is_not_a_uuid_is_refused_by_register(tmp_path, capsys, bad):
    url = tmp_path / "catalogue"
    Catalogue.create(url)
    ck = examples.write_training_checkpoint(tmp_path / "run" / "a.ckpt", weights_bytes=20_000, uuid=bad)
    code, out, err = run_cli(capsys, "register", str(ck.path), "--catalogue", str(url))
    assert code == 2, (out, err)
    assert "uuid" in err and str(ck.path) in err
    assert not (url / "records").exists() or not any((url / "records").rglob("*.json"))
    code, out, err = run_cli(capsys, "reindex", "--check", "--catalogue", str(url))
    assert code == 0, err


def test_a_record_holding_another_uuid_is_refused(tmp_path, capsys):
    url = tmp_path / "catalogue"
    catalogue = Catalogue.create(url)
    a = examples.write_training_checkpoint(tmp_path / "run" / "a.ckpt", weights_bytes=20_000)
    b = examples.write_training_checkpoint(tmp_path / "run" / "b.ckpt", weights_bytes=20_000)
    catalogue.register(a.path)
    catalogue.register(b.path)
    # records/A.json now holds B's record.
    record_path(url, a.uuid).write_bytes(record_path(url, b.uuid).read_bytes())
    code, out, err = run_cli(capsys, "show", a.uuid, "--catalogue", str(url))
    assert code == 2 and a.uuid in err, (out, err)
    code, out, err = run_cli(capsys, "tag", a.uuid, "+x", "--catalogue", str(url))
    assert code == 2, (out, err)
    assert "x" not in Catalogue(url).get(b.uuid).tags


def test_a_record_uuid_that_is_a_path_creates_nothing_outside_the_cache(hostile, tmp_path):
    catalogue, ck, url = hostile
    outside = tmp_path / "outside"
    edit_json(record_path(url, ck.uuid), lambda d: (d.update(uuid=str(outside)), d["source"].update(host="elsewhere")))
    cache = tmp_path / "cache"
    with pytest.raises(Exception) as caught:
        Catalogue(url).get(ck.uuid).prefetch(cache=cache)
    assert is_ckpt_error(caught.value), caught.value
    assert not outside.exists()


@pytest.mark.parametrize("field,value", [
    ("sha256", "../../x"),
    ("blob", "catalogue.json"),
    ("metadata_blob", "records/x.json"),
    ("uuid", "not-a-uuid"),
])
def test_show_refuses_a_record_with_keys_that_do_not_follow_the_layout(hostile, capsys, field, value):
    catalogue, ck, url = hostile
    edit_json(record_path(url, ck.uuid), lambda d: d.update({field: value}))
    code, out, err = run_cli(capsys, "show", ck.uuid, "--catalogue", str(url))
    assert code == 2, (out, err)
    assert ck.uuid in err


# --- hostile sites ---------------------------------------------------------------------------


def test_a_location_key_outside_the_checkpoints_folder_is_never_read_or_deleted(hostile, tmp_path, capsys):
    """A location at a real site whose key names another checkpoint's folder."""
    catalogue, ck, url = hostile
    other = examples.write_training_checkpoint(tmp_path / "run" / "other.ckpt", weights_bytes=20_000)
    catalogue.register(other.path)
    site = tmp_path / "site"
    catalogue.add_site("shared", path=site)
    catalogue.get(other.uuid).replicate("shared")
    catalogue.get(ck.uuid).replicate("shared")
    other_copy = next((site / other.uuid).iterdir())
    kept = other_copy.read_bytes()

    def change(document):
        for location in document["locations"]:
            if location["site"] == "shared":
                location["key"] = f"{other.uuid}/{other_copy.name}"

    edit_json(url / "locations" / f"{ck.uuid}.json", change)
    run_cli(capsys, "clean", "--drop-location", "shared", ck.uuid, "--apply", "--catalogue", str(url))
    assert other_copy.is_file() and other_copy.read_bytes() == kept


# --- aliases no record stands behind: clean --orphans --------------------------------------------


def alias_path(url: Path, uuid: str) -> Path:
    return url / "aliases" / f"{uuid}.json"


def test_clean_orphans_sweeps_an_alias_whose_record_is_gone_dry_run_first(hostile, tmp_path, capsys):
    catalogue, ck, url = hostile
    kept = examples.write_training_checkpoint(tmp_path / "run" / "kept.ckpt", weights_bytes=20_000)
    catalogue.register(kept.path)
    record_path(url, ck.uuid).unlink()  # what a clean killed between the record and its aliases leaves
    stray = alias_path(url, ck.embedded_uuid)
    assert stray.is_file() and alias_path(url, kept.embedded_uuid).is_file()
    # Younger than --orphan-age (24 hours by default): it may be a registration in flight.
    code, out, err = run_cli(capsys, "clean", "--orphans", "--catalogue", str(url))
    assert code == 0 and ck.embedded_uuid not in out, (out, err)
    code, dry, err = run_cli(capsys, "clean", "--orphans", "--orphan-age", "0", "--catalogue", str(url))
    assert code == 0, err
    assert f"aliases/{ck.embedded_uuid}.json" in dry and "stray alias" in dry and ck.uuid in dry, dry
    assert kept.embedded_uuid not in dry and stray.is_file()  # a dry run removes nothing
    code, out, err = run_cli(capsys, "clean", "--orphans", "--orphan-age", "0", "--apply", "--catalogue", str(url))
    assert code == 0, err
    assert not stray.exists() and alias_path(url, kept.embedded_uuid).is_file()
    assert Catalogue(url).get(kept.embedded_uuid).uuid == kept.uuid


def test_a_planted_alias_is_refused_by_show_and_swept_by_clean_orphans(hostile, tmp_path, capsys):
    catalogue, ck, url = hostile
    other = examples.write_training_checkpoint(tmp_path / "run" / "other.ckpt", weights_bytes=20_000)
    # Filed by hand under ck's record, which names only its own other uuid.
    alias_path(url, other.uuid).write_text(json.dumps({"schema_version": 1, "alias": other.uuid, "uuid": ck.uuid}))
    bogus = alias_path(url, str(_uuid.uuid4()))
    bogus.write_text(json.dumps({"schema_version": 1, "alias": str(_uuid.uuid4()), "uuid": ck.uuid}))
    junk = url / "aliases" / "x.json"
    junk.write_text("{}")
    code, out, err = run_cli(capsys, "show", other.uuid, "--catalogue", str(url))
    assert code == 2 and f"aliases/{other.uuid}.json" in err and "clean --orphans" in err, (out, err)
    # Nothing young about these: they count at any --orphan-age.
    code, dry, err = run_cli(capsys, "clean", "--orphans", "--catalogue", str(url))
    assert code == 0, err
    assert all(name in dry for name in (f"aliases/{other.uuid}.json", bogus.name, "aliases/x.json")), dry
    assert ck.embedded_uuid not in dry
    code, out, err = run_cli(capsys, "clean", "--orphans", "--apply", "--catalogue", str(url))
    assert code == 0, err
    assert sorted(p.name for p in (url / "aliases").iterdir()) == [f"{ck.embedded_uuid}.json"]
    # The file that really holds that uuid registers now: nothing claims it.
    assert catalogue.register(other.path).record.uuid == other.uuid
