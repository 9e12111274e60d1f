"""Fork and resume plans: check the code versions, build and store the run manifest, fetch the checkpoint.

The manifest is :mod:`.manifest`; the overrides that start anemoi-training are :mod:`.overrides`.

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
import uuid as _uuid
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.catalogue.schema import ParentLink
from anemoi_ckpt_nb.compat.environment import EnvironmentSnapshot, capture_environment, checkpoint_code
from anemoi_ckpt_nb.errors import ObjectNotFoundError, RunPlanError
from anemoi_ckpt_nb.runs import cache as run_cache
from anemoi_ckpt_nb.runs.drift import DriftReport, Mode, compare_environment, enforce
from anemoi_ckpt_nb.runs.manifest import (
    MANIFEST_VERSION,
    MANIFESTS,
    CachedFile,
    Layout,
    RunManifest,
    TrainingLaunch,
    get_manifest,
    list_manifests,
    load_manifest,
    local_manifest_path,
    manifest_key,
    record_manifest,
)
from anemoi_ckpt_nb.runs.overrides import SYSTEM_LAYOUT_SINCE, choose_layout, hydra_value, training_overrides

__all__ = [
    "MANIFESTS",
    "MANIFEST_VERSION",
    "RELATION",
    "SYSTEM_LAYOUT_SINCE",
    "CachedFile",
    "Layout",
    "RunManifest",
    "TrainingLaunch",
    "choose_layout",
    "get_manifest",
    "hydra_value",
    "keep_resumed_from",
    "list_manifests",
    "load_manifest",
    "local_manifest_path",
    "manifest_key",
    "plan_fork",
    "plan_resume",
    "plan_run",
    "policy_requires_clean",
    "record_manifest",
    "start_run",
    "training_overrides",
    "verify_run",
]

RELATION: dict[str, str] = {"fork": "forked-from", "resume": "resumed-from"}



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
