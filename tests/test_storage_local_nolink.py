"""Create-only writes on a folder whose filesystem refuses hard links.

Each create-only method of :class:`LocalStorage` (``link``, ``renameat2``, ``lock``)
is forced in turn through ``create_only_methods`` and exercised for real: success,
conflict, no leftover temporaries, and races between threads and between processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from anemoi_ckpt_nb.errors import ConflictError, StorageError, StorageURLError
from anemoi_ckpt_nb.storage import createonly, open_storage
from anemoi_ckpt_nb.storage.local import CREATE_ONLY_METHODS, LocalStorage

METHODS = list(CREATE_ONLY_METHODS)
RACE_KEYS = [f"records/{i:02d}.json" for i in range(25)]
RACE_PROCESSES = 4


@pytest.fixture(autouse=True)
def _fresh_refusals(monkeypatch):
    """Refusals are remembered per process and device: start each test with none."""
    monkeypatch.setattr(createonly, "_REFUSED", {})


def _temporaries(root: Path) -> list[str]:
    return [
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.startswith(".tmp.")
    ]


# --- each method on its own --------------------------------------------------------


def test_every_method_is_tested():
    assert set(METHODS) == {"link", "renameat2", "lock"}


@pytest.mark.parametrize("method", METHODS)
def test_create_only_succeeds_then_conflicts(method, tmp_path):
    store = LocalStorage(tmp_path / "store", create_only_methods=(method,))
    etag = store.put("a/b.json", b"first", if_absent=True)
    assert store.get("a/b.json") == (b"first", etag)

    with pytest.raises(ConflictError, match="already exists") as info:
        store.put("a/b.json", b"second", if_absent=True)
    assert info.value.key == "a/b.json"
    assert store.get("a/b.json") == (b"first", etag)  # the loser changed nothing
    assert store.stat("a/b.json").etag == etag  # the hash cache went with the file
    assert _temporaries(tmp_path / "store") == []

    # The other writes still work on top of an object created this way.
    new = store.replace("a/b.json", b"third", etag=etag)
    assert store.get("a/b.json") == (b"third", new)
    assert [info.key for info in store.list()] == ["a/b.json"]


@pytest.mark.parametrize("method", METHODS)
def test_create_only_after_delete_and_over_plain_put(method, tmp_path):
    store = LocalStorage(tmp_path / "store", create_only_methods=(method,))
    store.put("k", b"plain")  # an ordinary overwrite made it
    with pytest.raises(ConflictError):
        store.put("k", b"again", if_absent=True)
    store.delete("k")
    store.put("k", b"created", if_absent=True)
    assert store.get("k")[0] == b"created"
    assert _temporaries(tmp_path / "store") == []


@pytest.mark.parametrize("method", METHODS)
def test_threads_race_exactly_one_wins(method, tmp_path):
    store = LocalStorage(tmp_path / "store", create_only_methods=(method,))
    threads, keys = 8, RACE_KEYS
    # The timeout only turns a crashed thread into a failure instead of a hang.
    barrier = threading.Barrier(threads, timeout=60)

    def contend(i: int) -> list[str]:
        won = []
        for key in keys:
            barrier.wait()  # all threads go for each key together
            try:
                store.put(key, f"{i}:{key}".encode(), if_absent=True)
                won.append(key)
            except ConflictError:
                pass
            except BaseException:
                barrier.abort()  # release the others at once
                raise
        return won

    with ThreadPoolExecutor(threads) as pool:  # .result() re-raises a thread's error
        wins = [f.result() for f in [pool.submit(contend, i) for i in range(threads)]]
    _assert_one_winner_each(store, keys, wins)
    assert _temporaries(tmp_path / "store") == []


def _assert_one_winner_each(store: LocalStorage, keys: list[str], wins: list[list[str]]) -> None:
    for key in keys:
        winners = [i for i, won in enumerate(wins) if key in won]
        assert len(winners) == 1, f"{key}: winners {winners}"
        assert store.get(key)[0] == f"{winners[0]}:{key}".encode()


def _race_worker(roots: dict[str, str], out: str, index: int, barrier) -> None:
    """One competing process: for each method in turn, try to create every key."""
    wins = {}
    for method, root in roots.items():
        store = LocalStorage(root, create_only_methods=(method,))
        wins[method] = []
        for key in RACE_KEYS:
            barrier.wait()  # all processes go for each key together
            try:
                store.put(key, f"{index}:{key}".encode(), if_absent=True)
                wins[method].append(key)
            except ConflictError:
                pass
    Path(out, f"{index}.json").write_text(json.dumps(wins))


@pytest.fixture(scope="module")
def process_race(tmp_path_factory) -> tuple[dict[str, str], list[dict[str, list[str]]]]:
    """Run the process race once for all methods (spawning is the slow part)."""
    base = tmp_path_factory.mktemp("race")
    roots = {method: str(base / method) for method in METHODS}
    out = base / "results"
    out.mkdir()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACE_PROCESSES, timeout=60)  # a crash fails, not hangs
    processes = [
        context.Process(target=_race_worker, args=(roots, str(out), i, barrier))
        for i in range(RACE_PROCESSES)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    assert [p.exitcode for p in processes] == [0] * RACE_PROCESSES
    results = [json.loads((out / f"{i}.json").read_text()) for i in range(RACE_PROCESSES)]
    return roots, results


@pytest.mark.parametrize("method", METHODS)
def test_processes_race_exactly_one_wins(method, process_race):
    roots, results = process_race
    store = LocalStorage(roots[method])
    _assert_one_winner_each(store, RACE_KEYS, [r[method] for r in results])
    assert _temporaries(Path(roots[method])) == []


# --- choosing methods --------------------------------------------------------------


def test_methods_reach_the_backend_through_open_storage(tmp_path):
    store = open_storage(tmp_path / "store", create_only_methods=["lock"])
    assert store.create_only_methods == ("lock",)
    assert LocalStorage(tmp_path / "other").create_only_methods == CREATE_ONLY_METHODS


@pytest.mark.parametrize("methods", [("link", "hardlink"), ()])
def test_unknown_or_no_method_is_refused(methods, tmp_path):
    with pytest.raises(StorageURLError, match="create-only method") as info:
        LocalStorage(tmp_path / "store", create_only_methods=methods)
    assert "link, renameat2, lock" in str(info.value)


# --- a real refusal of os.link ------------------------------------------------------


@pytest.fixture
def other_device_file(tmp_path) -> Iterator[Path]:
    """A file on another filesystem than ``tmp_path`` (tmpfs /dev/shm), so that a hard
    link from it into ``tmp_path`` fails for real with EXDEV."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm to link across filesystems from")
    tmp_path.mkdir(exist_ok=True)
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm and tmp_path are on one filesystem here")
    fd, name = tempfile.mkstemp(prefix="nolink-", dir=shm)
    os.write(fd, b"from another filesystem")
    os.close(fd)
    yield Path(name)
    Path(name).unlink(missing_ok=True)


