"""No lost update: 8 writers register and tag at once, then everything is counted.

Local folder and S3 run 8 real processes; the memory backend (one process by
design) runs 8 threads through the same code.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid as _uuid
from pathlib import Path

import pytest

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api import Catalogue
from anemoi_ckpt_nb.catalogue import layout

WRITERS = 8
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request, tmp_path) -> tuple[str, str]:
    if request.param == "memory":
        return "memory", f"memory://race-{_uuid.uuid4().hex}"
    if request.param == "local":
        return "local", str(tmp_path / "catalogue")
    return "s3", request.getfixturevalue("s3_url")


def test_eight_writers_lose_nothing(backend, tmp_path, monkeypatch):
    kind, url = backend
    from anemoi_ckpt_nb.catalogue import index

    monkeypatch.setattr(index, "COMPACT_EVERY", 3)  # writers also race on the index snapshot
    catalogue = Catalogue.create(url)
    target = examples.write_training_checkpoint(tmp_path / "target.ckpt", weights_bytes=8_000)
    catalogue.register(target.path)
    shared = examples.write_training_checkpoint(tmp_path / "shared.ckpt", weights_bytes=8_000, seed=7)
    own = [
        examples.write_training_checkpoint(tmp_path / f"own-{i}.ckpt", weights_bytes=8_000, seed=10 + i)
        for i in range(WRITERS)
    ]
    start = tmp_path / "go"
    names = [f"w{i}" for i in range(WRITERS)]
    argv = [[url, str(start), str(own[i].path), str(shared.path), target.uuid, names[i]] for i in range(WRITERS)]

    def all_ready(futures: list) -> None:
        """Wait until every writer waits for the start (a writer that failed already raises here)."""
        deadline = time.monotonic() + 240
        while not all((tmp_path / f"ready-{name}").exists() for name in names):
            for future in futures:
                if future.done():
                    future.result()
            assert time.monotonic() < deadline, "the writers never all became ready"
            time.sleep(0.01)

    if kind == "memory":
        from catalogue_worker import work

        results: list[dict] = []
        errors: list[BaseException] = []

        def run(args: list[str]) -> None:
            try:
                results.append(work(*args))
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(a,)) for a in argv]
        for t in threads:
            t.start()
        start.touch()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
    else:
        # Real processes from a fork server that imported torch and the package once,
        # so eight writers do not each pay seconds of imports before they race.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "anemoi_ckpt_nb.api", "anemoi_ckpt_nb.read.reader", "catalogue_worker"])
        from catalogue_worker import compact_often, work

        with ProcessPoolExecutor(max_workers=WRITERS, mp_context=context, initializer=compact_often) as pool:
            env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "ANEMOI_CKPT_"))}
            futures = [pool.submit(work, *a, env=env) for a in argv]
            # All eight running at once, each blocked until the start: eight processes. Started
            # before that, a fast writer could finish and take a slow worker's task (seen under load).
            all_ready(futures)
            start.touch()
            results = [f.result(timeout=300) for f in futures]
        assert len({r["pid"] for r in results}) == WRITERS  # eight distinct processes

    assert sorted(r["name"] for r in results) == names
    assert sum(r["created_shared"] for r in results) == 1  # create-only: exactly one writer created it

    # Count everything from a fresh reader.
    fresh = Catalogue(url)
    records = {layout.uuid_of_key(info.key) for info in fresh.store.storage.list(layout.RECORDS)}
    expected = {target.uuid, shared.uuid, *(c.uuid for c in own)}
    assert records == expected
    assert {c.uuid for c in fresh.search()} == expected
    state = fresh.get(target.uuid)
    assert state.tags == sorted([*names, "common"])
    history = state.tag_history()
    assert sorted(e.tag for e in history if e.action == "add" and e.tag in names) == names
    assert [e.tag for e in history if e.tag == "common"] == ["common"]  # added once, then already there
    assert sorted(e.tag for e in history if e.action == "remove") == sorted(f"tmp-{n}" for n in names)
    assert len(history) == WRITERS * 3 + 1
    for i, name in enumerate(names):
        assert {c.uuid for c in fresh.search(tags=[name])} == {own[i].uuid, target.uuid}
    assert fresh.search(tags=["tmp-w0"]) == []
    # The index settles on the same answer once every delta is merged.
    index.compact(fresh.store.storage)
    assert {c.uuid for c in Catalogue(url).search(tags=["common"])} == {target.uuid}
    assert len(Catalogue(url)) == len(expected)
