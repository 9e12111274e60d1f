"""Writing the output in its format, and verifying it: what :func:`.write._convert_open` runs between opening the temporaries and publishing them.

Each writer returns the CRC-32 of the tensors it wrote, the metadata written and the entries
laid out; :func:`_verify` reopens the file and checks it against them, while the output's hash
catches up with the copy (:class:`.OutputFile`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.conversion.plan import _Failure

#: The supporting arrays and the model inputs, made when a writer asks for them (numpy).
Extras = Callable[[], tuple[dict[str, Any], Any]]
#: The metadata to embed, once the source's hash is known.
MetadataOf = Callable[[], dict[str, Any]]
#: What a writer wrote: each tensor's CRC-32 by name, the metadata embedded, the entries laid out.
Written = tuple[dict[str, int], dict[str, Any], list[Any]]

def _write_anemoi(out: Any, target: Path, entries: list[Any], extras: Extras, metadata_of: MetadataOf) -> Written:
    from anemoi_ckpt_nb.conversion.inputs import zip_entries
    from anemoi_ckpt_nb.conversion.writers import TorchZipWriter
    from anemoi_ckpt_nb.read import embedded

    # torch names the top folder after the file: the final name, not the temporary one.
    top = target.stem
    writer = TorchZipWriter(out, top)
    crcs = writer.add_tensors(entries)
    # The weights go to disk while the source hash is finished (the final fsync then has
    # little left to write).
    out.start_sync()
    # The metadata comes after the weights, where save_metadata appends it (and the source
    # hash it holds has had the whole copy to be computed).
    arrays, inputs = extras()
    metadata, extra = embedded.embedded_entries(top, metadata_of(), arrays)
    for entry, data in extra:
        writer.add_bytes(entry.removeprefix(top + "/"), data)
    for entry, data in zip_entries(inputs):
        writer.add_bytes(entry, data)
    writer.finish()
    # The supporting arrays are checked by zipfile's own CRCs when the verification reads them.
    return crcs, metadata, entries


def _write_safetensors(out: Any, target: Path, entries: list[Any], extras: Extras, metadata_of: MetadataOf) -> Written:
    from anemoi_ckpt_nb.conversion.inputs import safetensors_entries, safetensors_header
    from anemoi_ckpt_nb.conversion.streams import TensorEntry
    from anemoi_ckpt_nb.conversion.writers import SafetensorsWriter, safetensors_order
    from anemoi_ckpt_nb.read import embedded

    arrays, inputs = extras()
    tensors, paths = embedded.safetensors_arrays(arrays)
    array_entries = [
        TensorEntry(name, array.dtype.name, tuple(array.shape), array.nbytes, _array_chunks(array)) for name, array in tensors
    ]
    # The metadata is in the header, which comes first: the source hash must be known now.
    metadata = dict(metadata_of())
    metadata["supporting_arrays_paths"] = paths
    ordered = safetensors_order(entries + array_entries + safetensors_entries(inputs, _array_chunks))
    try:
        header = {embedded.SAFETENSORS_METADATA_KEY: json.dumps(metadata), **safetensors_header(inputs)}
        writer = SafetensorsWriter(ordered, header)
    except ValueError as error:
        raise _Failure(str(error), hint="use --format anemoi for this dtype") from error
    crcs = writer.write(out)
    return crcs, metadata, ordered


def _array_chunks(array: Any) -> Callable[[], list[Any]]:
    """A supporting array's bytes as one chunk (they are small: a few values per grid point)."""
    import numpy as np

    data = array.reshape(-1).view(np.uint8)
    return lambda: [data] if data.nbytes else []


def _verify(
    path: Path,
    format: str,
    entries: list[Any],
    crcs: dict[str, int],
    metadata: dict[str, Any],
    inputs: Any,
    out: Any,
    *,
    recheck: Callable[[], None],
) -> str:
    """Reopen the output and check it against the source, then against its bytes as read back (:class:`.OutputFile`).

    Returns:
        The sha256 of the file, as it reads back.

    Raises:
        _Failure: it differs (``recheck()`` first raises its own failure if the source is at fault).
    """
    from anemoi_ckpt_nb.conversion.inputs import safetensors_header
    from anemoi_ckpt_nb.conversion.verify import VerificationError, verify_safetensors, verify_torch_zip
    from anemoi_ckpt_nb.read import embedded

    hashed: list[str] = []

    def read_back() -> dict[tuple[int, int], int]:
        """Wait for the read-back: asked for once the file's structure is checked, meanwhile."""
        sha256, crcs_back = out.finish()
        hashed.append(sha256)
        return crcs_back

    try:
        if format == "anemoi":
            verify_torch_zip(path, entries, crcs, metadata, inputs=inputs, read_back=read_back)
        else:
            header = {embedded.SAFETENSORS_METADATA_KEY: json.dumps(metadata), **safetensors_header(inputs)}
            verify_safetensors(path, entries, crcs, header, inputs=inputs, read_back=read_back)
        if not hashed:  # both verifiers ask for it; if one did not, the file is still read back whole
            read_back()
    except VerificationError as error:
        recheck()
        raise _Failure(f"verification failed: {error}", hint="the disk or memory may be faulty; try again") from error
    return hashed[0]