def test_real_link_refusal_is_reported_then_remembered(tmp_path, other_device_file):
    """os.link really fails (EXDEV); put() cannot make that happen, because it always
    writes its temporary next to the target, so this calls the create-only step that
    put() uses with a temporary on another filesystem."""
    root = tmp_path / "store"
    root.mkdir()
    only_link = LocalStorage(root, create_only_methods=("link",))

    with pytest.raises(StorageError) as info:
        only_link._create_only("k", other_device_file, root / "k")
    assert not isinstance(info.value, ConflictError)
    message = str(info.value)
    assert str(root) in message and "EXDEV" in message and "hard link refused" in message
    assert info.value.hint and "s3://" in info.value.hint
    assert not (root / "k").exists()

    # Remembered for this filesystem: a put whose link would now work is not retried...
    with pytest.raises(StorageError, match="EXDEV"):
        only_link.put("k2", b"data", if_absent=True)
    assert list(root.iterdir()) == []  # ...and leaves no temporary behind

    # ...while the default order falls through to renameat2 and keeps its guarantees.
    store = LocalStorage(root)
    etag = store.put("k2", b"data", if_absent=True)
    with pytest.raises(ConflictError):
        store.put("k2", b"other", if_absent=True)
    assert store.get("k2") == (b"data", etag)
    assert _temporaries(root) == []


def test_a_refusal_is_not_mistaken_for_a_conflict(tmp_path, other_device_file):
    """With the name free and links refused for real, the create-only step must not
    claim the key exists (which would make a catalogue think it lost a race)."""
    root = tmp_path / "store"
    root.mkdir()
    store = LocalStorage(root, create_only_methods=("link",))
    with pytest.raises(StorageError) as info:
        store._create_only("free", other_device_file, root / "free")
    assert type(info.value) is StorageError


# --- end to end: a catalogue on a filesystem without hard links -------------------


@pytest.mark.parametrize("method", ["renameat2", "lock"])
def test_catalogue_create_and_register_without_links(method, tmp_path, fresh_training_checkpoint):
    from anemoi_ckpt_nb.api import Catalogue
    from anemoi_ckpt_nb.errors import CatalogueError

    storage = LocalStorage(tmp_path / "catalogue", create_only_methods=(method,))
    catalogue = Catalogue.create(storage)
    checkpoint = catalogue.register(fresh_training_checkpoint.path)
    assert checkpoint.uuid == fresh_training_checkpoint.uuid
    with pytest.raises(CatalogueError):
        Catalogue.create(LocalStorage(tmp_path / "catalogue", create_only_methods=(method,)))
    assert _temporaries(tmp_path / "catalogue") == []
