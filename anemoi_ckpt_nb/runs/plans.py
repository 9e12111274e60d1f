"""Fork and resume plans: run manifests and the anemoi-training overrides that start a run.

A **run manifest** says how a training run starts from a registered
checkpoint, so that the run can be reproduced and its checkpoints linked back:
the new (fork) or continued (resume) run id, the parent's uuid and relation,
the cached file's path and sha256, the code versions of the checkpoint and of
the environment, any drift that was allowed, and the configuration overrides.
It is stored create-only in the catalogue under ``manifests/<uuid>.json`` and
beside the cached checkpoint under ``<cache>/<parent uuid>/runs/<uuid>.json``;
it links to the checkpoint by uuid only.

The overrides follow anemoi-training's own names. From anemoi-training 0.8
(the ``system`` config schema)::

    resume: training.run_id=<run> training.fork_run_id=null system.input.warm_start=<file>
            training.load_weights_only=false
    fork:   training.run_id=<new run> training.fork_run_id=<parent run>
            system.input.warm_start=<file> training.load_weights_only=true

Before 0.8 (the ``hardware`` config) the checkpoint is found at
``<hardware.paths.checkpoints>/<fork_run_id or run_id>/<hardware.files.warm_start>``,
so the training step links the cached file there first, and a fork's new run
id is chosen by anemoi-training (or MLflow), not by us::

    resume: training.run_id=<run> hardware.paths.checkpoints=<dir> hardware.files.warm_start=<name>
            training.load_weights_only=false
    fork:   training.fork_run_id=<parent run> hardware.paths.checkpoints=<dir>
            hardware.files.warm_start=<name> training.load_weights_only=true

A resume and a fork that loads the whole state (``load_weights_only=false``)
make anemoi-training record the loaded checkpoint's uuid as ``parent_uuid``
in every checkpoint the run saves. A weights-only fork records none: its
checkpoints are linked to their parent by the new run id this manifest names
(:mod:`anemoi_ckpt_nb.catalogue.register`). A resume overwrites
``last.ckpt`` in the run folder, so :func:`start_run` first makes sure the
catalogue holds a copy of the checkpoint resumed from.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid as _uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from anemoi_ckpt_nb.runs import cache as run_cache
from anemoi_ckpt_nb.compat.environment import CheckpointCode, EnvironmentSnapshot, capture_environment, checkpoint_code, parse_version
from anemoi_ckpt_nb.runs.drift import Difference, DriftReport, Mode, compare_environment, enforce
from anemoi_ckpt_nb.errors import ObjectNotFoundError, RunPlanError, SchemaError
from anemoi_ckpt_nb.catalogue.schema import ParentLink

MANIFESTS = "manifests/"
MANIFEST_VERSION = 1

Layout = Literal["system", "hardware"]
#: The anemoi-training release that moved ``hardware.*`` to ``system.*``.
SYSTEM_LAYOUT_SINCE = (0, 8, 0)

RELATION: dict[str, str] = {"fork": "forked-from", "resume": "resumed-from"}


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


# --- overrides -----------------------------------------------------------------------

_HYDRA_SAFE = re.compile(r"^[\w./:@+-]+$", re.ASCII)
#: Unquoted, Hydra reads these as booleans or null (any case); numbers are caught by ``float``.
_HYDRA_KEYWORDS = frozenset({"true", "false", "null"})


def _hydra_typed(text: str) -> bool:
    """Whether Hydra would read ``text``, unquoted, as something other than a string."""
    if text.lower() in _HYDRA_KEYWORDS:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def hydra_value(value: object) -> str:
    """A value as a Hydra command-line override reads it back exactly.

    Strings that Hydra would misparse (special or non-ASCII characters) or
    read as another type (``42``, ``1e5``, ``true``) are single-quoted. In a
    quoted value Hydra treats a backslash as an escape only before a quote,
    and OmegaConf only before ``${`` (which it would otherwise resolve), so
    only those backslashes are doubled.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _HYDRA_SAFE.match(text) and (isinstance(value, (int, float)) or not _hydra_typed(text)):
        return text
    text = re.sub(r"(\\*)(\$\{)", lambda m: m[1] * 2 + "\\" + m[2], text)
    text = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m[1] * 2, text)
    return f"'{text}'"


