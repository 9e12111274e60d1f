"""Metadata embedded in checkpoint archives, laid out as anemoi-utils lays it out.

``anemoi.utils.checkpoints.save_metadata`` appends to the torch zip archive:

* ``<top>/anemoi-metadata/anemoi.json``: the metadata dict as JSON, plus a
  ``supporting_arrays_paths`` entry describing every supporting array;
* ``<top>/anemoi-metadata/<key>.numpy``: the raw bytes of each supporting
  array (``<top>/anemoi-metadata/<dataset>/<key>.numpy`` when the arrays are
  nested per dataset), described by ``{"path", "shape", "dtype"}``.

Older files use ``ai-models.json`` instead of ``anemoi.json``. Reading and
writing here follow that code exactly (the tests compare with the real
package), so that Anemoi's own tools read what we write and we read theirs.

For safetensors files (which have no zip) the same metadata goes, as JSON,
under the header key :data:`SAFETENSORS_METADATA_KEY`, and each supporting
array is a tensor named :data:`SAFETENSORS_ARRAY_PREFIX` + its key path
(:func:`safetensors_arrays` writes that layout, :func:`safetensors_array_keys`
reads it back).
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Iterator

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    import zipfile
    from typing import Any

from anemoi_ckpt_nb.read.arrayrefs import CODES, NAMES, ArrayRef
from anemoi_ckpt_nb.read.records import Record

DEFAULT_NAME = "anemoi.json"
DEPRECATED_NAME = "ai-models.json"
FOLDER = "anemoi-metadata"

SAFETENSORS_METADATA_KEY = "anemoi"
SAFETENSORS_ARRAY_PREFIX = "anemoi-supporting-arrays/"

#: Refuse metadata JSON larger than this: real metadata is well under 10 MB,
#: and reading an unbounded entry from someone else's file could exhaust memory.
MAX_METADATA_BYTES = 256 * 1024 * 1024

_ARRAY_ENTRY_KEYS = {"path", "shape", "dtype"}


class EmbeddedMetadata(Record):
    """What an archive carries under ``anemoi-metadata/``.

    Attributes:
        metadata: the metadata JSON.
        supporting_arrays: key -> numpy array, nested one level per dataset for multi-dataset checkpoints.
        source: ``anemoi.json`` or the deprecated ``ai-models.json``.
        entry: the archive entry the JSON was read from.
    """

    FIELDS = ("metadata", "supporting_arrays", "source", "entry")

    def __init__(
        self, metadata: dict[str, Any], supporting_arrays: dict[str, Any] | None = None, source: str = DEFAULT_NAME,
        entry: str = "",
    ) -> None:
        self.metadata = metadata
        self.supporting_arrays = {} if supporting_arrays is None else supporting_arrays
        self.source = source
        self.entry = entry


def top_directory(names: list[str]) -> str:
    """The single top-level folder of a torch zip archive.

    Raises:
        ValueError: the archive has none or several (torch and anemoi-utils need one).
    """
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    if len(tops) != 1:
        raise ValueError(f"expected one top-level folder in the archive, found {sorted(tops)}")
    return tops.pop()


def find_metadata_entry(names: list[str]) -> tuple[str, str] | None:
    """``(entry, source_name)`` of the metadata JSON, preferring ``anemoi.json``.

    Mirrors anemoi-utils: match by basename anywhere in the archive; two
    matches of the same name is an error.

    Raises:
        ValueError: the archive holds two or more metadata files of the same name.
    """
    for source in (DEFAULT_NAME, DEPRECATED_NAME):
        found = [n for n in names if posixpath.basename(n) == source]
        if len(found) > 1:
            raise ValueError(f"found two or more '{source}' entries: {found}")
        if found:
            return found[0], source
    return None


def read_embedded(zf: zipfile.ZipFile, *, described: bool = False) -> EmbeddedMetadata | None:
    """Read the embedded metadata and supporting arrays of an open archive.

    Args:
        zf: the archive.
        described: arrays of plain numeric dtypes as :class:`~.arrayrefs.ArrayRef` (their bytes
            read, numpy imported when they are made), not numpy arrays.

    Returns:
        ``None`` when the archive has no embedded metadata.

    Raises:
        ValueError: the JSON is too large or invalid, or an array entry is
            missing or does not match its declared shape and dtype.
        KeyError: an entry named by ``supporting_arrays_paths`` is absent.
    """
    found = find_metadata_entry(zf.namelist())
    if found is None:
        return None
    entry, source = found
    info = zf.getinfo(entry)
    if info.file_size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata entry {entry} is {info.file_size} bytes, over the limit")
    metadata = json.loads(zf.read(entry))
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata entry {entry} is not a JSON object")
    arrays = _read_arrays(zf, metadata.get("supporting_arrays_paths", {}) or {}, described)
    return EmbeddedMetadata(metadata=metadata, supporting_arrays=arrays, source=source, entry=entry)


def _is_array_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and set(entry) == _ARRAY_ENTRY_KEYS


def _read_arrays(zf: zipfile.ZipFile, entries: dict[str, Any], described: bool = False) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    for key, entry in entries.items():
        if isinstance(entry, dict) and not _is_array_entry(entry):
            arrays[key] = _read_arrays(zf, entry, described)
            continue
        shape = tuple(int(n) for n in entry["shape"])
        if described and type(entry["dtype"]) is str and entry["dtype"] in NAMES and all(n >= 0 for n in shape):
            arrays[key] = _described_array(zf, key, entry, shape)
            continue
        import numpy as np

        dtype = np.dtype(entry["dtype"])
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        info = zf.getinfo(entry["path"])
        if info.file_size != expected:
            raise ValueError(
                f"supporting array {key!r} at {entry['path']} has {info.file_size} bytes, "
                f"expected {expected} for shape {shape} and dtype {dtype}"
            )
        arrays[key] = np.frombuffer(zf.read(entry["path"]), dtype=dtype).reshape(shape)
    return arrays


def _described_array(zf: zipfile.ZipFile, key: str, entry: dict[str, Any], shape: tuple[int, ...]) -> ArrayRef:
    itemsize = CODES[NAMES[entry["dtype"]]][1]
    expected = math.prod(shape) * itemsize
    info = zf.getinfo(entry["path"])
    if info.file_size != expected:
        raise ValueError(
            f"supporting array {key!r} at {entry['path']} has {info.file_size} bytes, "
            f"expected {expected} for shape {shape} and dtype {entry['dtype']}"
        )
    return ArrayRef.from_bytes(zf.read(entry["path"]), entry["dtype"], shape)


def supporting_arrays_paths(directory: str, arrays: dict[str, Any] | None) -> dict[str, Any]:
    """The ``supporting_arrays_paths`` description anemoi-utils writes for ``arrays``."""
    if not arrays:
        return {}
    return {key: _describe(f"{directory}/{FOLDER}", key, value) for key, value in arrays.items()}


def _describe(directory: str, key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: _describe(f"{directory}/{key}", k, v) for k, v in value.items()}
    # A list, not a tuple: this is what json.dumps makes of anemoi-utils' tuple,
    # so documents compare equal before and after a round trip.
    return {"path": f"{directory}/{key}.numpy", "shape": list(value.shape), "dtype": str(value.dtype)}


def iter_array_entries(
    arrays: dict[str, Any], paths: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    """``(archive path, array)`` for every supporting array, in insertion order."""
    for key, value in arrays.items():
        entry = paths[key]
        if isinstance(value, dict):
            yield from iter_array_entries(value, entry)
        else:
            yield entry["path"], value


def with_array_paths(metadata: dict[str, Any], directory: str, arrays: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``metadata`` whose ``supporting_arrays_paths`` describes ``arrays``."""
    result = dict(metadata)
    result["supporting_arrays_paths"] = supporting_arrays_paths(directory, arrays)
    return result


