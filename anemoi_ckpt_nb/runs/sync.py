"""``anemoi-ckpt sync``: register what a spool holds, parents first, once, resumably.

Each pending entry of the spool (:mod:`.spool`) is registered on its own, in capture order,
which is lineage order: a parent is saved and captured before its children. An entry whose
parent is not registered yet (captured out of order, or by a sync still at work) waits for the
next pass; passes repeat while they make progress. Every entry's outcome is written as soon as
it is known (``done/`` or ``failed/``), so a sync that is killed loses nothing: the next one
continues with what is left.

Registering is idempotent (records are created once, blobs are content-addressed, tags are
compare-and-swapped), so two syncs of one spool register nothing twice; a claim with a lease
(``claims/<key>.json``) keeps them from uploading the same file twice meanwhile.

A training process killed while it captured a file (a job's time limit, a node lost) leaves
bytes without an entry in ``files/<key>/``: an orphan. Nothing can register them (no entry says
what they are, and a copy cut short is partial), so sync removes an orphan once nothing in its
folder has changed for ``orphan_age`` (a capture under way writes all the time, or gets its
entry within moments); younger ones are reported and kept.

A catalogue that cannot be reached (the connection refused, timed out or lost) stops the sync at
the first entry it fails: every other entry would wait for the same time-outs and fail the same
way. That entry is not marked failed (nothing is wrong with it); all stay pending for the next
sync, and the report says why it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anemoi_ckpt_nb.errors import (
    CkptError,
    MissingParentError,
    OfflineError,
    SpoolError,
    StorageUnreachableError,
    describe_error,
)
from anemoi_ckpt_nb.runs.spool import DONE, ENTRIES, Entry, Orphan, Spool

#: How long a sync may hold an entry before another one takes it over (an upload of tens of
#: gigabytes fits); a sync that dies on this host is noticed at once.
DEFAULT_LEASE = 6 * 3600.0
#: How long captured bytes without an entry stay unchanged before sync removes them.
DEFAULT_ORPHAN_AGE = 24 * 3600.0


@dataclass
class SyncReport:
    """What one sync did, entry by entry (keys of the spool)."""

    #: key -> record uuid, registered by this sync.
    registered: dict[str, str] = field(default_factory=dict)
    #: key -> record uuid, found registered already (by an earlier or a concurrent sync, or by hand).
    already: dict[str, str] = field(default_factory=dict)
    #: key -> why it waits: a parent that is not registered.
    waiting: dict[str, str] = field(default_factory=dict)
    #: key -> the error that stopped it.
    failed: dict[str, str] = field(default_factory=dict)
    #: Keys another sync is working on.
    busy: list[str] = field(default_factory=list)
    #: A dry run: nothing was registered or removed; ``pending`` and ``orphans_removed`` say what would be.
    dry_run: bool = False
    #: Keys of the entries a dry run would register.
    pending: list[str] = field(default_factory=list)
    #: Orphans older than ``orphan_age``, removed (or, in a dry run, to be removed).
    orphans_removed: list[Orphan] = field(default_factory=list)
    #: Orphans kept: younger than ``orphan_age``, maybe a capture under way.
    orphans_kept: list[Orphan] = field(default_factory=list)
    #: Why the sync stopped before the end (the catalogue could not be reached); empty if it did not.
    stopped: str = ""
    #: When it stopped: the keys of the entries it had not registered yet (they stay pending).
    left: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.waiting or self.failed or self.stopped)


class _Wait(Exception):
    """The entry's parent is not registered yet."""


class _Unreachable(Exception):
    """The catalogue cannot be reached: no other entry can be registered now."""


