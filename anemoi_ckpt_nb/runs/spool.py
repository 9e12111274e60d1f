"""The spool: checkpoints captured where they are saved, registered later by ``anemoi-ckpt sync``.

Compute nodes have no network, so the training callback (:mod:`anemoi_ckpt_nb.training`)
never talks to the catalogue: it captures each checkpoint anemoi-training saves into a spool
folder on the shared file system, and ``anemoi-ckpt sync`` (on a login node, or in a job that
runs after training) registers what the spool holds (:mod:`.sync`). Layout::

    spool.json              what the folder is, and the catalogue it feeds (or null)
    entries/<key>.json      one per captured file, created once, only after its bytes are in place
    files/<key>/<name>      the captured bytes (below); without an entry after a crash: an orphan
    done/<key>.json         written by sync once the file is registered
    failed/<key>.json       why sync could not register it yet (rewritten on each try)
    claims/<key>.json       a sync at work on the entry, with its lease

Keys sort in capture order (``<time ns>-<random>``), which is lineage order: a parent is saved,
and captured, before its children. The small documents go through
:class:`~anemoi_ckpt_nb.storage.local.LocalStorage`: written aside and renamed, create-only or
compare-and-swap, so a crash leaves an entry whole or absent and syncs running at once agree.

How bytes are captured, and why so: :mod:`.capture`.

Only the standard library and :mod:`anemoi_ckpt_nb.storage` are imported: this module runs
inside the training process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import time
import uuid as _uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import ConflictError, ObjectNotFoundError, SpoolError, StorageError
from anemoi_ckpt_nb.storage.local import LocalStorage

FORMAT = "anemoi-ckpt-spool"
VERSION = 1
DESCRIPTOR = "spool.json"
ENTRIES, FILES, DONE, FAILED, CLAIMS = "entries/", "files/", "done/", "failed/", "claims/"

_KEY_LOCK = threading.Lock()
_last_ns = 0


def new_key() -> str:
    """A key that sorts after every key this process made before (and by time across processes)."""
    global _last_ns
    with _KEY_LOCK:
        now = max(time.time_ns(), _last_ns + 1)
        _last_ns = now
    return f"{now:020d}-{_uuid.uuid4().hex[:8]}"


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Entry:
    """One captured file, as ``entries/<key>.json`` describes it."""

    key: str
    #: The captured file, relative to the spool folder.
    file: str
    #: Where anemoi-training saved it, and on which host.
    source: str
    host: str
    method: str
    size: int
    mtime_ns: int
    #: Known when the file was copied (hashed while copied); None for a clone or a link.
    sha256: str | None = None
    run_id: str | None = None
    #: ``saved`` (a checkpoint the run saved) or ``start`` (the file the run started from).
    role: str = "saved"
    #: One id per training process: which captures came from the same session.
    session: str | None = None
    #: Explicit parent links: ``{"entry": <key>, "relation": ...}`` or ``{"uuid": ..., "relation": ...}``.
    parents: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    captured_at: str = ""

    def to_json(self) -> bytes:
        return json.dumps({"format": f"{FORMAT}-entry", "version": VERSION, **self.__dict__}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Entry:
        try:
            doc = json.loads(data)
            if doc.get("format") != f"{FORMAT}-entry" or int(doc.get("version", 0)) > VERSION:
                raise ValueError(f"not a version {VERSION} spool entry")
            known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
            return cls(**known)
        except (ValueError, TypeError, AttributeError) as exc:
            raise SpoolError(f"{where}: unreadable spool entry ({exc})",
                             hint="move it aside; the other entries are not affected") from None


@dataclass
class Orphan:
    """Captured bytes in ``files/<key>/`` whose entry was never written."""

    key: str
    path: Path
    size: int
    #: Seconds since anything in the folder last changed.
    age: float
    names: list[str]


@dataclass
class SpoolSummary:
    """What :meth:`Spool.summary` found."""

    path: str
    catalogue: str | None
    done: int
    pending: int
    #: Pending entries a sync tried and could not register yet.
    failed: int
    #: Bytes of the pending entries' files (shared with the run folder when hard-linked).
    pending_bytes: int
    #: When the oldest pending entry was captured (ISO 8601, UTC), or None.
    oldest_pending: str | None
    orphans: int
    orphan_bytes: int


class Spool:
    """A spool folder: capture files into it, read its entries, mark them done.

    Args:
        path: The folder (created, with its ``spool.json``, on the first capture).
        catalogue: The catalogue its entries are for, recorded in ``spool.json`` when it is created.
    """

    def __init__(self, path: str | os.PathLike, *, catalogue: str | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.catalogue = catalogue
        self.storage = LocalStorage(self.path)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    @classmethod
    def open(cls, path: str | os.PathLike) -> Spool:
        """An existing spool; raise :class:`SpoolError` if ``path`` is none."""
        spool = cls.open_if_exists(path)
        if spool is None:
            raise SpoolError(f"{Path(path).expanduser().absolute()}: not a spool (no spool.json)",
                             hint="pass the folder the training callback wrote to (its `spool:` option)")
        return spool

    @classmethod
    def open_if_exists(cls, path: str | os.PathLike) -> Spool | None:
        """The spool at ``path``, or None if there is no ``spool.json`` there (nothing is created).

        Raises:
            SpoolError: ``spool.json`` is there but unreadable, or not a spool this version reads.
        """
        spool = cls(path)
        try:
            data, _ = spool.storage.get(DESCRIPTOR)
            doc = json.loads(data)
        except ObjectNotFoundError:
            return None
        except (ValueError, StorageError) as exc:
            raise SpoolError(f"{spool.path}: unreadable spool.json ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or int(doc.get("version", 0)) > VERSION:
            raise SpoolError(f"{spool.path}: spool.json is not a version {VERSION} anemoi-ckpt spool",
                             hint="upgrade anemoi-ckpt-nb, or pass the right folder")
        spool.catalogue = doc.get("catalogue")
        return spool

    def ensure(self) -> None:
        """Create the folder and its ``spool.json`` if needed (an existing one is kept)."""
        if os.path.isfile(self.path / DESCRIPTOR):
            return  # the usual case, on every capture: a stat, not a fsynced file written and refused
        doc = {"format": FORMAT, "version": VERSION, "catalogue": self.catalogue, "created_at": utcnow()}
        with contextlib.suppress(ConflictError):
            self.storage.put(DESCRIPTOR, json.dumps(doc, indent=1).encode(), if_absent=True)

    # --- reading ---------------------------------------------------------------------

    def keys(self, prefix: str) -> list[str]:
        return sorted(info.key[len(prefix):-len(".json")] for info in self.storage.list(prefix)
                      if info.key.endswith(".json"))

    def entries(self) -> list[Entry]:
        """Every entry, in capture order."""
        return [self.entry(key) for key in self.keys(ENTRIES)]

    def entry(self, key: str) -> Entry:
        data, _ = self.storage.get(f"{ENTRIES}{key}.json")
        return Entry.from_json(data, str(self.path / ENTRIES / f"{key}.json"))

    def pending(self) -> list[Entry]:
        """Entries not registered yet, in capture order."""
        done = set(self.keys(DONE))
        return [self.entry(key) for key in self.keys(ENTRIES) if key not in done]

    def status(self) -> list[tuple[Entry, str, str]]:
        """Every entry with its state: ``("done", record uuid)``, ``("failed", why)`` or ``("pending", "")``."""
        done, failed = set(self.keys(DONE)), set(self.keys(FAILED))
        found = []
        for entry in self.entries():
            if entry.key in done:
                found.append((entry, "done", (self.read_doc(DONE, entry.key) or {}).get("uuid", "")))
            elif entry.key in failed:
                found.append((entry, "failed", (self.read_doc(FAILED, entry.key) or {}).get("error", "")))
            else:
                found.append((entry, "pending", ""))
        return found

    def summary(self) -> SpoolSummary:
        """What the spool holds: entries by state, the bytes still to register, the oldest, orphans."""
        done, failed = set(self.keys(DONE)), set(self.keys(FAILED))
        pending = [self.entry(key) for key in self.keys(ENTRIES) if key not in done]
        orphans = self.orphans()
        return SpoolSummary(
            path=str(self.path), catalogue=self.catalogue, done=len(done), pending=len(pending),
            failed=sum(e.key in failed for e in pending), pending_bytes=sum(e.size for e in pending),
            oldest_pending=min((e.captured_at for e in pending), default=None),
            orphans=len(orphans), orphan_bytes=sum(o.size for o in orphans),
        )

    def orphans(self) -> list[Orphan]:
        """Captured bytes without an entry: a capture under way, or one a crash cut short.

        Its age is the time since anything in its folder last changed: a copy under way keeps
        its ``.part`` file young.
        """
        entries = set(self.keys(ENTRIES))
        try:
            folders = [p for p in (self.path / FILES).iterdir() if p.is_dir() and p.name not in entries]
        except FileNotFoundError:
            return []
        now, found = time.time(), []
        for folder in sorted(folders):
            try:
                children = list(folder.iterdir())
                stats = [folder.stat(), *(child.stat() for child in children)]
            except FileNotFoundError:
                continue  # its entry was written, or it was released, meanwhile
            found.append(Orphan(key=folder.name, path=folder, size=sum(st.st_size for st in stats[1:]),
                                age=max(0.0, now - max(st.st_mtime for st in stats)),
                                names=sorted(child.name for child in children)))
        return found

    def remove_orphan(self, orphan: Orphan) -> bool:
        """Remove an orphan's bytes unless its entry has appeared; True if removed."""
        if self.storage.exists(f"{ENTRIES}{orphan.key}.json"):
            return False
        self.release_files(orphan.key)
        return True

    def is_done(self, key: str) -> bool:
        return self.storage.exists(f"{DONE}{key}.json")

    def read_doc(self, prefix: str, key: str) -> dict[str, Any] | None:
        try:
            data, _ = self.storage.get(f"{prefix}{key}.json")
            return json.loads(data)
        except (ObjectNotFoundError, ValueError):
            return None

    # --- what sync writes ------------------------------------------------------------

    def mark_done(self, entry: Entry, *, uuid: str, created: bool, keep_file: bool = False) -> None:
        """Record that the entry is registered (as ``uuid``) and let its captured bytes go."""
        doc = {"key": entry.key, "uuid": uuid, "created": created, "synced_at": utcnow(),
               "by": f"{socket.gethostname()}:{os.getpid()}"}
        with contextlib.suppress(ConflictError):  # another sync finished it first: its marker stands
            self.storage.put(f"{DONE}{entry.key}.json", json.dumps(doc, indent=1).encode(), if_absent=True)
        with contextlib.suppress(ObjectNotFoundError):
            self.storage.delete(f"{FAILED}{entry.key}.json")
        if not keep_file:
            self.release_files(entry.key)

    def mark_failed(self, entry: Entry, error: str) -> None:
        previous = self.read_doc(FAILED, entry.key) or {}
        doc = {"key": entry.key, "error": error, "at": utcnow(), "tries": int(previous.get("tries", 0)) + 1}
        self.storage.put(f"{FAILED}{entry.key}.json", json.dumps(doc, indent=1).encode())

    def release_files(self, key: str) -> None:
        folder = self.path / FILES / key
        for child in folder.glob("*"):  # a `.<name>.part` of a copy cut short too
            child.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()

    @contextlib.contextmanager
    def claim(self, key: str, *, lease: float) -> Iterator[bool]:
        """Hold the entry for one sync; yields False if another live sync holds it.

        A claim is stale, and taken over, once its lease has run out or when its
        process is gone from this host.
        """
        name = f"{CLAIMS}{key}.json"
        token = _uuid.uuid4().hex
        doc = json.dumps({"token": token, "host": socket.gethostname(), "pid": os.getpid(),
                          "until": time.time() + lease}).encode()
        try:
            self.storage.put(name, doc, if_absent=True)
        except ConflictError:
            try:
                data, etag = self.storage.get(name)
                held = json.loads(data)
            except ObjectNotFoundError:
                held, etag = None, None
            except ValueError:
                held = {}
            if held is None:
                yield False  # released meanwhile: another sync has just done it, or will retry
                return
            if not _stale(held):
                yield False
                return
            try:
                self.storage.replace(name, doc, etag=etag)
            except (ConflictError, ObjectNotFoundError):
                yield False
                return
        try:
            yield True
        finally:
            with contextlib.suppress(ObjectNotFoundError, ConflictError, ValueError):
                data, _ = self.storage.get(name)
                if json.loads(data).get("token") == token:
                    self.storage.delete(name)


def _stale(claim: dict[str, Any]) -> bool:
    if not isinstance(claim, dict) or float(claim.get("until", 0)) < time.time():
        return True
    if claim.get("host") == socket.gethostname():
        try:
            os.kill(int(claim.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OSError):
            return False
    return False