def embedded_entries(
    directory: str,
    metadata: dict[str, Any],
    arrays: dict[str, Any] | None = None,
    *,
    name: str = DEFAULT_NAME,
) -> tuple[dict[str, Any], Iterator[tuple[str, bytes]]]:
    """What :func:`write_embedded` appends, for writers that lay out the archive themselves.

    Args:
        directory: the archive's top-level folder.
        metadata: JSON-serialisable metadata (``supporting_arrays_paths`` is replaced).
        arrays: supporting numpy arrays, possibly nested per dataset.
        name: ``anemoi.json``, or ``ai-models.json`` to imitate older files.

    Returns:
        The metadata as written (with ``supporting_arrays_paths``), and the
        archive entries ``(path, bytes)`` in the order anemoi-utils writes them:
        the metadata JSON first, then each supporting array's raw bytes (made
        one at a time as the iterator is consumed).
    """
    written = with_array_paths(metadata, directory, arrays)

    def entries() -> Iterator[tuple[str, bytes]]:
        import numpy as np

        yield f"{directory}/{FOLDER}/{name}", json.dumps(written).encode()
        for entry, array in iter_array_entries(arrays or {}, written["supporting_arrays_paths"]):
            yield entry, np.ascontiguousarray(array).tobytes()

    return written, entries()