def choose_layout(environment: EnvironmentSnapshot, layout: Layout | None = None) -> tuple[Layout, str]:
    """Which anemoi-training configuration layout the overrides use, and why.

    Args:
        environment: The run's environment (its anemoi-training version decides).
        layout: An explicit choice, which wins.

    Returns:
        ``(layout, reason)``.
    """
    if layout is not None:
        if layout not in ("system", "hardware"):
            raise RunPlanError(
                "layout", f"unknown configuration layout {layout!r}",
                hint="use 'system' (anemoi-training >= 0.8) or 'hardware'",
            )
        return layout, "chosen explicitly"
    version = environment.packages.get("anemoi.training")
    parsed = parse_version(version)
    if parsed is None:
        return "system", "anemoi-training is not installed here; assuming >= 0.8 (system.* configuration)"
    if parsed < SYSTEM_LAYOUT_SINCE:
        return "hardware", f"anemoi-training {version} < 0.8 reads hardware.paths/hardware.files"
    return "system", f"anemoi-training {version} >= 0.8 reads system.input"


def training_overrides(
    *,
    mode: Mode,
    layout: Layout,
    run_id: str | None,
    parent_run_id: str | None,
    checkpoint: Path,
    load_weights_only: bool,
    checkpoints_dir: Path | None = None,
) -> tuple[list[str], Path | None]:
    """The anemoi-training overrides that start the run (see the module docstring).

    Returns:
        ``(overrides, stage_link)``: ``stage_link`` is where the ``hardware``
        layout expects the checkpoint (None for ``system``).
    """
    head: list[str] = []
    if mode == "resume":
        head = [f"training.run_id={hydra_value(run_id)}", "training.fork_run_id=null"]
    elif layout == "system":
        head = [f"training.run_id={hydra_value(run_id)}"]
        if parent_run_id:
            head.append(f"training.fork_run_id={hydra_value(parent_run_id)}")
    else:
        head = [f"training.fork_run_id={hydra_value(parent_run_id)}"]
    weights = f"training.load_weights_only={hydra_value(load_weights_only)}"
    if layout == "system":
        return [*head, f"system.input.warm_start={hydra_value(str(checkpoint))}", weights], None
    assert checkpoints_dir is not None
    folder = str(parent_run_id if mode == "fork" else run_id)
    # The run id comes from someone else's checkpoint: it must name one folder, not a path.
    if not folder or folder in (".", "..") or "/" in folder or "\x00" in folder:
        raise RunPlanError(folder, "this run id cannot be a folder name under the checkpoints folder",
                           hint="use the 'system' layout (anemoi-training >= 0.8), which needs no link")
    link = checkpoints_dir / folder / checkpoint.name
    return [
        *head,
        f"hardware.paths.checkpoints={hydra_value(str(checkpoints_dir))}",
        f"hardware.files.warm_start={hydra_value(checkpoint.name)}",
        weights,
    ], link


# --- planning ----------------------------------------------------------------------------


def _provenance(storage: Any, record: Any) -> Any:
    """The checkpoint's full ``provenance_training`` from its metadata blob, else the record's summary."""
    if getattr(record, "metadata_blob", None):
        import json

        try:
            data, _ = storage.get(record.metadata_blob)
            provenance = json.loads(data).get("provenance_training")
            if isinstance(provenance, dict):
                return provenance
        except (ObjectNotFoundError, ValueError):
            pass
    return getattr(record, "code", None)