def sync_spool(
    store: Any,
    spool: Spool,
    *,
    allow_missing_parents: bool = False,
    keep_files: bool = False,
    lease: float = DEFAULT_LEASE,
    orphan_age: float = DEFAULT_ORPHAN_AGE,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    on_entry: Callable[[Entry, str, str], None] | None = None,
) -> SyncReport:
    """Register every pending entry of ``spool`` into the catalogue ``store``.

    Args:
        store: The catalogue (a :class:`~anemoi_ckpt_nb.catalogue.store.CatalogueStore`).
        spool: The spool (:meth:`Spool.open`).
        allow_missing_parents: Register a file whose parent is in neither the catalogue nor
            the spool (the link is kept); by default it waits, reported.
        keep_files: Keep the captured bytes of registered entries (by default they are removed:
            the catalogue holds the file now).
        lease: Seconds a claim holds an entry against other syncs.
        orphan_age: Seconds captured bytes without an entry stay unchanged before they are removed.
        dry_run: Register nothing and remove nothing; report what would be done.
        progress: Called with byte counts while hashing and uploading.
        on_entry: Called as ``on_entry(entry, outcome, detail)`` with outcome ``registered``,
            ``already``, ``failed``, ``waiting`` or ``busy``; detail is the record uuid or the reason.

    Returns:
        The :class:`SyncReport`.
    """
    from anemoi_ckpt_nb.compat.environment import capture_environment

    report = SyncReport(dry_run=dry_run)
    for orphan in spool.orphans():
        if orphan.age < orphan_age:
            report.orphans_kept.append(orphan)
        elif dry_run or spool.remove_orphan(orphan):
            report.orphans_removed.append(orphan)
    if dry_run:
        report.pending = [entry.key for entry in spool.pending()]
        return report
    environment = capture_environment()
    todo = spool.pending()
    waiting: dict[str, str] = {}
    while todo:
        later: list[Entry] = []
        for index, entry in enumerate(todo):
            try:
                outcome, detail = _sync_one(store, spool, entry, allow_missing_parents=allow_missing_parents,
                                            keep_files=keep_files, lease=lease, progress=progress,
                                            environment=environment)
            except _Wait as why:
                waiting[entry.key] = str(why)
                later.append(entry)
                continue
            except _Unreachable as why:
                report.stopped = str(why)
                # This one, those not tried yet, and those found waiting for a parent earlier in the pass.
                report.left = [e.key for e in (*todo[index:], *later)]
                return report
            waiting.pop(entry.key, None)
            if outcome == "skip":
                continue
            if outcome == "busy":
                report.busy.append(entry.key)
            else:
                getattr(report, outcome)[entry.key] = detail
            if on_entry is not None:
                on_entry(entry, outcome, detail)
        if len(later) == len(todo):  # no progress in a whole pass
            break
        todo = later
    for entry in todo:
        if entry.key in waiting:
            report.waiting[entry.key] = waiting[entry.key]
            spool.mark_failed(entry, waiting[entry.key])
            if on_entry is not None:
                on_entry(entry, "waiting", waiting[entry.key])
    return report


def _sync_one(store: Any, spool: Spool, entry: Entry, *, allow_missing_parents: bool, keep_files: bool,
              lease: float, progress: Callable[[int], None] | None, environment: Any) -> tuple[str, str]:
    from anemoi_ckpt_nb.catalogue.register import register_paths
    from anemoi_ckpt_nb.catalogue.schema import SourceLocation

    if spool.is_done(entry.key):
        return "skip", ""
    with spool.claim(entry.key, lease=lease) as mine:
        if not mine:
            return "busy", "another sync holds it"
        if spool.is_done(entry.key):  # finished by another sync between the check and the claim
            return "skip", ""
        try:
            path = _captured(spool, entry)
            parents = _explicit_parents(spool, entry, allow_missing_parents=allow_missing_parents)
            (registration,) = register_paths(
                store, [path], tags=entry.tags, parents=parents, allow_missing_parents=allow_missing_parents,
                progress=progress, environment=environment, sha256=entry.sha256,
                source=SourceLocation(host=entry.host, path=entry.source),
            )
        except MissingParentError as error:
            raise _Wait(describe_error(error)) from None
        except (StorageUnreachableError, OfflineError) as error:
            raise _Unreachable(describe_error(error)) from None
        except (CkptError, OSError) as error:
            message = describe_error(error)
            spool.mark_failed(entry, message)
            return "failed", message
        spool.mark_done(entry, uuid=registration.record.uuid, created=registration.created, keep_file=keep_files)
        return ("registered" if registration.created else "already"), registration.record.uuid


def _captured(spool: Spool, entry: Entry):
    """The captured file, checked to be what was captured."""
    path = spool.path / entry.file
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SpoolError(f"{path}: the captured bytes of {entry.source} are missing",
                         hint="they were removed by hand; register the file itself if it still exists") from None
    if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
        raise SpoolError(f"{path}: the capture of {entry.source} changed after it was taken "
                         f"({entry.method}: the file was rewritten in place); not registered",
                         hint="put the spool on a file system with reflinks, or let the callback copy this file")
    return path


def _explicit_parents(spool: Spool, entry: Entry, *, allow_missing_parents: bool) -> list[tuple[str, str]]:
    """The entry's explicit links as ``(uuid, relation)``; an ``entry`` link needs that entry registered."""
    links = []
    for parent in entry.parents:
        relation = parent.get("relation", "forked-from")
        if parent.get("uuid"):
            links.append((parent["uuid"], relation))
            continue
        key = parent.get("entry", "")
        done = spool.read_doc(DONE, key)
        if done is not None and done.get("uuid"):
            links.append((done["uuid"], relation))
        elif spool.storage.exists(f"{ENTRIES}{key}.json"):
            raise _Wait(f"its parent, spool entry {key}, is not registered yet")
        elif not allow_missing_parents:
            raise SpoolError(f"{spool.path / ENTRIES / (entry.key + '.json')}: its parent entry {key} is not in the spool",
                             hint="register the parent by hand, then sync with --allow-missing-parents")
    return links
