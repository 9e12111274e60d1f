"""The zip archive of ``torch.save`` (torch >= 1.6): its entry names, its pickle entry and where each storage's bytes start.

``<top>/data.pkl`` is the pickle; each storage is an uncompressed entry ``<top>/data/<key>``,
found through the pickle's persistent ids.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import CheckpointReadError, CorruptCheckpointError
from anemoi_ckpt_nb.read.torchstorages import storage_id
from anemoi_ckpt_nb.read.zipdir import ZipEntryError, data_start

ZIP_MAGIC = b"PK\x03\x04"
ZIP_STORED = 0
EMPTY_ZIP_MAGIC = b"PK\x05\x06"


def check_names(names: list[str], top: str, source: str) -> None:
    """Refuse an archive that torch would read differently from us.

    torch's zip reader takes the archive's folder from its first entry and compares names
    ignoring case, taking whichever of two equal names its search meets first; we read
    ``<top>/data.pkl`` exactly. Names equal but for case (``DATA.PKL`` beside ``data.pkl``),
    repeated names, or a first entry outside ``top`` would make one file mean two things.

    Raises:
        CorruptCheckpointError: any of these.
    """
    if names and names[0].split("/", 1)[0] != top:
        raise CorruptCheckpointError(
            source, f"its first entry {names[0]!r} is outside the folder {top!r} of data.pkl, where torch would look"
        )
    seen: dict[str, str] = {}
    for name in names:
        folded = name.casefold()
        if folded in seen:
            what = "twice" if seen[folded] == name else f"as {seen[folded]!r} and {name!r}, which differ only in case"
            raise CorruptCheckpointError(
                source, f"the archive names one entry {what}: torch and this reader could read different ones",
                hint="the file was not written by torch.save; do not use it unless you trust its origin",
            )
        seen[folded] = name



def zip_errors() -> tuple[type[Exception], ...]:
    """``zipfile.BadZipFile`` once ``zipfile`` is imported (only it raises that): an archive :mod:`.zipdir` did not read."""
    zipfile = sys.modules.get("zipfile")
    return (zipfile.BadZipFile,) if zipfile is not None else ()


def read_entry(zf: Any, name: str, limit: int, source: str) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise CheckpointReadError(
            source,
            f"{name} is {info.file_size} bytes, over the limit of {limit} for a pickle read into memory",
            hint="raise it with open_checkpoint(path, max_pickle_bytes=...) if you trust the file",
        )
    try:
        with zf.open(info) as fp:
            # Read at most limit + 1 bytes whatever the header claims: a compressed entry can lie.
            data = fp.read(limit + 1)
    except (*zip_errors(), EOFError, OSError, ValueError) as error:  # zipdir.ZipEntryError is a ValueError
        raise CorruptCheckpointError(source, f"cannot read {name} ({error})") from None
    if len(data) > limit:
        raise CheckpointReadError(source, f"{name} is over the limit of {limit} bytes for a pickle read into memory")
    return data


def zip_persistent_load(zf: Any, top: str, storages: Any):
    source = storages.source

    def persistent_load(pid: Any) -> Any:
        marker, key, location, numel, _ = storage_id(pid, source)
        nbytes = numel * marker.dtype.itemsize
        name = f"{top}/data/{key}"
        try:
            info = zf.getinfo(name)
        except KeyError:
            raise CorruptCheckpointError(source, f"the pickle refers to storage {key}, which the archive lacks") from None
        if info.file_size != nbytes:
            raise CorruptCheckpointError(
                source, f"storage {key} has {info.file_size} bytes, the pickle expects {nbytes}"
            )
        if info.compress_type != ZIP_STORED:
            # torch.save never compresses; a re-zipped file is read into memory instead of mapped.
            return storages.from_bytes(key, marker.dtype, read_entry(zf, name, nbytes, source), location)
        return storages.typed(key, marker.dtype, nbytes, data_offset(zf, info, source), location, crc32=info.CRC)

    return persistent_load


def data_offset(zf: Any, info: Any, source: str) -> int:
    """Where an uncompressed entry's bytes start: after its local header, name and extra field
    (:func:`~.zipdir.data_start`, for the archives of ``zipfile`` and of :mod:`.zipdir` alike)."""
    fp = zf.fp
    assert fp is not None
    try:
        return data_start(fp, info.header_offset)
    except ZipEntryError:
        raise CorruptCheckpointError(source, f"bad local header for {info.filename}: the archive is damaged") from None