def plan_run(
    storage: Any,
    record: Any,
    *,
    mode: Mode,
    cache: str | Path,
    environment: EnvironmentSnapshot | None = None,
    code_path: str | Path | None = None,
    allow_drift: bool = False,
    require_clean: bool = False,
    layout: Layout | None = None,
    run_id: str | None = None,
    load_weights_only: bool | None = None,
    checkpoints_dir: str | Path | None = None,
) -> RunManifest:
    """Plan a fork or resume of a registered checkpoint: check code versions, build the manifest.

    Nothing is written; see :func:`record_manifest`. The checkpoint need not be
    in the cache yet: the manifest names where it will be and what it must hash to.

    Args:
        storage: The catalogue's storage (to read the checkpoint's metadata).
        record: The parent's :class:`~anemoi_ckpt_nb.catalogue.schema.CheckpointRecord`.
        mode: ``"fork"`` (new run from the weights) or ``"resume"`` (continue the run).
        cache: The cache folder the training step reads from.
        environment: The environment the run uses; captured here when not given.
        code_path: A git checkout of the training code, captured with the environment.
        allow_drift: Go ahead despite blocking differences, recording them.
        require_clean: Uncommitted changes in ``code_path`` are blocking.
        layout: ``"system"`` or ``"hardware"``; default from the anemoi-training version.
        run_id: The fork's new run id (default: a fresh uuid4); ignored for a resume.
        load_weights_only: For a fork, load only the weights (default True);
            a resume always restores the optimizer and loops.
        checkpoints_dir: ``hardware`` layout only (required there):
            ``hardware.paths.checkpoints``, where the run writes its checkpoints.

    Returns:
        The manifest, not yet stored.

    Raises:
        RunPlanError: not a training checkpoint, no run id to resume, a missing option.
        DriftError: blocking differences and ``allow_drift`` is false.
        CodeCheckoutError: ``code_path`` is not a readable git checkout.
    """
    if mode not in RELATION:
        raise RunPlanError(record.uuid, f"unknown mode {mode!r}", hint="use 'fork' or 'resume'")
    if record.kind != "training" or getattr(record, "format", "anemoi") != "anemoi":
        raise RunPlanError(
            record.uuid,
            f"cannot {mode} from a {record.kind} checkpoint ({getattr(record, 'format', 'anemoi')}): "
            "anemoi-training starts only from a Lightning training checkpoint",
            hint="pick the training checkpoint this one was converted from (see `anemoi-ckpt lineage`)",
        )
    if mode == "resume" and not record.run_id:
        raise RunPlanError(
            record.uuid, "cannot resume: the checkpoint records no run id",
            hint=f"fork it instead: anemoi-ckpt fork {record.uuid}",
        )
    environment = environment or capture_environment(code_path=code_path)
    code = checkpoint_code(_provenance(storage, record))
    report: DriftReport = compare_environment(code, environment, mode=mode, require_clean=require_clean)
    enforce(report, allow_drift=allow_drift, subject=f"{mode} of {record.uuid}")

    chosen, reason = choose_layout(environment, layout)
    if chosen == "hardware":
        if checkpoints_dir is None:
            raise RunPlanError(
                record.uuid,
                "the hardware configuration layout (anemoi-training < 0.8) needs the checkpoints folder "
                "the run writes to, where the cached file is linked for anemoi-training to find",
                hint="pass --checkpoints-dir DIR (your hardware.paths.checkpoints)",
            )
        if mode == "fork" and not record.run_id:
            raise RunPlanError(
                record.uuid, "anemoi-training < 0.8 forks by run id and the checkpoint records none",
                hint="use --layout system with anemoi-training >= 0.8",
            )
    if mode == "resume":
        new_run: str | None = record.run_id
        weights_only = False
    else:
        new_run = None if chosen == "hardware" else (run_id or str(_uuid.uuid4()))
        weights_only = True if load_weights_only is None else bool(load_weights_only)
    path = run_cache.cached_path(cache, record.uuid, record.filename)
    overrides, link = training_overrides(
        mode=mode,
        layout=chosen,
        run_id=new_run,
        parent_run_id=record.run_id,
        checkpoint=path,
        load_weights_only=weights_only,
        checkpoints_dir=Path(checkpoints_dir).expanduser().absolute() if checkpoints_dir is not None else None,
    )
    from anemoi_ckpt_nb.catalogue.layout import whoami

    return RunManifest(
        uuid=str(_uuid.uuid4()),
        mode=mode,
        run_id=new_run,
        parent=ParentLink(uuid=record.uuid, relation=RELATION[mode]),
        parent_run_id=record.run_id,
        parent_name=getattr(record, "name", None),
        checkpoint=CachedFile(path=str(path), filename=path.name, sha256=record.sha256, size=record.size),
        checkpoint_code=code,
        environment=environment,
        drift=report.differences,
        drift_allowed=bool(allow_drift),
        require_clean=require_clean,
        training=TrainingLaunch(
            layout=chosen, layout_reason=reason, overrides=overrides, load_weights_only=weights_only,
            stage_link=str(link) if link else None,
        ),
        catalogue=storage.url,
        created_at=dt.datetime.now(dt.timezone.utc),
        created_by=str(whoami()),
    )


def plan_fork(storage: Any, record: Any, *, cache: str | Path, **options: Any) -> RunManifest:
    """:func:`plan_run` with ``mode="fork"``: a new run starting from the checkpoint's weights."""
    return plan_run(storage, record, mode="fork", cache=cache, **options)


def plan_resume(storage: Any, record: Any, *, cache: str | Path, **options: Any) -> RunManifest:
    """:func:`plan_run` with ``mode="resume"``: the same run continues, optimizer state and all."""
    return plan_run(storage, record, mode="resume", cache=cache, **options)


def policy_requires_clean(store: Any) -> bool:
    """Whether the catalogue's policy requires a clean code checkout for runs.

    Read from ``catalogue.json``'s ``require_clean_code`` (false when absent).
    """
    descriptor = getattr(store, "descriptor", None)
    return bool(getattr(descriptor, "require_clean_code", False))