def safetensors_array_name(keys: list[str]) -> str:
    """The tensor name of a supporting array in a safetensors file: the prefix + its key path."""
    return SAFETENSORS_ARRAY_PREFIX + "/".join(keys)


def safetensors_array_keys(name: str) -> list[str] | None:
    """The key path (``["latitudes"]``, ``["era5", "latitudes"]``) of a supporting array's tensor name.

    Returns:
        ``None`` for a tensor that is not a supporting array.
    """
    if not name.startswith(SAFETENSORS_ARRAY_PREFIX) or len(name) == len(SAFETENSORS_ARRAY_PREFIX):
        return None
    return name[len(SAFETENSORS_ARRAY_PREFIX) :].split("/")


def safetensors_arrays(arrays: dict[str, Any] | None) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The supporting arrays as safetensors tensors, and the ``supporting_arrays_paths`` describing them.

    The safetensors layout of :data:`SAFETENSORS_ARRAY_PREFIX`: each array is a
    tensor named by :func:`safetensors_array_name`, described as in a zip archive
    by ``{"path": <tensor name>, "shape", "dtype"}``, nested per dataset.

    Returns:
        ``[(tensor name, C-contiguous little-endian array), ...]`` in insertion
        order, and the ``supporting_arrays_paths`` dict.
    """
    import numpy as np

    tensors: list[tuple[str, Any]] = []

    def describe(node: dict[str, Any], keys: list[str]) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, dict):
                paths[key] = describe(value, [*keys, key])
                continue
            array = np.ascontiguousarray(value)
            if array.dtype.byteorder == ">":  # safetensors is little-endian
                array = array.astype(array.dtype.newbyteorder("<"))
            name = safetensors_array_name([*keys, key])
            tensors.append((name, array))
            paths[key] = {"path": name, "shape": list(array.shape), "dtype": str(array.dtype)}
        return paths

    return tensors, describe(arrays or {}, [])


def write_embedded(
    zf: zipfile.ZipFile,
    directory: str,
    metadata: dict[str, Any],
    arrays: dict[str, Any] | None = None,
    *,
    name: str = DEFAULT_NAME,
    date_time: tuple[int, int, int, int, int, int] | None = None,
) -> dict[str, Any]:
    """Append the metadata JSON and supporting arrays to an archive open for writing.

    Args:
        zf: an archive opened with mode ``"w"`` or ``"a"``.
        directory: the archive's top-level folder.
        metadata: JSON-serialisable metadata (``supporting_arrays_paths`` is replaced).
        arrays: supporting numpy arrays, possibly nested per dataset.
        name: ``anemoi.json``, or ``ai-models.json`` to imitate older files.
        date_time: a fixed timestamp for the entries, for deterministic output.

    Returns:
        The metadata as written (with ``supporting_arrays_paths``).
    """
    written, entries = embedded_entries(directory, metadata, arrays, name=name)
    for entry, data in entries:
        if date_time is None:
            zf.writestr(entry, data)
        else:
            import zipfile  # only the writers need it: inspect does not import it (issue 16)

            zf.writestr(zipfile.ZipInfo(entry, date_time=date_time), data)
    return written
