"""Write an upgraded copy of a checkpoint: its metadata migrated, its weights untouched.

"Upgraded" means, concretely:

* the metadata is migrated to the current version
  (:data:`~anemoi_ckpt_nb.compat.anemoi_metadata.CURRENT_VERSION`) by the steps
  of :mod:`anemoi_ckpt_nb.compat.migrate.steps`, and must then validate against
  the current model;
* it is embedded again as anemoi-utils lays it out: ``<top>/anemoi-metadata/anemoi.json``
  plus one ``.numpy`` entry per supporting array, nested per dataset
  (an ``ai-models.json`` becomes ``anemoi.json``; a file whose metadata was only in
  ``hyper_parameters`` gains the embedded copy);
* what was done is recorded in the metadata under ``anemoi_ckpt_nb.upgrades``
  (versions, step names, the sha256 of the file it came from), so the history
  travels with the file;
* every other archive entry (the pickle, every tensor storage) is copied
  byte for byte, in the same order, still aligned as torch aligns them for
  memory mapping. The pickled ``hyper_parameters`` are not rewritten: that would
  need the classes that wrote them.

The input is never modified; the copy is written to a temporary file beside
the destination and renamed into place only when complete and checked.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import CheckpointReadError, CkptError, NotACheckpointError, SchemaError

#: Key of the metadata under which upgrades are recorded.
RECORD_KEY = "anemoi_ckpt_nb"

#: Container-level steps, recorded with the metadata steps.
RENAME_AI_MODELS_JSON = "c01_ai_models_json_to_anemoi_json"
EMBED_HYPER_PARAMETERS = "c02_embed_hyper_parameters_metadata"

#: Fixed timestamp of the entries we add, so the same input gives the same bytes.
ENTRY_DATE = (1980, 1, 1, 0, 0, 0)
DEFAULT_ALIGNMENT = 64
_CHUNK = 8 * 1024 * 1024
_LOCAL_HEADER = 30
_ZIP64_EXTRA = 20


@dataclass
class UpgradeResult:
    """What :func:`upgrade_checkpoint` wrote."""

    source: Path
    destination: Path
    #: ``anemoi.json``, ``ai-models.json`` or ``hyper_parameters``: where the metadata was read.
    metadata_source: str
    from_version: str
    to_version: str
    steps_applied: list[str] = field(default_factory=list)
    container_steps: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: False when the file was already current: nothing was written and ``destination`` was not touched.
    written: bool = True

    @property
    def changed(self) -> bool:
        """Whether the copy differs from the source in more than its upgrade record."""
        return bool(self.steps_applied or self.container_steps)

    def summary(self) -> dict[str, Any]:
        """JSON-able description, as ``upgrade --json`` prints it."""
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "metadata_source": self.metadata_source,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "steps_applied": list(self.steps_applied),
            "container_steps": list(self.container_steps),
            "changed": self.changed,
            "written": self.written,
        }


def upgrade_checkpoint(source: str | Path, destination: str | Path, *, overwrite: bool = False) -> UpgradeResult:
    """Write ``destination``: ``source`` with its metadata upgraded to the current version.

    Args:
        source: a torch zip checkpoint (training or inference); never modified.
        destination: the file to write, or a folder (existing, or ending with ``/``:
            created) to write a file of the source's name into.
        overwrite: replace ``destination`` if it exists.

    Returns:
        What was migrated and written. A file whose metadata is already current (embedded
        as ``anemoi.json``, at the current version) is left alone: nothing is written and
        ``written`` is False.

    Raises:
        CkptError: ``destination`` is ``source``, or exists and ``overwrite`` is false.
        CheckpointReadError: ``source`` is missing, not a zip checkpoint, or damaged.
        SchemaError: the metadata is missing, or cannot be brought to the current version.
    """
    from anemoi_ckpt_nb._version import __version__
    from anemoi_ckpt_nb.compat.anemoi_metadata import CURRENT_VERSION, parse_metadata
    from anemoi_ckpt_nb.read.embedded import DEFAULT_NAME, read_embedded, top_directory
    from anemoi_ckpt_nb.storage.hashing import sha256_of
    from anemoi_ckpt_nb.compat.migrate import migrate

    from anemoi_ckpt_nb.storage.disk import file_in, names_a_folder

    if names_a_folder(destination):
        Path(destination).mkdir(parents=True, exist_ok=True)
    source, destination = Path(source), file_in(destination, Path(source).name)
    _check_paths(source, destination, overwrite=True)
    try:
        with zipfile.ZipFile(source) as zf:
            top = top_directory(zf.namelist())
            embedded = read_embedded(zf)
    except zipfile.BadZipFile as error:
        raise _not_a_zip(source, error) from error
    except (ValueError, KeyError) as error:
        raise CheckpointReadError(source, f"cannot read its embedded metadata: {error}") from error

    container: list[str] = []
    if embedded is not None:
        metadata, origin = embedded.metadata, embedded.source
        by_path = _arrays_by_path(embedded.supporting_arrays, metadata.get("supporting_arrays_paths") or {})
        if origin != DEFAULT_NAME:
            container.append(RENAME_AI_MODELS_JSON)
    else:
        metadata, arrays = _hyper_parameters_metadata(source)
        origin, by_path = "hyper_parameters", {}
        container.append(EMBED_HYPER_PARAMETERS)

    result = migrate(metadata)
    document = result.document
    if result.to_version != CURRENT_VERSION:
        raise SchemaError(
            f"{source}: metadata version {result.from_version} cannot be brought to {CURRENT_VERSION} "
            f"(stopped at {result.to_version} after {result.steps_applied or 'no steps'})",
            hint=f"see what is missing with `anemoi-ckpt validate {source}`",
        )
    parse_metadata(document)  # the result must be valid current metadata, or nothing is written

    if embedded is not None:
        new_arrays = _arrange_by_paths(document.get("supporting_arrays_paths") or {}, by_path)
    else:
        new_arrays = _nest_per_dataset(arrays, list(document["dataset"]))

    if not (result.steps_applied or container):
        # Already current, as anemoi-utils lays it out: a copy would only differ in its zip entries.
        return UpgradeResult(source, destination, origin, str(result.from_version), str(result.to_version),
                             [], [], document, written=False)
    record = dict(document.get(RECORD_KEY) or {})
    record["upgrades"] = [*record.get("upgrades", []), {
        "tool": f"anemoi-ckpt-nb {__version__}",
        "from_version": result.from_version,
        "to_version": result.to_version,
        "steps": [*result.steps_applied, *container],
        "source_sha256": sha256_of(source),
    }]
    document[RECORD_KEY] = record

    _check_paths(source, destination, overwrite=overwrite)
    stored = _write_copy(source, destination, top, document, new_arrays, skip_json=embedded.entry if embedded else None)
    return UpgradeResult(source, destination, origin, str(result.from_version), str(result.to_version),
                         list(result.steps_applied), container, stored)


def _check_paths(source: Path, destination: Path, *, overwrite: bool) -> None:
    if not source.is_file():
        raise CheckpointReadError(source, "no such file")
    if destination.exists() and destination.resolve() == source.resolve():
        raise CkptError(f"{destination}: is the input file; upgrade never modifies its input",
                        hint="give another OUT path")
    if destination.is_dir():  # a folder inside the folder given, named as the source
        raise CkptError(f"{destination}: is a folder", hint="give another OUT path")
    if destination.exists() and not overwrite:
        raise CkptError(f"{destination}: already exists", hint="add --overwrite to replace it")


def _hyper_parameters_metadata(source: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metadata and supporting arrays from the pickle, through the safe reader."""
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    with open_checkpoint(source) as ck:
        if not isinstance(ck.metadata, dict):
            raise SchemaError(f"{source}: has no Anemoi metadata to upgrade (neither embedded nor in hyper_parameters)",
                              hint=f"check the file with `anemoi-ckpt validate {source}`")
        return ck.metadata, dict(ck.supporting_arrays or {})


