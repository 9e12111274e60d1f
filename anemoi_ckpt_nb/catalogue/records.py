"""What a checkpoint file says about itself, as the catalogue records it.

:func:`inspect_file` reads a file once (safely, through the reader) and
returns :class:`FileFacts`; :func:`make_record` turns facts plus the lineage
decided by :mod:`.register` into a :class:`~anemoi_ckpt_nb.catalogue.schema.CheckpointRecord`.

The record uuid is the metadata uuid the file's lineage uses (for a training
file of anemoi-training >= 0.6 with torch >= 2.6, the uuid of its pickled
``hyper_parameters["metadata"]``, not the second one of its embedded anemoi.json,
which the record keeps in ``other_uuids``), with one exception. anemoi-training
writes its inference checkpoint with the very uuid of the training checkpoint
saved at the same step, so the two files cannot both own it. An inference file
that carries no ``converted_from`` (our converter's mark of a fresh uuid) is
therefore recorded under a uuid5 derived from its metadata uuid and its sha256
(:func:`~.layout.derived_uuid`), linked ``converted-from`` the training
checkpoint's uuid; ``metadata_uuid`` keeps the uuid found in the file. The rule
does not depend on which file is registered first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.schema import (
    CheckpointRecord,
    CodeVersions,
    ParentLink,
    Sizes,
    SourceLocation,
    utcnow,
)
from anemoi_ckpt_nb.compat.environment import EnvironmentSnapshot, version_text
from anemoi_ckpt_nb.errors import CatalogueError

#: Libraries whose versions decide whether a pickle loads, kept in the record's code summary.
_KEY_MODULES = ("torch", "torch_geometric", "pytorch_lightning", "lightning", "omegaconf", "numpy")

#: Reader kind -> (record kind, format).
_KINDS = {
    "training": ("training", "anemoi"),
    "inference": ("inference", "anemoi"),
    "safetensors": ("inference", "safetensors"),
    "state-dict": ("inference", "state-dict"),
}


@dataclass
class FileFacts:
    """Everything registration needs from one file, read once."""

    path: Path
    sha256: str
    size: int
    kind: str
    format: str
    metadata: dict[str, Any]
    metadata_uuid: str
    parent_uuid: str | None
    run_id: str | None
    fork_run_id: str | None
    epoch: int | None
    global_step: int | None
    sizes: Sizes
    converted_from: str | None = None
    #: Other uuids the file holds (a current training file's embedded anemoi.json uuid).
    other_uuids: list[str] = field(default_factory=list)
    extra_parents: list[ParentLink] = field(default_factory=list)
    #: The parent links registration settled on.
    links: list[ParentLink] = field(default_factory=list)
    #: Where the file was saved, when registered from elsewhere (a spool's capture): else this host and path.
    source: SourceLocation | None = None

    def hash(self, *, progress: Callable[[int], None] | None = None) -> str:
        """Compute (once, or take from the file's hash cache) and return the file's sha256."""
        from anemoi_ckpt_nb.storage.hashing import sha256_of

        if not self.sha256:
            self.sha256 = sha256_of(self.path, progress=progress)
        return self.sha256

    @property
    def derived(self) -> bool:
        """True for an inference file sharing its training checkpoint's uuid (see module docstring)."""
        return self.kind == "inference" and self.converted_from is None

    @property
    def uuid(self) -> str:
        """The uuid its record gets (for a derived one, only once hashed)."""
        if self.derived:
            if not self.sha256:
                raise ValueError(f"{self.path}: hash the file before asking for its derived uuid")
            return layout.derived_uuid(self.metadata_uuid, self.sha256)
        return self.metadata_uuid


def _converted_from_uuid(document: Any) -> str | None:
    """``converted_from`` of a metadata or sidecar document: a uuid, or a dict holding one."""
    value = document.get("converted_from") if isinstance(document, dict) else None
    if isinstance(value, dict):
        value = value.get("uuid")
    return value if isinstance(value, str) and value else None


def _converted_from(metadata: dict[str, Any], path: Path) -> str | None:
    """The uuid a converted file was made from: metadata first, then a sidecar JSON."""
    if found := _converted_from_uuid(metadata):
        return found
    for sidecar in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if sidecar.is_file() and sidecar != path:
            try:
                found = _converted_from_uuid(json.loads(sidecar.read_text()))
            except (OSError, ValueError):
                continue
            if found:
                return found
    return None


def inspect_file(
    path: str | Path,
    *,
    sha256: str | None = None,
    hash: bool = True,
    progress: Callable[[int], None] | None = None,
) -> FileFacts:
    """Read a checkpoint's metadata and hash its bytes.

    Args:
        path: The checkpoint file.
        sha256: The file's hash if already known (skips hashing).
        hash: With False, leave ``sha256`` empty (call :meth:`FileFacts.hash` later):
            lineage can be checked from the metadata alone, before reading gigabytes.
        progress: Called with byte counts while hashing.

    Returns:
        The facts registration needs.

    Raises:
        CheckpointReadError: the file cannot be read as a checkpoint.
        CatalogueError: the file has no Anemoi metadata uuid to register it under.
    """
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    path = Path(path)
    with open_checkpoint(path) as ck:
        metadata = ck.metadata
        if not isinstance(metadata, dict) or not (ck.uuid or metadata.get("uuid")):
            raise CatalogueError(
                f"{path}: no Anemoi metadata uuid in this {ck.kind} file, so it cannot be registered",
                hint=f"inspect it with `anemoi-ckpt inspect {path}`; only files written by anemoi-training "
                "or converted by anemoi-ckpt carry one",
            )
        found_uuid = str(ck.uuid or metadata["uuid"])
        if not layout.is_uuid(found_uuid):
            # The uuid names the record's key: a path or a word would place it anywhere.
            raise CatalogueError(
                f"{path}: its metadata uuid {found_uuid!r} is not a uuid, so it cannot be registered",
                hint="only files written by anemoi-training or converted by anemoi-ckpt carry a real uuid",
            )
        kind, fmt = _KINDS.get(ck.kind, ("inference", "anemoi"))
        conversion = metadata.get("conversion")
        if isinstance(conversion, dict) and conversion.get("format") in ("anemoi", "safetensors", "pickled"):
            kind, fmt = "inference", conversion["format"]  # written by our converter
        training = metadata.get("training") if isinstance(metadata.get("training"), dict) else {}
        facts = FileFacts(
            path=path,
            sha256="",
            size=path.stat().st_size,
            kind=kind,
            format=fmt,
            metadata=metadata,
            metadata_uuid=found_uuid,
            parent_uuid=ck.parent_uuid or metadata.get("parent_uuid") or None,
            run_id=ck.run_id or metadata.get("run_id"),
            fork_run_id=_fork_run_id(metadata),
            epoch=ck.epoch if ck.epoch is not None else training.get("epoch"),
            global_step=ck.global_step if ck.global_step is not None else training.get("global_step"),
            sizes=Sizes(
                total_bytes=ck.total_bytes,
                weights_bytes=ck.weights_bytes,
                optimizer_bytes=ck.optimizer_bytes,
                other_bytes=ck.other_bytes,
                parameter_count=ck.parameter_count,
            ),
            converted_from=_converted_from(metadata, path),
            # Only real uuids become aliases: each names a key (aliases/<uuid>.json).
            other_uuids=[u for u in ck.uuids if u != (ck.uuid or metadata["uuid"]) and layout.is_uuid(u)],
        )
    if sha256:
        facts.sha256 = sha256
    elif hash:
        facts.hash(progress=progress)
    return facts


def _fork_run_id(metadata: dict[str, Any]) -> str | None:
    value = metadata.get("fork_run_id")
    if not value:
        training = (metadata.get("config") or {}).get("training") if isinstance(metadata.get("config"), dict) else None
        value = training.get("fork_run_id") if isinstance(training, dict) else None
    return str(value) if value else None


def dataset_name(metadata: dict[str, Any]) -> str | None:
    """The training dataset's name, for search; several datasets are joined by ``+``."""
    dataset = metadata.get("dataset")
    if not isinstance(dataset, dict):
        return None
    if str(metadata.get("version", "")).startswith("2"):
        names = [_one_dataset_name(value) or key for key, value in dataset.items() if isinstance(value, dict)]
        return "+".join(names) or None
    return _one_dataset_name(dataset)


def _one_dataset_name(dataset: dict[str, Any]) -> str | None:
    arguments = dataset.get("arguments")
    if isinstance(arguments, dict):
        kwargs = arguments.get("kwargs") or {}
        if isinstance(kwargs, dict) and isinstance(kwargs.get("dataset"), str):
            return _stem(kwargs["dataset"])
        args = arguments.get("args") or []
        if args and isinstance(args[0], str):
            return _stem(args[0])
    specific = dataset.get("specific")
    if isinstance(specific, dict) and isinstance(specific.get("path"), str):
        return _stem(specific["path"])
    return dataset.get("name") if isinstance(dataset.get("name"), str) else None


def _stem(text: str) -> str:
    return text.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")


def code_versions(metadata: dict[str, Any]) -> CodeVersions:
    """Summarise ``provenance_training``: python, key module versions, git commits."""
    provenance = metadata.get("provenance_training")
    if not isinstance(provenance, dict):
        return CodeVersions()
    modules = provenance.get("module_versions") or {}
    kept: dict[str, str] = {}
    for name, value in (modules.items() if isinstance(modules, dict) else ()):
        if not (str(name).startswith("anemoi") or name in _KEY_MODULES):
            continue
        # A plain "1.2.3" or, from newer anemoi-utils, {"version": "1.2.3", "source": ...}.
        version = version_text(value)
        if version is not None:
            kept[str(name)] = version
    git: dict[str, str] = {}
    dirty: list[str] = []
    for name, info in (provenance.get("git_versions") or {}).items():
        detail = info.get("git") if isinstance(info, dict) else None
        if isinstance(detail, dict) and detail.get("sha1"):
            git[str(name)] = str(detail["sha1"])
            if detail.get("modified_files"):
                dirty.append(str(name))
    python = provenance.get("python")
    return CodeVersions(python=str(python) if python else None, modules=kept, git=git, git_dirty=sorted(dirty))


def metadata_document(metadata: dict[str, Any]) -> bytes:
    """The metadata as stored in its blob: canonical JSON without supporting arrays."""
    return layout.canonical_json(metadata)


def make_record(
    facts: FileFacts,
    *,
    parents: list[ParentLink],
    name: str | None,
    blob: str | None,
    metadata_blob: str | None,
    registered_with: EnvironmentSnapshot | None = None,
) -> CheckpointRecord:
    """The record of a file whose lineage, blob and metadata blob are settled.

    Args:
        facts: From :func:`inspect_file`, hashed.
        parents: The settled parent links.
        name: The record's name, if any.
        blob: Key of the file's bytes, None when not uploaded.
        metadata_blob: Key of the metadata JSON.
        registered_with: The environment registering it (``compat.environment.capture_environment``).

    Returns:
        The record, stamped now by the current user.
    """
    import socket

    timestamp = facts.metadata.get("timestamp")
    return CheckpointRecord(
        uuid=facts.uuid,
        metadata_uuid=facts.metadata_uuid,
        other_uuids=list(facts.other_uuids),
        name=name,
        kind=facts.kind,
        format=facts.format,
        run_id=facts.run_id,
        fork_run_id=facts.fork_run_id,
        parents=parents,
        epoch=facts.epoch,
        global_step=facts.global_step,
        sha256=facts.sha256,
        size=facts.size,
        blob=blob,
        filename=facts.path.name,
        source=facts.source or SourceLocation(host=socket.gethostname(), path=str(facts.path.resolve())),
        sizes=facts.sizes,
        dataset=dataset_name(facts.metadata),
        metadata_version=str(facts.metadata["version"]) if facts.metadata.get("version") is not None else None,
        code=code_versions(facts.metadata),
        metadata_blob=metadata_blob,
        saved_at=str(timestamp) if timestamp else None,
        registered_at=utcnow(),
        registered_by=layout.whoami(),
        registered_with=registered_with,
    )
