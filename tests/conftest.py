"""Shared fixtures. Each area adds its own below its heading; keep them small."""

from __future__ import annotations

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
    monkeypatch.delenv("ANEMOI_CKPT_OFFLINE", raising=False)
    monkeypatch.delenv("ANEMOI_CKPT_SITE", raising=False)


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
