"""Fork and resume on HPC, against the real S3 server: prefetch online, train offline.

The compute-node step runs with the S3 server shut down, ``ANEMOI_CKPT_OFFLINE=1``
and an audit hook (``sitecustomize``) that refuses and logs every socket
connection or name lookup in any Python process of the step, so a connection
attempt cannot go unnoticed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.cli import main
from anemoi_ckpt_nb.runs import cache as run_cache
from anemoi_ckpt_nb.runs import plans as runs
from anemoi_ckpt_nb.errors import OfflineError, StorageError

pytestmark = pytest.mark.s3

FAKE_TRAINING = Path(__file__).with_name("runs_fake_training.py")

NO_NETWORK = '''
import os, sys

_LOG = os.environ["ANEMOI_TEST_NETWORK_LOG"]


def _refuse(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
        with open(_LOG, "a") as log:
            log.write(f"{os.getpid()} {event} {args[1:] if event == 'socket.connect' else args}\\n")
        raise OSError(f"network use refused in the offline step: {event}")


sys.addaudithook(_refuse)
'''


def train_command(output: Path) -> str:
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_TRAINING))} --output {shlex.quote(str(output))}"


def no_network_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment of the offline step: offline mode and the audit hook in every Python started."""
    hook = tmp_path / "no-network"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_NETWORK)
    log = tmp_path / "network.log"
    environ = {
        **os.environ,
        "ANEMOI_CKPT_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        "ANEMOI_TEST_NETWORK_LOG": str(log),
    }
    return environ, log