def _is_array_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and set(entry) == {"path", "shape", "dtype"}


def _arrays_by_path(arrays: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """Archive path -> array, for every supporting array read from the file."""
    found: dict[str, Any] = {}
    for key, entry in paths.items():
        value = arrays.get(key)
        if _is_array_entry(entry):
            found[entry["path"]] = value
        elif isinstance(entry, dict) and isinstance(value, dict):
            found.update(_arrays_by_path(value, entry))
    return found


def _arrange_by_paths(paths: dict[str, Any], by_path: dict[str, Any]) -> dict[str, Any]:
    """The arrays in the structure of the migrated ``supporting_arrays_paths``.

    Migration steps move entries but keep their ``path``, which still names
    the entry in the source file: that is how each array is found again.
    """
    arranged: dict[str, Any] = {}
    for key, entry in paths.items():
        if _is_array_entry(entry):
            if entry["path"] not in by_path:
                raise SchemaError(f"supporting array {key!r} names {entry['path']}, which the file does not hold")
            arranged[key] = by_path[entry["path"]]
        elif isinstance(entry, dict):
            arranged[key] = _arrange_by_paths(entry, by_path)
    return arranged


def _nest_per_dataset(arrays: dict[str, Any], dataset_names: list[str]) -> dict[str, Any]:
    """Flat arrays of a one-dataset model go under that dataset's name, as 2.0 nests them."""
    if not arrays or set(arrays) <= set(dataset_names):
        return arrays
    if len(dataset_names) != 1:
        raise SchemaError(f"supporting arrays {sorted(arrays)} are not nested per dataset {dataset_names}")
    return {dataset_names[0]: arrays}


# --- writing ------------------------------------------------------------------------


def _not_a_zip(source: Path, error: Exception) -> NotACheckpointError:
    """The error for a source that is no zip archive; a legacy torch file is named as such."""
    from anemoi_ckpt_nb.read.torchpickle import is_legacy_head

    with open(source, "rb") as file:
        head = file.read(16)
    if is_legacy_head(head):
        return NotACheckpointError(
            source,
            "a torch file of the legacy format (torch.save before torch 1.6, or with "
            "_use_new_zipfile_serialization=False), not a zip archive: its metadata cannot be embedded",
            hint="save it again in the zip format (torch.save with torch 1.6 or later) and upgrade that, "
            f"or convert it to an inference checkpoint, which reads this format: anemoi-ckpt convert {source}",
        )
    return NotACheckpointError(source, f"not a torch zip checkpoint ({error})",
                               hint="upgrade works on .ckpt files written by torch.save")


def _alignment(zf: zipfile.ZipFile, top: str) -> int:
    try:
        return int(zf.read(f"{top}/.storage_alignment").decode().strip())
    except (KeyError, ValueError):
        return DEFAULT_ALIGNMENT


def _aligned_info(name: str, date_time: tuple[int, ...], size: int, offset: int, alignment: int) -> tuple[zipfile.ZipInfo, bool]:
    """A stored ZipInfo whose data will start on a multiple of ``alignment``, as torch writes them.

    The padding goes in an extra field with id ``FB``, like torch's writer.
    """
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # what ZipFile.open(mode="w") decides
    encoded = name.encode("ascii" if name.isascii() else "utf-8")
    header = _LOCAL_HEADER + len(encoded) + (_ZIP64_EXTRA if zip64 else 0)
    padding = (-(offset + header + 4)) % alignment
    info.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
    return info, zip64


def _write_copy(
    source: Path,
    destination: Path,
    top: str,
    document: dict[str, Any],
    arrays: dict[str, Any],
    *,
    skip_json: str | None,
) -> dict[str, Any]:
    from anemoi_ckpt_nb.read.embedded import FOLDER, write_embedded

    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(source) as src, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as dst:
            alignment = _alignment(src, top)
            metadata_folder = f"{top}/{FOLDER}/"
            copied = []
            for info in src.infolist():
                if info.filename.startswith(metadata_folder) or info.filename == skip_json:
                    continue
                new, zip64 = _aligned_info(info.filename, info.date_time, info.file_size, dst.fp.tell(), alignment)
                with src.open(info) as reader, dst.open(new, "w", force_zip64=zip64) as writer:
                    while chunk := reader.read(_CHUNK):
                        writer.write(chunk)
                copied.append((info, new))
            written = write_embedded(dst, top, document, arrays, date_time=ENTRY_DATE)
        for original, new in copied:
            if original.CRC != new.CRC or original.file_size != new.file_size:
                raise CkptError(f"{destination}: copy of {original.filename} does not match the source; nothing written")
        # mkstemp makes the file private (0600); the copy is shared like its source (group project folders).
        os.chmod(temporary, stat.S_IMODE(source.stat().st_mode))
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return written