def start_run(
    store: Any,
    record: Any,
    *,
    mode: Mode,
    cache: str | Path | None = None,
    prefetch: bool = True,
    require_clean: bool | None = None,
    progress: Any = None,
    **options: Any,
) -> RunManifest:
    """Plan a fork or resume, store its manifest, and (by default) fetch the checkpoint.

    What ``Checkpoint.fork()`` / ``resume()`` and ``anemoi-ckpt fork`` / ``resume`` do.

    Args:
        store: The catalogue (:class:`~anemoi_ckpt_nb.catalogue.store.CatalogueStore`).
        record: The parent checkpoint's record.
        mode: ``"fork"`` or ``"resume"``.
        cache: The cache folder (default: :func:`~anemoi_ckpt_nb.runs.cache.default_cache_dir`).
        prefetch: Download the checkpoint into the cache now (needs the network
            for an S3 catalogue); with False only the manifest is written and the
            file must be prefetched before training.
        require_clean: Uncommitted code changes are blocking; default: the catalogue's policy.
        progress: Called with bytes downloaded or hashed.
        **options: As for :func:`plan_run` (``environment``, ``code_path``,
            ``allow_drift``, ``layout``, ``run_id``, ``load_weights_only``, ``checkpoints_dir``).

    Returns:
        The stored manifest; ``local_path`` is its copy beside the checkpoint.

    Raises:
        DriftError, RunPlanError, CodeCheckoutError: as :func:`plan_run`; nothing is stored.
        InsufficientSpaceError, IntegrityError, OfflineError: from the download,
            after the manifest was stored (prefetch again to finish).
    """
    cache = Path(cache) if cache is not None else run_cache.default_cache_dir()
    if require_clean is None:
        require_clean = policy_requires_clean(store)
    manifest = plan_run(store.storage, record, mode=mode, cache=cache, require_clean=require_clean, **options)
    if mode == "resume":
        keep_resumed_from(store, record, progress=progress)
    record_manifest(store.storage, manifest, cache=cache)
    if prefetch:
        run_cache.prefetch(store.storage, record, cache=cache, progress=progress, store=store)
    return manifest


def keep_resumed_from(store: Any, record: Any, *, progress: Any = None) -> None:
    """Make sure the catalogue holds a copy of the checkpoint a run resumes from.

    A resume writes into the run's own folder and overwrites ``last.ckpt`` and
    ``inference-last.ckpt`` there: a checkpoint registered without its bytes would be
    gone. When no site holds a copy, the registered file (still on this machine) is
    uploaded to the catalogue, verified, before the run is planned.

    Raises:
        RunPlanError: no copy anywhere and the registered file is not on this machine.
    """
    from anemoi_ckpt_nb.catalogue.store import catalogue_site_name
    from anemoi_ckpt_nb.errors import NoReachableCopyError
    from anemoi_ckpt_nb.sites import locations
    from anemoi_ckpt_nb.sites.transfer import replicate

    if any(location.ok for location in locations.list_locations(store, record)):
        return
    site = catalogue_site_name(store)
    try:
        replicate(store, record, site, progress=progress)
    except NoReachableCopyError:
        raise RunPlanError(
            record.uuid,
            "cannot resume: no site holds a copy of this checkpoint (it was registered without its bytes), "
            f"and resuming overwrites {record.filename} in the run folder",
            hint=f"on {record.source.host}, where {record.source.path} is: "
            f"`anemoi-ckpt replicate {record.uuid} --to {site}`, then resume again",
        ) from None


# --- storing and reading -------------------------------------------------------------------


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


# --- the offline check of the training step --------------------------------------------------


def verify_run(
    manifest_path: str | Path,
    *,
    environment: EnvironmentSnapshot | None = None,
    code_path: str | Path | None = None,
    progress: Any = None,
) -> tuple[RunManifest, DriftReport]:
    """What the training step runs first, offline: the cached file and the environment
    still match the manifest. Reads only local files; never touches the network.

    Args:
        manifest_path: The local run manifest.
        environment: The environment to check; captured here when not given
            (with the manifest's code checkout unless ``code_path`` says otherwise).
        progress: Called with bytes hashed.

    Returns:
        ``(manifest, report)``.

    Raises:
        CacheError: the cached file is missing, incomplete or changed; the hint is the prefetch command.
        DriftError: the environment differs in ways that matter and the manifest did not allow drift.
    """
    manifest = load_manifest(manifest_path)
    run_cache.verify_cached(
        manifest.checkpoint.path,
        sha256=manifest.checkpoint.sha256,
        size=manifest.checkpoint.size,
        hint=run_cache.prefetch_command(manifest.parent.uuid, manifest.cache_dir, manifest.catalogue),
        progress=progress,
    )
    if environment is None:
        if code_path is None and manifest.environment.git is not None:
            code_path = manifest.environment.git.path
        environment = capture_environment(code_path=code_path)
    report = compare_environment(
        manifest.checkpoint_code, environment, mode=manifest.mode, require_clean=manifest.require_clean
    )
    enforce(report, allow_drift=manifest.drift_allowed, subject=f"{manifest.mode} of {manifest.parent.uuid}")
    return manifest, report
