"""One of the concurrent writers of tests/test_catalogue_concurrency.py.

The test calls :func:`work` in 8 processes (or threads for the memory
backend); as a script: ``python catalogue_worker.py URL START_FILE OWN SHARED_FILE SHARED_UUID NAME``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def compact_often() -> None:
    """Process initializer: compact every 3 deltas, so writers also race on the snapshot."""
    from anemoi_ckpt_nb.catalogue import index

    index.COMPACT_EVERY = 3


def work(
    url: str, start: str, own: str, shared_file: str, shared_uuid: str, name: str, env: dict | None = None
) -> dict:
    from anemoi_ckpt_nb.api import Catalogue

    # A fork server keeps the environment it started with: take the test's (AWS endpoint, keys).
    os.environ.update(env or {})

    catalogue = Catalogue(url)
    # Ready, and waiting: the test starts everyone once all are (so each holds its own process).
    Path(start).with_name(f"ready-{name}").touch()
    deadline = time.monotonic() + 240
    while not Path(start).exists():  # all writers start together
        if time.monotonic() > deadline:
            raise SystemExit("start file never appeared")
        time.sleep(0.005)
    mine = catalogue.register(own, tags=[name])
    from anemoi_ckpt_nb.catalogue.register import register_paths

    (same,) = register_paths(catalogue.store, [shared_file])  # everyone registers this very file at once
    catalogue.tag(shared_uuid, name, "common")
    catalogue.tag(shared_uuid, f"tmp-{name}")
    catalogue.untag(shared_uuid, f"tmp-{name}")
    return {"name": name, "own": mine.uuid, "created_shared": same.created, "pid": os.getpid()}


if __name__ == "__main__":
    compact_often()
    print(json.dumps(work(*sys.argv[1:7])))
