"""Sharing across sites: site descriptions, locations, replicate, site-aware fetch, verify, drop.

The big test runs two real SeaweedFS servers on different loopback ports (two
S3 sites, one reached through an AWS profile with its own credentials) and a
local folder standing in for a site's shared file system. The others use
folder and in-memory catalogues, which take the same code paths except S3.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid as _uuid
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.errors import (
    LastCopyError,
    NoReachableCopyError,
    SiteError,
    UnknownSiteError,
)


def write_ckpt(folder: Path, name: str = "train.ckpt", **options) -> examples.ExampleCheckpoint:
    folder.mkdir(parents=True, exist_ok=True)
    return examples.write_training_checkpoint(folder / name, weights_bytes=options.pop("weights_bytes", 60_000), **options)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_catalogue(tmp_path) -> Catalogue:
    return Catalogue.create(tmp_path / "catalogue")


# --- sites in catalogue.json ------------------------------------------------------------------


def test_sites_are_described_once_without_credentials(local_catalogue, tmp_path, capsys, monkeypatch):
    url = local_catalogue.url
    code, out, _ = run_cli(capsys, "site", "add", "lumi", "--path", str(tmp_path / "lumi"), "--catalogue", url)
    assert code == 0 and "site lumi: filesystem" in out
    code, _, _ = run_cli(
        capsys, "site", "add", "leonardo", "--s3", "s3://bucket/replicas/", "--endpoint-url", "https://s3.leonardo.example",
        "--profile", "leonardo", "--catalogue", url,
    )
    assert code == 0
    code, _, _ = run_cli(capsys, "site", "name-catalogue", "ecmwf", "--catalogue", url)
    assert code == 0

    monkeypatch.setenv("ANEMOI_CKPT_SITE", "leonardo")
    code, out, _ = run_cli(capsys, "site", "ls", "--json", "--catalogue", url)
    rows = json.loads(out)
    assert [(r["name"], r["kind"]) for r in rows] == [("ecmwf", "catalogue"), ("lumi", "filesystem"), ("leonardo", "s3")]
    assert rows[2]["url"] == "s3://bucket/replicas" and rows[2]["profile"] == "leonardo"
    assert [r["local"] for r in rows] == [False, False, True]
    stored = (tmp_path / "catalogue" / "catalogue.json").read_text()
    assert "leonardo" in stored and "secret" not in stored.lower() and "access_key" not in stored.lower()
    assert json.loads(stored)["catalogue_site"] == "ecmwf"

    # Misuse: one clear line each.
    for args, needle in [
        (("site", "add", "lumi", "--path", str(tmp_path / "x")), "already described"),
        (("site", "add", "bad name", "--path", str(tmp_path / "x")), "invalid site name"),
        (("site", "add", "rel", "--path", "relative/dir"), "not an absolute path"),
        (("site", "add", "fs", "--path", str(tmp_path / "x"), "--profile", "p"), "only apply to S3"),
        (("site", "add", "ecmwf", "--s3", "s3://b/p"), "catalogue's own site"),
        (("site", "add", "web", "--s3", "https://b/p"), "not an s3://bucket/prefix URL"),
        (("site", "rm", "nowhere"), "no site 'nowhere'"),
        (("replicate", "x", "--to", "lumi"), "no checkpoint"),
        (("clean", "3f2c1a9e"), "only with --drop-location"),
        (("clean", "--drop-location", "lumi"), "needs the checkpoints"),
    ]:
        code, _, err = run_cli(capsys, *args, "--catalogue", url)
        assert code == 2 and needle in err and err.count("\n") == 1, (args, err)


def test_concurrent_site_changes_are_all_kept(local_catalogue, tmp_path):
    names = [f"site-{i}" for i in range(8)]

    def add(name: str) -> None:
        Catalogue(local_catalogue.url).add_site(name, path=str(tmp_path / name))

    threads = [threading.Thread(target=add, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s["name"] for s in Catalogue(local_catalogue.url).sites()[1:]) == names


# --- replicate, locations, fetch, drop on folders -------------------------------------------------


def test_replicate_to_a_folder_site_then_fetch_and_drop(local_catalogue, tmp_path, capsys):
    ckpt = write_ckpt(tmp_path / "run")
    ck = local_catalogue.register(ckpt.path)
    assert [(loc.site, loc.kind, loc.method) for loc in ck.locations()] == [("catalogue", "catalogue-blob", "registered")]
    assert not (tmp_path / "catalogue" / "locations").exists()  # implicit until something changes

    local_catalogue.add_site("lumi", path=str(tmp_path / "lumi-fs"))
    result = ck.replicate("lumi")
    replica = tmp_path / "lumi-fs" / ck.uuid / ckpt.path.name
    assert result.method == "uploaded" and result.source == "catalogue"
    assert replica.read_bytes() == ckpt.path.read_bytes()
    assert ck.replicate("lumi").method == "already-there"
    assert [loc.site for loc in ck.locations()] == ["catalogue", "lumi"]
    assert [e.uuid for e in local_catalogue.search(site="lumi")] == [ck.uuid]
    assert local_catalogue.search(site="elsewhere") == []
    assert local_catalogue.to_pandas()["sites"].tolist() == [["catalogue", "lumi"]]

    # The machine's own site is used first, and the CLI says so.
    code, out, err = run_cli(capsys, "download", ck.uuid, str(tmp_path / "dl.ckpt"), "--catalogue", local_catalogue.url)
    assert code == 0 and out.strip() == str(tmp_path / "dl.ckpt")
    assert "fetched from site lumi" in err  # a folder this machine sees comes before the catalogue blob
    assert local_catalogue.fetch(ck.uuid, tmp_path / "dl2.ckpt", site="catalogue").site == "catalogue"

    # Drop the catalogue's copy: the record stays, the folder copy serves downloads.
    code, out, _ = run_cli(capsys, "clean", "--drop-location", "catalogue", ck.uuid, "--catalogue", local_catalogue.url)
    assert code == 0 and "would drop" in out and (tmp_path / "catalogue" / ck.record.blob).exists()
    code, out, _ = run_cli(capsys, "clean", "--drop-location", "catalogue", ck.uuid, "--apply", "--catalogue", local_catalogue.url)
    assert code == 0 and "dropped" in out and "remain at lumi" in out
    assert not (tmp_path / "catalogue" / ck.record.blob).exists()
    assert local_catalogue.get(ck.uuid).download(tmp_path / "dl3.ckpt").read_bytes() == ckpt.path.read_bytes()
    assert local_catalogue.search(site="catalogue") == []

    # The last copy of a kept checkpoint is refused, and the bytes stay.
    code, _, err = run_cli(capsys, "clean", "--drop-location", "lumi", ck.uuid, "--apply", "--catalogue", local_catalogue.url)
    assert code == 2 and "last verified copy" in err and err.count("\n") == 1
    assert replica.exists()
    # Restoring the catalogue's copy from the site is a replication like any other.
    assert ck.replicate("catalogue").method == "uploaded"
    assert (tmp_path / "catalogue" / ck.record.blob).read_bytes() == ckpt.path.read_bytes()


def test_verify_finds_damaged_and_missing_copies_and_fetch_falls_back(local_catalogue, tmp_path, capsys):
    ckpt = write_ckpt(tmp_path / "run")
    ck = local_catalogue.register(ckpt.path)
    local_catalogue.add_site("lumi", path=str(tmp_path / "lumi-fs"))
    local_catalogue.add_site("juwels", path=str(tmp_path / "juwels-fs"))
    ck.replicate("lumi")
    ck.replicate("juwels")
    lumi = tmp_path / "lumi-fs" / ck.uuid / ckpt.path.name
    data = bytearray(lumi.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lumi.write_bytes(bytes(data))  # same size, other bytes: bit rot on the site

    # lumi is this machine's site, but its copy is damaged: the next one is used and lumi is marked.
    result = ck.fetch(tmp_path / "out.ckpt", site="lumi")
    assert result.site != "lumi" and result.attempts[0][0] == "lumi" and "sha256" in result.attempts[0][1]
    assert sha(result.path) == ck.sha256
    marked = {loc.site: loc for loc in ck.locations()}
    assert marked["lumi"].problem and marked["lumi"].problem.startswith("sha256 mismatch")
    assert not marked["lumi"].ok and marked["juwels"].ok

    (tmp_path / "juwels-fs" / ck.uuid / ckpt.path.name).unlink()
    code, out, _ = run_cli(capsys, "locations", ck.uuid, "--verify", "--catalogue", local_catalogue.url)
    assert code == 1  # problems found
    assert "verify catalogue: ok" in out and "verify lumi: MISMATCH" in out and "verify juwels: MISSING" in out
    code, out, _ = run_cli(capsys, "locations", ck.uuid, "--json", "--catalogue", local_catalogue.url)
    rows = {row["site"]: row for row in json.loads(out)}
    assert rows["juwels"]["problem"] == "missing" and rows["catalogue"]["problem"] is None
    history = json.loads((tmp_path / "catalogue" / "locations" / f"{ck.uuid}.json").read_text())["history"]
    assert [e["action"] for e in history][-3:] == ["verify", "problem", "problem"]

    # A damaged copy does not count as verified: the catalogue's copy is now the last good one.
    with pytest.raises(LastCopyError):
        ck.drop_location("catalogue", dry_run=False)
    # Dropping a damaged copy is fine while a verified one remains.
    assert ck.drop_location("lumi", dry_run=False).applied
    assert not lumi.exists() and not lumi.parent.exists()

    # Repair by replicating again: "juwels" gets a fresh, verified copy.
    assert ck.replicate("juwels").method == "uploaded"
    code, out, _ = run_cli(capsys, "locations", ck.uuid, "--verify", "--catalogue", local_catalogue.url)
    assert code == 0 and out.count(": ok:") == 2


def test_two_people_dropping_the_two_last_copies_at_once(local_catalogue, tmp_path):
    ck = local_catalogue.register(write_ckpt(tmp_path / "run").path)
    local_catalogue.add_site("lumi", path=str(tmp_path / "lumi-fs"))
    ck.replicate("lumi")
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def drop(site: str) -> None:
        checkpoint = Catalogue(local_catalogue.url).get(ck.uuid)
        barrier.wait()
        try:
            outcomes[site] = checkpoint.drop_location(site, dry_run=False)
        except LastCopyError as error:
            outcomes[site] = error

    threads = [threading.Thread(target=drop, args=(site,)) for site in ("catalogue", "lumi")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [site for site, outcome in outcomes.items() if isinstance(outcome, LastCopyError)]
    assert len(refused) == 1, outcomes
    (left,) = ck.locations()
    assert left.site == refused[0]
    assert ck.download(tmp_path / "back.ckpt").exists()


def test_clean_of_a_checkpoint_removes_its_copies_everywhere(local_catalogue, tmp_path):
    written = examples.write_run(tmp_path / "run", checkpoints=2, weights_bytes=20_000)
    first, second = local_catalogue.register_many([w.path for w in written])
    local_catalogue.add_site("lumi", path=str(tmp_path / "lumi-fs"))
    first.replicate("lumi")
    second.replicate("lumi")
    plan = local_catalogue.clean(keep_last=1, dry_run=False)
    assert [d.uuid for d in plan.delete] == [first.uuid]
    assert not (tmp_path / "lumi-fs" / first.uuid).exists()
    assert (tmp_path / "lumi-fs" / second.uuid).exists()
    assert not (tmp_path / "catalogue" / "locations" / f"{first.uuid}.json").exists()
    assert [e.uuid for e in local_catalogue.search(site="lumi")] == [second.uuid]
    # The site is still in use: removing its description is refused, then forced.
    with pytest.raises(SiteError, match="holds copies of 1 checkpoint"):
        local_catalogue.remove_site("lumi")
    local_catalogue.remove_site("lumi", force=True)
    with pytest.raises(UnknownSiteError):
        second.replicate("lumi")


def test_sites_in_the_index_survive_a_rebuild(local_catalogue, tmp_path):
    ck = local_catalogue.register(write_ckpt(tmp_path / "run").path)
    local_catalogue.add_site("lumi", path=str(tmp_path / "lumi-fs"))
    ck.replicate("lumi")
    ck.drop_location("catalogue", dry_run=False)
    local_catalogue.rebuild_index()
    fresh = Catalogue(local_catalogue.url)
    assert [e.uuid for e in fresh.search(site="lumi")] == [ck.uuid]
    assert fresh.search(site="catalogue") == []
    # Renaming the catalogue's own site renames its copies too (stored as a token, not a name).
    ck.replicate("catalogue")
    fresh.name_catalogue_site("hq")
    assert [e.uuid for e in Catalogue(local_catalogue.url).search(site="hq")] == [ck.uuid]
    assert {loc.site for loc in Catalogue(local_catalogue.url).get(ck.uuid).locations()} == {"hq", "lumi"}


def test_a_file_registered_without_upload_is_replicated_from_the_original(local_catalogue, tmp_path):
    ckpt = write_ckpt(tmp_path / "run")
    ck = local_catalogue.register(ckpt.path, upload=False)
    assert ck.locations() == []
    with pytest.raises(NoReachableCopyError, match="registered without its file"):
        ck.download(tmp_path / "nothing.ckpt")
    local_catalogue.add_site("lumi", path=str(tmp_path / "lumi-fs"))
    result = ck.replicate("lumi")
    assert (result.method, result.source) == ("uploaded", "original file")
    ckpt.path.unlink()  # the original is gone: the site's copy is what is left
    assert sha(ck.download(tmp_path / "back.ckpt")) == ck.sha256


def test_an_interrupted_replication_resumes(tmp_path):
    # A catalogue in memory stands for a remote one: the copy into the folder is a
    # resumable download through <file>.part.
    catalogue = Catalogue.create(f"memory://sites-{_uuid.uuid4().hex}")
    ckpt = write_ckpt(tmp_path / "run", weights_bytes=3_000_000)
    ck = catalogue.register(ckpt.path)
    catalogue.add_site("lumi", path=str(tmp_path / "lumi-fs"))
    target = tmp_path / "lumi-fs" / ck.uuid / ckpt.path.name

    class Killed(BaseException):
        pass

    def kill(nbytes: int) -> None:
        raise Killed

    with pytest.raises(Killed):
        ck.replicate("lumi", progress=kill)
    part = target.with_name(target.name + ".part")
    assert part.exists() and not target.exists()
    assert [loc.site for loc in ck.locations()] == ["catalogue"]  # nothing recorded yet
    fetched: list[int] = []
    result = ck.replicate("lumi", progress=fetched.append)
    assert result.method == "streamed" and sha(target) == ck.sha256
    assert sum(fetched) < ck.size  # continued, not started again

    # A copy made but never recorded (killed just before) is recognised, not made again.
    catalogue.add_site("juwels", path=str(tmp_path / "juwels-fs"))
    made = tmp_path / "juwels-fs" / ck.uuid / ckpt.path.name
    made.parent.mkdir(parents=True)
    made.write_bytes(ckpt.path.read_bytes())
    assert ck.replicate("juwels").method == "found"


def test_card_show_and_table_list_locations(tmp_path, capsys):
    from anemoi_ckpt_nb.notebook.html import catalogue_table

    catalogue = Catalogue.create(tmp_path / "catalogue")
    ck = catalogue.register(write_ckpt(tmp_path / "run").path)
    catalogue.add_site("odd", path=str(tmp_path / "<x>&fs"))
    ck.replicate("odd")
    card = catalogue.get(ck.uuid)._repr_html_()
    assert "Locations (2)" in card and "&lt;x&gt;&amp;fs" in card and "<x>" not in card
    table = catalogue_table(catalogue.to_pandas())
    assert "catalogue, odd" in table
    code, out, _ = run_cli(capsys, "show", ck.uuid, "--catalogue", catalogue.url)
    assert code == 0 and "location" in out and "odd (filesystem)" in out
    code, out, _ = run_cli(capsys, "show", ck.uuid, "--json", "--catalogue", catalogue.url)
    assert [loc["site"] for loc in json.loads(out)["locations"]] == ["catalogue", "odd"]
    code, out, _ = run_cli(capsys, "ls", "--site", "odd", "--catalogue", catalogue.url)
    assert code == 0 and ck.uuid[:8] in out
    code, out, _ = run_cli(capsys, "ls", "--site", "nowhere", "--catalogue", catalogue.url)
    assert "match" in out and ck.uuid[:8] not in out


# --- two real S3 sites ------------------------------------------------------------------------------


def start_alone(start, monkeypatch):
    """Run ``start()`` without the first server's AWS_* credentials in the environment:
    ``weed`` would otherwise accept them as an identity of its own."""
    saved = {name: value for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if (value := os.environ.get(name))}
    for name in saved:
        monkeypatch.delenv(name)
    try:
        return start()
    finally:
        for name, value in saved.items():
            monkeypatch.setenv(name, value)


@pytest.fixture
def second_site(seaweed_factory, tmp_path, monkeypatch):
    """Another SeaweedFS server with its own credentials, reached through the AWS profile "leonardo"."""
    server = start_alone(lambda: seaweed_factory("leonardo", access_key="leonardo-key", secret_key="leonardo-secret"), monkeypatch)
    credentials = Path(tmp_path / "no-aws-credentials")  # the file conftest points boto3 at
    credentials.write_text(
        f"[leonardo]\naws_access_key_id = {server.access_key}\naws_secret_access_key = {server.secret_key}\n"
    )
    return server


@pytest.mark.s3
def test_two_s3_sites_and_a_shared_folder(s3_env, second_site, tmp_path, capsys, monkeypatch):
    """Replicate to both S3 sites and a folder; lose one site; fetch from another; verify; drop safely."""
    ecmwf = s3_env  # the endpoint of AWS_ENDPOINT_URL: the ordinary configuration reaches it
    prefix = f"t-{_uuid.uuid4().hex[:10]}"
    catalogue = Catalogue.create(tmp_path / "catalogue")
    url = catalogue.url
    ckpt = write_ckpt(tmp_path / "run", weights_bytes=400_000)
    ck = catalogue.register(ckpt.path)

    assert run_cli(capsys, "site", "add", "ecmwf", "--s3", f"s3://{ecmwf.bucket}/{prefix}/ecmwf", "--catalogue", url)[0] == 0
    assert run_cli(capsys, "site", "add", "ecmwf-tape", "--s3", f"s3://{ecmwf.bucket}/{prefix}/tape", "--catalogue", url)[0] == 0
    assert run_cli(
        capsys, "site", "add", "leonardo", "--s3", f"s3://{second_site.bucket}/{prefix}", "--endpoint-url", second_site.endpoint_url,
        "--profile", "leonardo", "--catalogue", url,
    )[0] == 0
    assert run_cli(capsys, "site", "add", "lumi", "--path", str(tmp_path / "lumi-fs"), "--catalogue", url)[0] == 0

    # Catalogue folder -> S3: an upload verified by sha256.
    code, out, _ = run_cli(capsys, "replicate", ck.uuid, "--to", "ecmwf", "--catalogue", url)
    assert code == 0 and ": uploaded from catalogue" in out
    # Same endpoint: the server copies; nothing passes through this machine.
    code, out, _ = run_cli(capsys, "replicate", ck.uuid, "--to", "ecmwf-tape", "--verify", "--catalogue", url)
    assert code == 0 and ": server-side-copy from ecmwf" in out
    # S3 -> another S3 endpoint (other credentials): streamed through a staging file.
    monkeypatch.setenv("ANEMOI_CKPT_SITE", "ecmwf")
    staging = tmp_path / "staging"
    code, out, _ = run_cli(capsys, "replicate", ck.uuid, "--to", "leonardo", "--staging", str(staging), "--catalogue", url)
    assert code == 0 and ": streamed from ecmwf" in out
    assert list(staging.iterdir()) == []  # the staging file is removed once uploaded
    # S3 -> folder: a resumable download straight into place.
    monkeypatch.setenv("ANEMOI_CKPT_SITE", "leonardo")
    code, out, _ = run_cli(capsys, "replicate", ck.uuid, "--to", "lumi", "--catalogue", url)
    assert code == 0 and ": streamed from leonardo" in out

    # The copies really are where the locations say, with the sha256 recorded.
    head = second_site.client().head_object(Bucket=second_site.bucket, Key=f"{prefix}/{ck.uuid}/{ckpt.path.name}")
    assert head["Metadata"]["sha256"] == ck.sha256
    import boto3
    import botocore.exceptions

    ordinary = boto3.client("s3", endpoint_url=second_site.endpoint_url)  # AWS_* of ecmwf from the environment
    with pytest.raises(botocore.exceptions.ClientError):  # they do not reach leonardo: the profile does
        ordinary.list_objects_v2(Bucket=second_site.bucket)
    assert {loc.site for loc in ck.locations()} == {"catalogue", "ecmwf", "ecmwf-tape", "leonardo", "lumi"}
    assert [e.uuid for e in catalogue.search(site="leonardo")] == [ck.uuid]

    code, out, _ = run_cli(capsys, "locations", ck.uuid, "--verify", "--catalogue", url)
    assert code == 0 and out.count(": ok:") == 5, out

    # Lose leonardo: this machine's site. Downloads fall back and say where from.
    catalogue.get(ck.uuid).drop_location("lumi", dry_run=False)
    ck.drop_location("catalogue", dry_run=False)
    second_site.stop()
    code, out, err = run_cli(capsys, "download", ck.uuid, str(tmp_path / "dl.ckpt"), "--catalogue", url)
    assert code == 0 and sha(tmp_path / "dl.ckpt") == ck.sha256
    assert "fetched from site ecmwf (s3://" in err and "skipped leonardo:" in err and "unreachable" in err
    code, out, _ = run_cli(capsys, "prefetch", ck.uuid, "--cache", str(tmp_path / "cache"), "--catalogue", url)
    assert code == 0 and "fetched from site ecmwf" in out
    entry = json.loads((tmp_path / "cache" / ck.uuid / "cache.json").read_text())
    assert entry["site"] == "ecmwf" and entry["source_url"].startswith(f"s3://{ecmwf.bucket}/{prefix}/ecmwf/")

    code, out, _ = run_cli(capsys, "locations", ck.uuid, "--verify", "--catalogue", url)
    assert code == 1 and "verify leonardo: UNREACHABLE" in out
    code, _, err = run_cli(capsys, "replicate", ck.uuid, "--to", "leonardo", "--catalogue", url)
    assert code == 2 and "unreachable" in err and second_site.endpoint_url in err and err.count("\n") == 1
    assert next(loc for loc in ck.locations() if loc.site == "leonardo").ok  # unreachable is not damaged

    # Dropping copies: allowed while a verified copy is confirmed present, never the last one.
    code, _, _ = run_cli(capsys, "clean", "--drop-location", "ecmwf-tape", ck.uuid, "--apply", "--catalogue", url)
    assert code == 0
    assert "Contents" not in ecmwf.client().list_objects_v2(Bucket=ecmwf.bucket, Prefix=f"{prefix}/tape/")
    code, _, err = run_cli(capsys, "clean", "--drop-location", "ecmwf", ck.uuid, "--apply", "--catalogue", url)
    assert code == 2 and "could be confirmed now" in err and "leonardo" in err  # leonardo is down
    start_alone(second_site.start, monkeypatch)
    code, _, _ = run_cli(capsys, "clean", "--drop-location", "ecmwf", ck.uuid, "--apply", "--catalogue", url)
    assert code == 0
    code, _, err = run_cli(capsys, "clean", "--drop-location", "leonardo", ck.uuid, "--apply", "--catalogue", url)
    assert code == 2 and "last verified copy" in err
    assert [loc.site for loc in ck.locations()] == ["leonardo"]
    assert sha(ck.download(tmp_path / "last.ckpt")) == ck.sha256


@pytest.mark.s3
def test_server_side_copy_in_parts(s3_url):
    """Objects above the single-copy limit (5 GiB on S3) are copied with UploadPartCopy."""
    from anemoi_ckpt_nb.storage import open_storage
    from anemoi_ckpt_nb.storage.copy import hash_object, same_s3_endpoint, server_side_copy

    source, dest = open_storage(s3_url + "/a"), open_storage(s3_url + "/b")
    data = bytes(range(256)) * (11 * 4096 + 7)  # a bit over 11 MiB: three 5 MiB parts
    digest = hashlib.sha256(data).hexdigest()
    source.put("blob", data)
    assert same_s3_endpoint(source, dest)
    copied: list[int] = []
    server_side_copy(source, "blob", dest, "copy", sha256=digest, size=len(data), max_single_copy=1, part_size=5 * 1024 * 1024, progress=copied.append)
    assert len(copied) == 3 and sum(copied) == len(data)
    assert hash_object(dest, "copy") == (digest, len(data))
    assert dest.get("copy")[0] == data
    with pytest.raises(Exception, match="record says"):
        server_side_copy(source, "blob", dest, "bad", sha256=digest, size=len(data) + 1)
    assert not dest.exists("bad")


def test_site_names_are_checked_against_the_current_catalogue_json(local_catalogue, tmp_path):
    # Two sessions opened the catalogue; each checks its change against catalogue.json as it is now,
    # not as it was when the session opened it.
    other = Catalogue(local_catalogue.url)
    local_catalogue.name_catalogue_site("ecmwf")
    with pytest.raises(SiteError, match="catalogue's own site"):
        other.add_site("ecmwf", path=str(tmp_path / "ecmwf-fs"))
    local_catalogue.add_site("lumi", path=str(tmp_path / "lumi-fs"))
    with pytest.raises(SiteError, match="already called 'lumi'"):
        other.name_catalogue_site("lumi")
    assert [row["name"] for row in local_catalogue.sites()] == ["ecmwf", "lumi"]


@pytest.mark.s3
def test_a_whole_staging_file_is_uploaded_without_fetching_it_again(s3_url, tmp_path):
    # In-memory catalogue -> S3 site: neither end is a local folder, so the bytes go through staging.
    catalogue = Catalogue.create(f"memory://sites-{_uuid.uuid4().hex}")
    ckpt = write_ckpt(tmp_path / "run", weights_bytes=300_000)
    ck = catalogue.register(ckpt.path)
    catalogue.add_site("s3site", s3=s3_url)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / ck.sha256).write_bytes(ckpt.path.read_bytes())  # left by a run whose upload failed
    moved: list[int] = []
    result = ck.replicate("s3site", staging=staging, progress=moved.append)
    assert result.method == "streamed" and result.source == "catalogue"
    assert sum(moved) == ck.size  # the upload only
    assert list(staging.iterdir()) == []
    (staging / ck.sha256).write_bytes(b"damaged")  # a damaged one is fetched again
    ck.drop_location("s3site", dry_run=False)
    moved.clear()
    assert ck.replicate("s3site", staging=staging, progress=moved.append).method == "streamed"
    assert sum(moved) == 2 * ck.size