def test_fork_on_a_site_whose_compute_nodes_are_offline(seaweed_factory, monkeypatch, tmp_path):
    server = seaweed_factory("site")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    url = f"s3://{server.bucket}/catalogue"
    catalogue = Catalogue.create(url)
    base = examples.write_run(tmp_path / "runs", checkpoints=2, weights_bytes=80_000)
    catalogue.register_run(tmp_path / "runs")
    parent = base[0]

    # Login node: plan (manifest stored in the catalogue) and run step 1.
    cache, out, script = tmp_path / "scratch" / "cache", tmp_path / "scratch" / "out", tmp_path / "fork.sh"
    assert main(["plan", parent.uuid, "--fork", "--catalogue", url, "--cache", str(cache), "-o", str(script),
                 "--layout", "system", "--train-command", train_command(out)]) == 0
    (manifest,) = runs.list_manifests(catalogue.store.storage)
    done = subprocess.run(["bash", str(script), "prefetch"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert run_cache.read_entry(cache, parent.uuid).sha256 == manifest.checkpoint.sha256

    # Compute node: the site is gone and the network forbidden.
    server.stop()
    monkeypatch.delenv("ANEMOI_CKPT_OFFLINE", raising=False)
    with pytest.raises(StorageError):  # the endpoint really is down
        Catalogue(url)
    monkeypatch.setenv("ANEMOI_CKPT_OFFLINE", "1")
    with pytest.raises(OfflineError, match="ANEMOI_CKPT_OFFLINE=1"):
        Catalogue(url)
    with pytest.raises(OfflineError):
        catalogue.get(parent.uuid).prefetch(cache=tmp_path / "elsewhere")
    storage = catalogue.store.storage  # opened while online
    for attempt in (
        lambda: storage.get(runs.manifest_key(manifest.uuid)),
        lambda: storage.stat("catalogue.json"),
        lambda: list(storage.list("records/")),
        lambda: storage.put("manifests/x.json", b"{}", if_absent=True),
        lambda: storage.download_file(f"blobs/sha256/{manifest.checkpoint.sha256}", tmp_path / "x", sha256=manifest.checkpoint.sha256),
    ):
        with pytest.raises(OfflineError):
            attempt()
    environ, log = no_network_env(tmp_path)
    done = subprocess.run(["bash", str(script), "train"], env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not log.exists(), log.read_text()
    assert "sha256" in done.stdout and "verified" in done.stdout
    report = json.loads((out / "standin.json").read_text())
    assert report["offline"] == "1" and report["started_from_uuid"] == parent.uuid
    assert report["parent_uuid"] is None  # a weights-only fork: linked by the manifest's run id
    assert report["run_id"] == manifest.run_id and report["started_from"] == manifest.checkpoint.path

    # Back online: register the new run's checkpoints; the lineage shows the fork.
    monkeypatch.delenv("ANEMOI_CKPT_OFFLINE")
    server.start()
    catalogue = Catalogue(url)
    new = catalogue.register_run(out / manifest.run_id)
    assert len(new) == 2 and all(c.run_id == manifest.run_id for c in new)
    assert all([(p.uuid, p.relation) for p in c.parents] == [(parent.uuid, "forked-from")] for c in new)
    # The fork's second save continues from its first, which came from the parent.
    assert [a.uuid for a in new[-1].ancestors()][:2] == [new[0].uuid, parent.uuid]
    assert {c.uuid for c in catalogue.get(parent.uuid).descendants()} >= {c.uuid for c in new}
    assert new[0].uuid[:8] in catalogue.lineage_text(parent.uuid)
    assert runs.get_manifest(catalogue.store.storage, manifest.uuid).run_id == new[0].run_id


def test_resume_with_the_hardware_layout_of_older_anemoi_training(s3_url, tmp_path):
    catalogue = Catalogue.create(s3_url)
    base = examples.write_run(tmp_path / "runs", checkpoints=2, weights_bytes=80_000)
    catalogue.register_run(tmp_path / "runs")
    parent = base[-1]
    cache, out, script = tmp_path / "cache", tmp_path / "checkpoints", tmp_path / "resume.sh"
    assert main(["plan", parent.uuid, "--resume", "--catalogue", s3_url, "--cache", str(cache), "-o", str(script),
                 "--layout", "hardware", "--checkpoints-dir", str(out), "--train-command", train_command(out)]) == 0

    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)  # both steps, no SLURM
    assert done.returncode == 0, done.stdout + done.stderr
    link = out / parent.run_id / parent.path.name
    assert link.is_symlink() and link.resolve() == (cache / parent.uuid / parent.path.name).resolve()
    report = json.loads((out / "standin.json").read_text())
    assert report["relation"] == "resume" and report["started_from"] == str(link)

    resumed = catalogue.register_many(report["paths"])
    assert [c.epoch for c in resumed] == [parent.epoch + 1, parent.epoch + 2]
    assert all(c.run_id == parent.run_id for c in resumed)
    assert [(p.uuid, p.relation) for p in resumed[0].parents] == [(parent.uuid, "resumed-from")]
    assert [a.uuid for a in resumed[-1].ancestors()][:2] == [resumed[0].uuid, parent.uuid]


def test_a_prefetch_killed_midway_resumes_where_it_stopped(s3_url, tmp_path):
    from anemoi_ckpt_nb.storage.s3 import S3Storage

    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    # 5 MiB ranges (the smallest) and a ~9 MB file: the download comes in two pieces.
    catalogue = Catalogue.create(s3_url)
    written = examples.write_training_checkpoint(tmp_path / "big.ckpt", weights_bytes=3_500_000)
    catalogue.register(written.path)
    small_parts = Catalogue(storage=S3Storage(bucket, prefix, part_size=5 * 1024 * 1024, max_concurrency=1))
    checkpoint = small_parts.get(written.uuid)
    size = checkpoint.size
    assert size > 5 * 1024 * 1024

    class Killed(Exception):
        pass

    def kill_after_first_piece(n: int) -> None:
        raise Killed(n)

    with pytest.raises(Killed) as info:
        checkpoint.prefetch(cache=tmp_path / "cache", progress=kill_after_first_piece)
    first = info.value.args[0]
    dest = tmp_path / "cache" / written.uuid / written.path.name
    part = dest.with_name(dest.name + ".part")
    assert not dest.exists() and part.stat().st_size == first < size

    fetched: list[int] = []
    entry = checkpoint.prefetch(cache=tmp_path / "cache", progress=fetched.append)
    assert sum(fetched) == size - first
    assert dest.read_bytes() == written.path.read_bytes() and entry.sha256 == checkpoint.sha256
