"""The registering methods of :class:`~anemoi_ckpt_nb.api.catalogue.Catalogue`: files, several files, whole run folders.

Kept apart so that the catalogue's face stays short; each method delegates to :mod:`anemoi_ckpt_nb.catalogue.register`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from anemoi_ckpt_nb.api.checkpoint import Checkpoint
from anemoi_ckpt_nb.catalogue import register as _register
from anemoi_ckpt_nb.catalogue.schema import ParentLink

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore


@contextlib.contextmanager
def _progress(paths: Sequence[str | os.PathLike], progress: Callable[[int], None] | bool | None, on_registered):
    """``(update, on_registered)`` for register_paths: with ``progress=True`` a byte bar over the
    files (each counts twice: hashed, then stored), the caller's lines printed above it."""
    if progress is not True:
        yield (progress or None), on_registered
        return
    from tqdm.auto import tqdm

    from anemoi_ckpt_nb.storage.progress import progress_bar

    total = 0
    for path in paths:  # as given: a file given twice is read twice
        with contextlib.suppress(OSError):  # register_paths names the file in its own error
            total += 2 * os.stat(path).st_size
    # disable=None: the console bar hides itself when stderr is not a terminal (batch logs stay clean).
    with progress_bar(total, desc="register", disable=None) as update:

        def registered(registration) -> None:
            if on_registered is not None:
                with tqdm.external_write_mode():  # the line above the bar, not through it
                    on_registered(registration)

        yield update, registered


class Registering:
    """Mixed into :class:`~anemoi_ckpt_nb.api.catalogue.Catalogue`, which provides ``_store``."""

    _store: CatalogueStore

    def register(
        self,
        path: str | os.PathLike,
        *,
        name: str | None = None,
        tags: Sequence[str] = (),
        parents: Iterable[ParentLink | tuple[str, str]] | None = None,
        upload: bool = True,
        allow_missing_parents: bool = False,
        progress: Callable[[int], None] | bool | None = None,
        code_checkout: str | os.PathLike | None = None,
        on_registered: Callable[[_register.Registration], None] | None = None,
    ) -> Checkpoint:
        """Register one checkpoint file (see :func:`~anemoi_ckpt_nb.catalogue.register.register_paths`).

        Registering the same file again returns the existing checkpoint
        (adding any new ``tags``) and writes nothing else.

        Args:
            path: The file.
            name: A name to find it by.
            tags: Tags to add.
            parents: Extra parent links ``(uuid, relation)``, e.g. ``(uuid, "fine-tuned-from")``.
            upload: Store the file's bytes in the catalogue (False: record and metadata only).
            allow_missing_parents: Register even if a parent is not registered.
            progress: True for a bar (a widget in Jupyter, text on a terminal's stderr, nothing when
                stderr is not a terminal), or a callable given byte counts while hashing and storing.
            code_checkout: A git checkout of the training code; its commit and dirty state
                are stored in the record's ``registered_with`` with the Python and package versions.
            on_registered: Called with the ``Registration`` (``created`` False when it was registered before).

        Returns:
            The registered checkpoint.

        Raises:
            MissingParentError: a parent is not registered; the hint is the command that registers it.
            UuidClashError: the uuid is registered for a file with other bytes.
            CheckpointReadError: the file is not a readable checkpoint.
            CodeCheckoutError: ``code_checkout`` is not a readable git checkout.
            CatalogueError: the file is registered already under another name (or none).
        """
        with _progress([path], progress, on_registered) as (update, registered):
            (result,) = _register.register_paths(
                self._store,
                [path],
                name=name,
                tags=tags,
                parents=parents,
                upload=upload,
                allow_missing_parents=allow_missing_parents,
                progress=update,
                code_checkout=code_checkout,
                on_registered=registered,
            )
        return Checkpoint(self, result.record)

    def register_many(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        tags: Sequence[str] = (),
        upload: bool = True,
        allow_missing_parents: bool = False,
        progress: Callable[[int], None] | bool | None = None,
        on_registered: Callable[[_register.Registration], None] | None = None,
        code_checkout: str | os.PathLike | None = None,
    ) -> list[Checkpoint]:
        """Register several files at once, parents first; lineage is checked before anything is written.

        Args:
            paths: Checkpoint files, any order.
            code_checkout: A git checkout of the training code, recorded as in :meth:`register`.
            tags, upload, allow_missing_parents, progress: As for :meth:`register`.
            on_registered: Called after each file, e.g. to print a line.

        Returns:
            The checkpoints, in registration order.
        """
        with _progress(paths, progress, on_registered) as (update, registered):
            results = _register.register_paths(
                self._store,
                list(paths),
                tags=tags,
                upload=upload,
                allow_missing_parents=allow_missing_parents,
                progress=update,
                on_registered=registered,
                code_checkout=code_checkout,
            )
        return [Checkpoint(self, r.record) for r in results]

    def register_run(
        self,
        folders: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        tags: Sequence[str] = (),
        upload: bool = True,
        allow_missing_parents: bool = False,
        progress: Callable[[int], None] | bool | None = None,
        on_registered: Callable[[_register.Registration], None] | None = None,
        code_checkout: str | os.PathLike | None = None,
    ) -> list[Checkpoint]:
        """Register every checkpoint under one or more run folders, in lineage order.

        Args:
            folders: A run folder or several (a run with its resumes and forks).
            code_checkout: A git checkout of the training code, recorded as in :meth:`register`.

        Returns:
            The checkpoints, in registration order.
        """
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        return self.register_many(
            _register.find_checkpoints(folders),
            tags=tags,
            upload=upload,
            allow_missing_parents=allow_missing_parents,
            progress=progress,
            on_registered=on_registered,
            code_checkout=code_checkout,
        )

    def sync(
        self,
        spool: str | os.PathLike,
        *,
        allow_missing_parents: bool = False,
        keep_files: bool = False,
        orphan_age: float | None = None,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
        on_entry: Callable | None = None,
    ):
        """Register what a training callback's spool holds, parents first (``anemoi-ckpt sync``).

        Safe to repeat, to interrupt and to run twice at once: each captured file is registered
        once, and a registered entry's captured bytes are removed unless ``keep_files``.

        Args:
            spool: The spool folder (the callback's ``spool:``).
            allow_missing_parents: Register a file whose parent is neither registered nor spooled.
            keep_files: Keep the captured bytes of registered entries.
            orphan_age: Seconds captured bytes without an entry (a capture a crash cut short)
                stay unchanged before they are removed; default a day.
            dry_run: Register nothing and remove nothing; the report says what would be done.
            progress: Called with byte counts while hashing and uploading.
            on_entry: Called as ``on_entry(entry, outcome, detail)`` after each entry.

        Returns:
            A :class:`~anemoi_ckpt_nb.runs.sync.SyncReport`.

        Raises:
            SpoolError: ``spool`` is not a spool folder.
        """
        from anemoi_ckpt_nb.runs.spool import Spool
        from anemoi_ckpt_nb.runs.sync import DEFAULT_ORPHAN_AGE, sync_spool

        return sync_spool(
            self._store, Spool.open(spool), allow_missing_parents=allow_missing_parents, keep_files=keep_files,
            orphan_age=DEFAULT_ORPHAN_AGE if orphan_age is None else orphan_age, dry_run=dry_run,
            progress=progress, on_entry=on_entry,
        )
