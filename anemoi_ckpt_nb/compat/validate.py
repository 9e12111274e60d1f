"""Can this checkpoint be read, converted and run for inference here? ``anemoi-ckpt validate``.

The report says which format and metadata version the file has, which
migration steps would bring it to the current version, which keys are unknown
or missing, which pickled classes the reader could not translate, and how the
installed packages compare with the ones it was trained with.

The environment check is :mod:`.packages` (as anemoi-inference's ``validate_environment``);
the report, its verdict and its text are :mod:`.report`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.compat.packages import EXEMPT_NAMESPACES, EXEMPT_PACKAGES, check_environment, installed_version
from anemoi_ckpt_nb.compat.report import (
    EXIT_CODES,
    Finding,
    PackageCheck,
    Severity,
    ValidationReport,
    Verdict,
    render_text,
)
from anemoi_ckpt_nb.errors import CheckpointReadError, SchemaError

__all__ = [
    "EXEMPT_NAMESPACES",
    "EXEMPT_PACKAGES",
    "EXIT_CODES",
    "Finding",
    "PackageCheck",
    "Severity",
    "ValidationReport",
    "Verdict",
    "check_metadata",
    "describe_kind",
    "installed_version",
    "looks_like_path",
    "render_text",
    "validate_checkpoint",
    "validate_metadata",
]

#: Keys whose absence does not block anything but loses lineage or provenance.
RECOMMENDED_KEYS = ("uuid", "run_id", "timestamp", "provenance_training")

CHECKPOINT_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".safetensors", ".bin"})



def looks_like_path(target: str) -> bool:
    """Whether ``target`` names a file rather than a catalogue reference (uuid or name)."""
    path = Path(target)
    return path.exists() or "/" in target or "\\" in target or path.suffix in CHECKPOINT_SUFFIXES


def validate_metadata(
    metadata: Any, *, label: str, format: str | None = None, all_packages: bool = False,
    registered: tuple[str, str] | None = None,
) -> ValidationReport:
    """Validate metadata without its file (e.g. a catalogue's copy of a registered checkpoint's).

    Pickled classes and the embedding are not checked: that needs the file.

    Args:
        metadata: the Anemoi metadata dict.
        label: what to call it in the report (a uuid and file name).
        format: ``training`` or ``inference``, if known.
        all_packages: see :func:`validate_checkpoint`.
        registered: ``(uuid, file name)`` of the registered checkpoint the metadata belongs to.
    """
    report = ValidationReport(path=label, format=format, metadata_source="catalogue", what=describe_kind(format),
                              registered=registered)
    from anemoi_ckpt_nb.read.runs_with import models_version, runs_with

    conversion = metadata.get("conversion") if isinstance(metadata, dict) else None
    report.runs_with = runs_with(format, conversion_format=conversion.get("format") if isinstance(conversion, dict) else None,
                                 models_version=models_version(metadata))
    report.add("info", "metadata-only", "checked the catalogue's copy of the metadata; pickled classes were not checked",
               "download the file and validate it for a full check")
    check_metadata(report, metadata, all_packages=all_packages)
    return report


def validate_checkpoint(path: str | Path, *, all_packages: bool = False) -> ValidationReport:
    """Check a checkpoint file against the current schema and this environment.

    Never raises for a bad file: a file that cannot be read is reported as incompatible.

    Args:
        path: a checkpoint (training, inference, state dict or safetensors).
        all_packages: compare every package recorded in the provenance, not only anemoi ones.

    Returns:
        The report (see :attr:`ValidationReport.verdict`).
    """
    from anemoi_ckpt_nb.compat.anemoi_metadata import CURRENT_VERSION
    from anemoi_ckpt_nb.read.reader import open_checkpoint
    from anemoi_ckpt_nb.read.runs_with import runs_with_file

    report = ValidationReport(path=str(path), current_version=CURRENT_VERSION)
    try:
        ck = open_checkpoint(path)
    except CheckpointReadError as error:
        report.add("error", "unreadable", error.message, error.hint)
        return report
    with ck:
        report.format = ck.kind
        report.what = describe_kind(ck.kind, ck.label, path=str(path))
        report.metadata_source = _metadata_source(Path(path), ck)
        _check_classes(report, ck)
        report.runs_with = runs_with_file(ck)
        metadata = ck.metadata
    if metadata is None:
        report.add("error", "no-metadata", "the file holds no Anemoi metadata: it cannot be converted or run by anemoi-inference",
                   "only checkpoints written by anemoi-training (or converted from them) carry it")
        return report
    check_metadata(report, metadata, all_packages=all_packages)
    return report


def describe_kind(kind: str | None, label: str | None = None, *, path: str = "FILE") -> str | None:
    """What a file of ``kind`` is and what runs it, for people.

    anemoi-inference runs inference files (``torch.load`` of the pickled model, metadata from
    its anemoi.json); a training file is what anemoi-training resumes or forks from.
    """
    if kind == "training":
        return (f"a training checkpoint: anemoi-training resumes or forks from it; anemoi-inference runs "
                f"inference files, which `anemoi-ckpt convert {path} -o DIR` makes from it")
    if kind == "inference":
        return "an inference checkpoint (the pickled model): anemoi-inference runs it"
    if kind in ("state-dict", "safetensors"):
        return (f"{label or kind}: weights, no pickled model; anemoi-inference's default runner cannot load it, "
                "the anemoi-ckpt runner and load_model build the model when it carries its graph (see runs with)")
    return None


def check_metadata(report: ValidationReport, metadata: Any, *, all_packages: bool = False) -> None:
    """Fill ``report`` with what the metadata itself says (versions, keys, environment).

    Used by :func:`validate_checkpoint`, and directly for metadata without a file
    (a catalogue record's metadata blob).
    """
    from anemoi_ckpt_nb.compat.anemoi_metadata import CURRENT_VERSION, detect_version, is_newer_than_known
    from anemoi_ckpt_nb.compat.migrate import migrate

    report.current_version = CURRENT_VERSION
    if not _is_plain_json(metadata):
        report.add("error", "metadata-not-plain", "the metadata holds objects the reader could not turn into plain data",
                   "report the classes listed under unmapped_classes")
        return
    try:
        version = detect_version(metadata)
    except SchemaError as error:
        report.add("error", "metadata-version", error.message, error.hint)
        return
    report.metadata_version = version
    if is_newer_than_known(version):
        report.add("warning", "metadata-newer", f"metadata version {version} is newer than this tool knows ({CURRENT_VERSION}); "
                   "only the environment was checked", "upgrade anemoi-ckpt-nb: pip install -U anemoi-ckpt-nb")
        check_environment(report, metadata.get("provenance_training"), all_packages=all_packages)
        return
    try:
        result = migrate(metadata)
    except SchemaError as error:
        report.add("error", "migration-failed", error.message, error.hint)
        return
    report.migrations = list(result.steps_applied)
    _check_keys(report, metadata, result.document, str(result.to_version))
    if result.steps_applied and str(result.to_version) == CURRENT_VERSION:
        report.add("warning", "migrations-pending",
                   f"metadata {version} is older than {CURRENT_VERSION}: {len(result.steps_applied)} migration step(s) would run "
                   f"({', '.join(result.steps_applied)})",
                   f"write an upgraded copy with {_upgrade_command(report)}")
    source = report.metadata_source
    if source == "ai-models.json":
        report.add("warning", "deprecated-name", "the metadata is embedded as ai-models.json, a name anemoi-utils only reads with a deprecation warning",
                   f"{_upgrade_command(report)} writes it as anemoi.json")
    elif source == "hyper_parameters" and report.format == "inference":
        report.add("warning", "not-embedded", "the metadata is not embedded as anemoi.json, where anemoi-inference reads it",
                   f"{_upgrade_command(report)} embeds it")
    elif source == "hyper_parameters":
        report.add("info", "not-embedded", "the metadata is only in hyper_parameters; conversion embeds it in the inference file")
    valid = not any(f.severity == "error" for f in report.findings)
    report.can_convert = valid and report.format in (None, "training", "inference")
    check_environment(report, (result.document if valid else metadata).get("provenance_training"), all_packages=all_packages)
    blocking = {"older-installed", "missing"}
    report.can_load_for_inference = report.can_convert and not any(p.status in blocking for p in report.packages) \
        and not any(f.severity == "error" for f in report.findings)


# --- pieces ----------------------------------------------------------------------------


def _upgrade_command(report: ValidationReport) -> str:
    """The command(s) that upgrade the file the report is about, as a user types them."""
    import shlex

    if report.registered is not None:
        uuid, filename = report.registered
        name = shlex.quote(Path(filename).name)
        return f"`anemoi-ckpt download {uuid} ./{name}` then `anemoi-ckpt upgrade {name} OUT`"
    return f"`anemoi-ckpt upgrade {shlex.quote(report.path)} OUT`"


def _metadata_source(path: Path, ck: Any) -> str | None:
    """Where the reader found the metadata: the embedded JSON's name, or the pickle."""
    from anemoi_ckpt_nb.read.embedded import find_metadata_entry

    if ck.metadata is None:
        return None
    if ck.kind == "safetensors":
        return "safetensors-header"
    try:
        with zipfile.ZipFile(path) as zf:
            found = find_metadata_entry(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        found = None
    return found[1] if found else "hyper_parameters"


def _check_classes(report: ValidationReport, ck: Any) -> None:
    """Report pickled classes that were neither rebuilt nor translated into plain data."""
    from anemoi_ckpt_nb.read.classmap import current_name, translator_for

    # current_name is idempotent, so it does not matter whether the reader already renamed them.
    unmapped = sorted({".".join(current_name(m, n)) for m, n in ck.opaque_classes
                       if translator_for(".".join(current_name(m, n))) is None})
    report.unmapped_classes = unmapped
    if not unmapped:
        return
    shown = ", ".join(unmapped[:5]) + (f" and {len(unmapped) - 5} more" if len(unmapped) > 5 else "")
    report.add("info", "unmapped-classes",
               f"{len(unmapped)} pickled class(es) were kept as inert placeholders: {shown}")
    if ck.kind == "inference":
        missing = sorted({p for p in (_missing_package(name.rpartition(".")[0]) for name in unmapped) if p})
        if missing:
            report.add("warning", "classes-not-installed",
                       f"torch.load of this inference file needs the packages {', '.join(missing)}, not installed here",
                       "install the anemoi packages the checkpoint was trained with (see packages)")


def _missing_package(module: str) -> str | None:
    """The package ``module`` belongs to, if it is not installed here; nothing is imported but namespaces."""
    import importlib.util

    parts = module.split(".")
    # find_spec of a top-level name locates it without importing anything.
    spec = importlib.util.find_spec(parts[0])
    if spec is None:
        return parts[0]
    is_namespace = spec.submodule_search_locations is not None and spec.origin in (None, "namespace")
    if is_namespace and len(parts) > 1:
        # e.g. anemoi: each anemoi-* distribution adds one package below it (importing a namespace runs no code).
        second = ".".join(parts[:2])
        return second if importlib.util.find_spec(second) is None else None
    return None


def _is_plain_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return False
    return True


def _check_keys(report: ValidationReport, original: Mapping[str, Any], migrated: Mapping[str, Any], reached: str) -> None:
    from pydantic import ValidationError

    from anemoi_ckpt_nb.compat.anemoi_metadata import CURRENT_VERSION, MODELS, detect_version

    own = MODELS[detect_version(original).split(".")[0]]
    problems = _errors(own, original)
    if not problems and reached != CURRENT_VERSION:
        # Stuck on the way: what the next version needs and the document lacks.
        following = MODELS.get(str(int(reached.split(".")[0]) + 1))
        patched = {**migrated, "version": f"{int(reached.split('.')[0]) + 1}.0"}
        problems = _errors(following, patched) if following else []
        report.add("error", "not-migratable",
                   f"metadata {reached} cannot be brought to {CURRENT_VERSION}"
                   + (f": {'; '.join(f'{loc}: {msg}' for loc, msg, _ in problems[:5])}" if problems else ""),
                   "the keys listed under missing_keys cannot be recomputed from the file")
    elif not problems:
        try:
            MODELS[CURRENT_VERSION.split(".")[0]].model_validate(migrated)
        except ValidationError as error:
            report.add("error", "migration-invalid", f"the migrated metadata does not match {CURRENT_VERSION}: {error.errors()[0]['msg']}")
    else:
        for loc, message, _ in problems:
            report.add("error", "invalid-key", f"{loc or '<root>'}: {message}")
    report.missing_keys = sorted({loc for loc, _, kind in problems if kind == "missing"})
    model = MODELS[(reached if reached else CURRENT_VERSION).split(".")[0]]
    report.unknown_keys = sorted(set(migrated) - set(model.model_fields))
    if report.unknown_keys:
        report.add("info", "unknown-keys", f"keys this tool does not describe (kept as they are): {', '.join(report.unknown_keys)}")
    absent = [k for k in RECOMMENDED_KEYS if migrated.get(k) in (None, "", {})]
    if absent:
        report.add("warning", "missing-recommended", f"no {', '.join(absent)} in the metadata: lineage or provenance checks are limited",
                   "these are written by anemoi-training's checkpoint callback")


def _errors(model: Any, document: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    from pydantic import ValidationError

    try:
        model.model_validate(document)
    except ValidationError as error:
        return [(".".join(str(p) for p in e["loc"]), e["msg"], e["type"]) for e in error.errors()]
    return []
