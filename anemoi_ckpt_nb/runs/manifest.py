"""The run manifest of a fork or resume: what it records, where it is kept, storing and reading it.

A **run manifest** says how a training run starts from a registered
checkpoint, so that the run can be reproduced and its checkpoints linked back:
the new (fork) or continued (resume) run id, the parent's uuid and relation,
the cached file's path and sha256, the code versions of the checkpoint and of
the environment, any drift that was allowed, and the configuration overrides.
It is stored create-only in the catalogue under ``manifests/<uuid>.json`` and
beside the cached checkpoint under ``<cache>/<parent uuid>/runs/<uuid>.json``;
it links to the checkpoint by uuid only.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from anemoi_ckpt_nb.catalogue.schema import ParentLink
from anemoi_ckpt_nb.compat.environment import CheckpointCode, EnvironmentSnapshot
from anemoi_ckpt_nb.errors import ObjectNotFoundError, SchemaError
from anemoi_ckpt_nb.runs import cache as run_cache
from anemoi_ckpt_nb.runs.drift import Difference, Mode

MANIFESTS = "manifests/"
MANIFEST_VERSION = 1

Layout = Literal["system", "hardware"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class CachedFile(_Model):
    """The parent checkpoint as the run reads it: a verified file in the cache."""

    path: str
    filename: str
    sha256: str
    size: int


class TrainingLaunch(_Model):
    """How anemoi-training is told to start from the checkpoint."""

    layout: Layout
    #: Why this layout: the anemoi-training version seen, or an explicit choice.
    layout_reason: str
    overrides: list[str]
    load_weights_only: bool
    #: ``hardware`` layout only: where the cached file is linked before training.
    stage_link: str | None = None


class RunManifest(_Model):
    """One fork or resume of a registered checkpoint (see the module docstring)."""

    schema_version: int = MANIFEST_VERSION
    uuid: str
    mode: Mode
    #: The new (fork) or continued (resume) run id; None when anemoi-training
    #: assigns it (a fork with the ``hardware`` layout).
    run_id: str | None
    parent: ParentLink
    parent_run_id: str | None = None
    parent_name: str | None = None
    checkpoint: CachedFile
    checkpoint_code: CheckpointCode
    environment: EnvironmentSnapshot
    drift: list[Difference] = Field(default_factory=list)
    drift_allowed: bool = False
    require_clean: bool = False
    training: TrainingLaunch
    catalogue: str
    created_at: dt.datetime
    created_by: str
    #: Where the local copy of this manifest was written (on the machine that planned it).
    local_path: str | None = None

    @property
    def overrides(self) -> list[str]:
        return list(self.training.overrides)

    @property
    def cache_dir(self) -> Path:
        """The cache folder of the plan (the checkpoint is ``<cache>/<parent uuid>/<file>``)."""
        return Path(self.checkpoint.path).parent.parent


def manifest_key(uuid: str) -> str:
    """Key of a run manifest in the catalogue."""
    return f"{MANIFESTS}{uuid}.json"


def local_manifest_path(cache: str | Path, parent_uuid: str, manifest_uuid: str) -> Path:
    """Where a run manifest is kept beside the cached checkpoint."""
    return run_cache.entry_dir(cache, parent_uuid) / run_cache.RUNS / f"{manifest_uuid}.json"


def _dump(manifest: RunManifest) -> bytes:
    return manifest.model_dump_json(indent=2).encode() + b"\n"


def record_manifest(storage: Any, manifest: RunManifest, *, cache: str | Path) -> Path:
    """Store a manifest create-only in the catalogue and beside the cached checkpoint.

    Args:
        storage: The catalogue's storage.
        manifest: From :func:`plan_run`; its ``local_path`` is set here.
        cache: The cache folder of the plan.

    Returns:
        The local manifest file.

    Raises:
        ConflictError: a manifest with this uuid is already stored (never for a fresh plan).
        OfflineError, StorageError: the catalogue cannot be written.
    """
    path = local_manifest_path(cache, manifest.parent.uuid, manifest.uuid)
    manifest.local_path = str(path)
    data = _dump(manifest)
    # Catalogue first: a manifest only exists locally once it is recorded centrally.
    storage.put(manifest_key(manifest.uuid), data, if_absent=True)
    run_cache.write_atomically(path, data)
    return path


def _parse(data: bytes, where: str) -> RunManifest:
    try:
        manifest = RunManifest.model_validate_json(data)
    except ValueError as exc:
        raise SchemaError(f"{where}: not a run manifest ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if manifest.schema_version > MANIFEST_VERSION:
        raise SchemaError(
            f"{where}: run manifest schema_version {manifest.schema_version} is newer than this release reads",
            hint="pip install -U anemoi-ckpt-nb",
        )
    return manifest


def load_manifest(path: str | Path) -> RunManifest:
    """Read a local run manifest. Reads only the file.

    Raises:
        CacheError: the file does not exist.
        SchemaError: it is not a run manifest this release reads.
    """
    from anemoi_ckpt_nb.errors import CacheError

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CacheError(path, "no run manifest here", hint="create it with `anemoi-ckpt plan`, `fork` or `resume`") from None
    return _parse(data, str(path))


def get_manifest(storage: Any, uuid: str) -> RunManifest:
    """Read a run manifest from the catalogue.

    Raises:
        ObjectNotFoundError: no manifest with this uuid.
    """
    data, _ = storage.get(manifest_key(uuid))
    return _parse(data, f"{storage.url.rstrip('/')}/{manifest_key(uuid)}")


def list_manifests(storage: Any, *, parent_uuid: str | None = None) -> list[RunManifest]:
    """Every run manifest in the catalogue, oldest first, optionally of one parent checkpoint."""
    found = []
    for info in storage.list(MANIFESTS):
        try:
            manifest = get_manifest(storage, info.key[len(MANIFESTS):].removesuffix(".json"))
        except (ObjectNotFoundError, SchemaError):
            continue
        if parent_uuid is None or manifest.parent.uuid == parent_uuid:
            found.append(manifest)
    return sorted(found, key=lambda m: m.created_at)
