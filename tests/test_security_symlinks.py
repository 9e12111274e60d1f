"""Symlinks planted inside a catalogue folder, a site folder or a shared cache (issue 18).

Whoever may write to a shared folder may replace what we keep there by a symlink: a site's
``<uuid>`` folder pointing at another user's folder, a blob pointing at another user's file.
Following it would read, write or delete that user's files with the rights of whoever runs the
command. These tests plant such links (at the folder and at the file) and check that reading,
writing and deleting through them are refused with a typed error naming the place, the link and
what to do, and that the link's target is untouched. Public entry points only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from security_helpers import catalogue_with_one_checkpoint, run_cli

from anemoi_ckpt_nb import Catalogue
from anemoi_ckpt_nb.errors import SymlinkRefusedError
from anemoi_ckpt_nb.storage.local import LocalStorage


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def world(tmp_path):
    """A local catalogue, one registered checkpoint, a site ``shared``, and a victim's folder."""
    url = tmp_path / "catalogue"
    catalogue, ck = catalogue_with_one_checkpoint(url, tmp_path / "run")
    site = tmp_path / "site"
    catalogue.add_site("shared", path=site)
    victim = tmp_path / "victim"
    victim.mkdir()
    return catalogue, ck, url, site, victim


def plant(link: Path, target: Path) -> None:
    """Replace ``link`` (a file or a folder, or nothing) by a symlink to ``target``."""
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def refused(text: str, link: Path) -> bool:
    return "symbolic link" in text and str(link) in text and "rm " in text


# --- site folders ------------------------------------------------------------------------------


def test_replicate_never_writes_through_a_site_folder_planted_as_a_symlink(world, capsys):
    catalogue, ck, url, site, victim = world
    (victim / ".tmp.mine").write_bytes(b"the victim's own temporary")  # a sweep must not take it
    before = snapshot(victim)
    plant(site / ck.uuid, victim)
    code, out, err = run_cli(capsys, "replicate", ck.uuid, "--to", "shared", "--catalogue", str(url))
    assert code == 2, (out, err)
    assert refused(err, site / ck.uuid) and "site 'shared'" in err, err
    assert snapshot(victim) == before


@pytest.mark.s3
def test_a_download_from_s3_into_a_site_never_writes_through_a_planted_folder(s3_url, tmp_path, capsys):
    catalogue, ck = catalogue_with_one_checkpoint(s3_url, tmp_path / "run")
    site, victim = tmp_path / "site", tmp_path / "victim"
    victim.mkdir()
    catalogue.add_site("shared", path=site)
    plant(site / ck.uuid, victim)
    code, out, err = run_cli(capsys, "replicate", ck.uuid, "--to", "shared", "--catalogue", s3_url)
    assert code == 2 and refused(err, site / ck.uuid), (out, err)
    assert list(victim.iterdir()) == []


def test_dropping_a_copy_never_deletes_through_a_site_folder_planted_as_a_symlink(world, capsys):
    catalogue, ck, url, site, victim = world
    catalogue.get(ck.uuid).replicate("shared")
    (victim / "a.ckpt").write_bytes(b"the victim's own a.ckpt")
    plant(site / ck.uuid, victim)
    code, out, err = run_cli(capsys, "clean", "--drop-location", "shared", ck.uuid, "--apply", "--catalogue", str(url))
    assert (victim / "a.ckpt").read_bytes() == b"the victim's own a.ckpt"
    assert refused(out + err, site / ck.uuid), (out, err)


def test_a_site_copy_planted_as_a_symlink_is_not_read_verified_or_deleted(world, capsys):
    catalogue, ck, url, site, victim = world
    catalogue.get(ck.uuid).replicate("shared")
    copy = site / ck.uuid / "a.ckpt"
    (victim / "same.ckpt").write_bytes(copy.read_bytes())  # the right bytes: still not ours to read
    plant(copy, victim / "same.ckpt")

    code, out, err = run_cli(capsys, "locations", ck.uuid, "--verify", "--site", "shared", "--catalogue", str(url))
    assert refused(out + err, copy), (out, err)
    fetched = Catalogue(url).get(ck.uuid).fetch(Path(url).parent / "dest.ckpt", site="shared")
    assert fetched.site != "shared"
    assert any(refused(why, copy) for _, why in fetched.attempts), fetched
    code, out, err = run_cli(capsys, "clean", "--drop-location", "shared", ck.uuid, "--apply", "--catalogue", str(url))
    assert copy.is_symlink() and (victim / "same.ckpt").is_file()
    assert refused(out + err, copy), (out, err)


def test_clean_orphans_never_enters_a_site_folder_planted_as_a_symlink(world, capsys):
    catalogue, ck, url, site, victim = world
    (victim / ".tmp.mine").write_bytes(b"the victim's own temporary")
    site.mkdir()
    plant(site / ck.uuid, victim)
    code, out, err = run_cli(capsys, "clean", "--orphans", "--apply", "--catalogue", str(url))
    assert code == 0, err
    assert (victim / ".tmp.mine").is_file()


# --- the catalogue folder ----------------------------------------------------------------------


