"""Keys of the catalogue's objects on storage, and how documents are serialised.

One place names every key, so the layout in DESIGN.md ("The catalogue on
storage") can be checked against a single file.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import uuid as _uuid
from typing import Any, TypeVar

from pydantic import BaseModel

from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, Who

DESCRIPTOR = "catalogue.json"
RECORDS = "records/"
TAGS = "tags/"
#: Where each checkpoint's copies are (anemoi_ckpt_nb.sites.locations), one document per uuid.
LOCATIONS = "locations/"
BLOBS = "blobs/sha256/"
#: Run manifests of forks and resumes (written by ``anemoi_ckpt_nb.runs.manifest``).
MANIFESTS = "manifests/"
#: ``aliases/<uuid>.json``: the other uuid a file holds -> the uuid its record is filed under.
ALIASES = "aliases/"
INDEX = "index/"
SNAPSHOT = "index/snapshot.json.gz"
DELTAS = "index/deltas/"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

#: Namespace of the uuid5 given to inference files that share their training file's uuid.
DERIVED_NAMESPACE = _uuid.UUID("6f1c3c1e-6a57-5b1e-9a43-6e656d6f6931")

M = TypeVar("M", bound=BaseModel)


def is_uuid(text: str) -> bool:
    """True if ``text`` is a uuid in its canonical 8-4-4-4-12 hex form."""
    return bool(_UUID.match(text))


def is_sha256(text: object) -> bool:
    """True if ``text`` is a sha256 in lowercase hex, as blob keys spell it."""
    return isinstance(text, str) and bool(_SHA256.match(text))


def is_blob_key(key: object) -> bool:
    """True if ``key`` is ``blobs/sha256/<64 hex>``: the only keys a record may name as its blobs."""
    return isinstance(key, str) and key.startswith(BLOBS) and is_sha256(key[len(BLOBS):])


def is_base_name(name: object) -> bool:
    """True if ``name`` can be a file name inside a folder: no folder part, not ``.``/``..``, no NUL."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def check_record(record: CheckpointRecord, uuid: str, where: str) -> CheckpointRecord:
    """Refuse a record whose keys do not follow the layout (docs/threat-model.md).

    A catalogue is shared: anyone who can write to it can edit a record. Every key
    a record names is checked against the one the layout derives, so that no edit
    can make a reader write, read or delete anything but that checkpoint's objects.

    Args:
        record: The record as read.
        uuid: The uuid of the key it was read from (``records/<uuid>.json``).
        where: The object's URL, for the message.

    Raises:
        SchemaError: the record holds another uuid than its key, a uuid that is not a
            uuid, a sha256 that is not one, blobs other than its own content-addressed
            keys, or a file name that is not a base name.
    """
    from anemoi_ckpt_nb.errors import SchemaError

    problems = []
    if record.uuid != uuid:
        problems.append(f"it holds uuid {record.uuid!r}, not the {uuid} of its key")
    if not is_uuid(record.uuid):
        problems.append(f"its uuid {record.uuid!r} is not a uuid")
    if not is_sha256(record.sha256):
        problems.append(f"its sha256 {record.sha256!r} is not a sha256")
    elif record.blob is not None and record.blob != blob_key(record.sha256):
        problems.append(f"its blob {record.blob!r} is not {blob_key(record.sha256)}")
    if record.metadata_blob is not None and not is_blob_key(record.metadata_blob):
        problems.append(f"its metadata blob {record.metadata_blob!r} is not a blobs/sha256/ key")
    if not is_base_name(record.filename):
        problems.append(f"its file name {record.filename!r} is not a plain file name")
    if problems:
        raise SchemaError(
            f"{where}: refused, the record does not follow the catalogue layout: {'; '.join(problems)}",
            hint="someone edited it by hand; restore it from a backup, or delete it and register the file again",
        )
    return record


def record_key(uuid: str) -> str:
    return f"{RECORDS}{uuid}.json"


def tags_key(uuid: str) -> str:
    return f"{TAGS}{uuid}.json"


def locations_key(uuid: str) -> str:
    return f"{LOCATIONS}{uuid}.json"


def alias_key(uuid: str) -> str:
    return f"{ALIASES}{uuid}.json"


def blob_key(sha256: str) -> str:
    return f"{BLOBS}{sha256}"


def uuid_of_key(key: str) -> str:
    """``records/<uuid>.json`` or ``tags/<uuid>.json`` -> ``<uuid>``."""
    return key.rsplit("/", 1)[-1].removesuffix(".json")


def delta_key(now_ns: int) -> str:
    """A fresh, roughly time-ordered, never-reused delta key."""
    return f"{DELTAS}{now_ns:020d}-{os.urandom(6).hex()}.json"


def derived_uuid(metadata_uuid: str, sha256: str) -> str:
    """The record uuid of an inference file that carries its training file's uuid.

    Deterministic, so registering the same file twice finds the same record.
    """
    return str(_uuid.uuid5(DERIVED_NAMESPACE, f"{metadata_uuid}/inference/{sha256}"))


def dump(model: BaseModel) -> bytes:
    """A stored document: JSON, keys in model order, two-space indent (readable on S3)."""
    return model.model_dump_json(indent=2, exclude_none=False).encode() + b"\n"


def load(model: type[M], data: bytes) -> M:
    return model.model_validate_json(data)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON of plain data: sorted keys, no spaces, so equal content hashes equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def whoami() -> Who:
    """The user and machine doing an operation, as recorded in records and tag history."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (some containers): still record something honest
        user = f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return Who(user=user, host=socket.gethostname())