def blob_of(url: Path, uuid: str) -> Path:
    return url / json.loads((url / "records" / f"{uuid}.json").read_text())["blob"]


@pytest.mark.parametrize("level", ["file", "folder"])
def test_a_blob_planted_as_a_symlink_is_never_read(world, tmp_path, capsys, level):
    catalogue, ck, url, site, victim = world
    blob = blob_of(url, ck.uuid)
    (victim / blob.name).write_bytes(blob.read_bytes())  # the right bytes: still another user's file
    link = blob if level == "file" else blob.parent
    plant(link, victim / blob.name if level == "file" else victim)
    code, out, err = run_cli(capsys, "download", ck.uuid, str(tmp_path / "out.ckpt"), "--catalogue", str(url))
    assert code == 2, (out, err)
    assert refused(err, link) and "the catalogue" in err, err
    assert not (tmp_path / "out.ckpt").exists()


def test_clean_never_deletes_through_a_blob_folder_planted_as_a_symlink(world, capsys):
    catalogue, ck, url, site, victim = world
    blob = blob_of(url, ck.uuid)
    (victim / blob.name).write_bytes(b"the victim's file, named as the attacker chose")
    plant(blob.parent, victim)
    record = url / "records" / f"{ck.uuid}.json"
    record.write_text(record.read_text().replace(json.loads(record.read_text())["registered_at"], "2000-01-01T00:00:00Z"))
    Catalogue(url).rebuild_index()
    code, out, err = run_cli(capsys, "clean", "--older-than", "1", "--apply", "--catalogue", str(url))
    assert (victim / blob.name).read_bytes() == b"the victim's file, named as the attacker chose"
    assert code == 0 and ck.uuid in out, (out, err)  # the rest of the clean went on
    assert not (url / "records" / f"{ck.uuid}.json").exists()


def test_a_record_planted_as_a_symlink_is_refused_by_show_and_left_by_clean(world, tmp_path, capsys):
    catalogue, ck, url, site, victim = world
    record = url / "records" / f"{ck.uuid}.json"
    (victim / "record.json").write_text(record.read_text().replace(json.loads(record.read_text())["registered_at"], "2000-01-01T00:00:00Z"))
    plant(record, victim / "record.json")
    code, out, err = run_cli(capsys, "show", ck.uuid, "--catalogue", str(url))
    assert code == 2 and refused(err, record), (out, err)
    code, out, err = run_cli(capsys, "clean", "--older-than", "1", "--apply", "--catalogue", str(url))
    assert code == 0, (out, err)
    assert record.is_symlink() and (victim / "record.json").is_file() and blob_of(url, ck.uuid).is_file()


# --- a shared cache ----------------------------------------------------------------------------


def test_prefetch_never_writes_through_a_cache_folder_planted_as_a_symlink(world, tmp_path, capsys):
    catalogue, ck, url, site, victim = world
    cache = tmp_path / "cache"
    plant(cache / ck.uuid, victim)
    code, out, err = run_cli(capsys, "prefetch", ck.uuid, "--cache", str(cache), "--catalogue", str(url))
    assert code == 2 and refused(err, cache / ck.uuid), (out, err)
    assert list(victim.iterdir()) == []


# --- the folder storage itself, operation by operation -----------------------------------------

KEY = "f/obj"


@pytest.fixture(params=["file", "folder"])
def planted(request, tmp_path):
    """A folder storage holding ``f/obj``, with the object (or its folder) replaced by a link."""
    storage = LocalStorage(tmp_path / "root")
    storage.put(KEY, b"ours")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "obj").write_bytes(b"theirs")
    root = tmp_path / "root"
    link = root / KEY if request.param == "file" else root / "f"
    plant(link, victim / "obj" if request.param == "file" else victim)
    return storage, victim, link


@pytest.mark.parametrize("operation", [
    lambda s, tmp: s.get(KEY),
    lambda s, tmp: s.stat(KEY),
    lambda s, tmp: s.exists(KEY),
    lambda s, tmp: s.delete(KEY),
    lambda s, tmp: s.put(KEY, b"new"),
    lambda s, tmp: s.replace(KEY, b"new", etag="x"),
    lambda s, tmp: s.upload_file(KEY, _file(tmp, b"new"), sha256=_sha(b"new")),
    lambda s, tmp: s.download_file(KEY, tmp / "out", sha256=_sha(b"theirs")),
], ids=["get", "stat", "exists", "delete", "put", "replace", "upload_file", "download_file"])
def test_every_operation_refuses_a_planted_link(planted, tmp_path, operation):
    storage, victim, link = planted
    with pytest.raises(SymlinkRefusedError) as caught:
        operation(storage, tmp_path)
    assert refused(str(caught.value), link) and str(storage.root) in str(caught.value)
    assert (victim / "obj").read_bytes() == b"theirs" and sorted(p.name for p in victim.iterdir()) == ["obj"]
    assert link.is_symlink()


def test_a_listing_skips_planted_links(planted):
    storage, victim, link = planted
    storage.put("g/kept", b"x")
    assert [info.key for info in storage.list()] == ["g/kept"]


def _file(folder: Path, data: bytes) -> Path:
    path = folder / "source.bin"
    path.write_bytes(data)
    return path


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
