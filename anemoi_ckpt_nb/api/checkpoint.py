"""The public :class:`Checkpoint`: one registered checkpoint, its record read lazily, and what can be done with it.

Made by :class:`~anemoi_ckpt_nb.api.catalogue.Catalogue` (``get``, ``search``, ``register``); each method delegates to
the package that owns the decision (``catalogue``, ``sites``, ``runs``, ``conversion``, ``compat``), display to ``notebook``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anemoi_ckpt_nb.catalogue import files as _files
from anemoi_ckpt_nb.catalogue import register as _register
from anemoi_ckpt_nb.catalogue import tags as _tags
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, ParentLink, TagEvent
from anemoi_ckpt_nb.errors import NotRegisteredError

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.api.catalogue import Catalogue
    from anemoi_ckpt_nb.catalogue.schema import Location
    from anemoi_ckpt_nb.compat.validate import ValidationReport
    from anemoi_ckpt_nb.conversion.plan import ConvertResult
    from anemoi_ckpt_nb.sites.drop import DropResult
    from anemoi_ckpt_nb.sites.fetch import FetchResult
    from anemoi_ckpt_nb.sites.transfer import ReplicateResult, VerifyResult


def checkpoint_line(entry: dict[str, Any] | CheckpointRecord) -> str:
    """One line about a checkpoint, as the CLI and the lineage tree print it.

    Args:
        entry: An index entry (with its ``tags``) or a record.

    Returns:
        Short uuid, kind, run, epoch, step, name (else file name) and ``[tags]``, those it has.
    """
    get = entry.get if isinstance(entry, dict) else lambda key: getattr(entry, key, None)
    parts = [get("uuid")[:8], get("kind")]
    if get("run_id"):
        parts.append(f"run {get('run_id')[:8]}")
    if get("epoch") is not None:
        parts.append(f"epoch {get('epoch')}")
    if get("global_step") is not None:
        parts.append(f"step {get('global_step')}")
    parts.append(get("name") or get("filename") or "")
    if get("tags"):
        parts.append("[" + ", ".join(get("tags")) + "]")
    return "  ".join(p for p in parts if p)


class _Cheap:
    """A read-only :class:`Checkpoint` attribute: from the index entry when there is one
    (no read), else from the full record."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, checkpoint: Checkpoint | None, owner: type | None = None) -> Any:
        if checkpoint is None:
            return self
        return checkpoint._field(self.name)

    def __set__(self, checkpoint: Checkpoint, value: Any) -> None:
        raise AttributeError(f"{self.name} is read-only: it is the registered record's")


class Checkpoint:
    """A registered checkpoint: its record plus the catalogue it lives in.

    Made by :class:`Catalogue` (``get``, ``search``, ``register``); cheap
    attributes (``uuid``, ``kind``, ``tags``, ...) come from the index entry
    when there is one, the full :attr:`record` is read on first use.

    Attributes:
        uuid, kind (``"training"`` or ``"inference"``), format, filename, sha256 (str),
        size (int, bytes), name, run_id (str or None), epoch, global_step (int or None):
            read-only, as registered.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        record: CheckpointRecord | None = None,
        *,
        entry: dict[str, Any] | None = None,
    ) -> None:
        if record is None and entry is None:
            raise TypeError("Checkpoint needs a record or an index entry")
        self.catalogue = catalogue
        self._record = record
        self._entry = entry
        self._tags: list[str] | None = list(entry.get("tags", ())) if entry is not None else None

    # --- what it is ---------------------------------------------------------------------

    @property
    def record(self) -> CheckpointRecord:
        """The stored record (read from the catalogue the first time)."""
        if self._record is None:
            assert self._entry is not None
            record = self.catalogue.store.read_record(self._entry["uuid"])
            if record is None:
                raise NotRegisteredError(self._entry["uuid"], hint="it was removed; list with `anemoi-ckpt ls`")
            self._record = record
        return self._record

    def _field(self, name: str) -> Any:
        if self._entry is not None and name in self._entry:
            return self._entry[name]
        return getattr(self.record, name)

    uuid = _Cheap()
    name = _Cheap()
    kind = _Cheap()
    format = _Cheap()
    run_id = _Cheap()
    epoch = _Cheap()
    global_step = _Cheap()
    filename = _Cheap()
    size = _Cheap()
    sha256 = _Cheap()

    @property
    def parents(self) -> list[ParentLink]:
        return list(self.record.parents)

    @property
    def tags(self) -> list[str]:
        """Current tags (as of when this object was made or last tagged; :meth:`refresh` re-reads)."""
        if self._tags is None:
            state = _tags.read_tags(self.catalogue.store, self.uuid)
            self._tags = list(state.tags) if state else []
        return list(self._tags)

    def refresh(self) -> Checkpoint:
        """Re-read the tags from the catalogue."""
        self._tags = None
        return self

    def tag_history(self) -> list[TagEvent]:
        """Every tag change: who added or removed which tag, and when.

        :attr:`tags` afterwards are those of the same read, so the two agree.
        """
        state = _tags.read_tags(self.catalogue.store, self.uuid)
        self._tags = list(state.tags) if state else []
        return list(state.history) if state else []

    def metadata(self) -> dict[str, Any]:
        """The checkpoint's Anemoi metadata (without supporting arrays)."""
        return _files.read_metadata(self.catalogue.store, self.record)

    def validate(self, *, all_packages: bool = False) -> ValidationReport:
        """Check the catalogue's copy of the metadata: its version, the migrations it needs and
        how the installed packages compare with the training ones (``anemoi-ckpt validate ID``).

        Args:
            all_packages: Compare every recorded package, not only the anemoi ones.

        Returns:
            The report; ``exit_code()`` is 0 compatible, 1 with warnings, 2 incompatible.
        """
        from anemoi_ckpt_nb.compat.validate import validate_metadata

        return validate_metadata(
            self.metadata(), label=f"{self.uuid} ({self.filename})", format=self.kind, all_packages=all_packages,
            registered=(self.uuid, self.filename),
        )

    # --- acting ---------------------------------------------------------------------------------

    def tag(self, *tags: str) -> Checkpoint:
        """Add tags (recorded with who and when); returns self."""
        self._tags = list(_tags.change_tags(self.catalogue.store, self.uuid, add=tags).tags)
        return self

    def untag(self, *tags: str) -> Checkpoint:
        """Remove tags (recorded with who and when); returns self."""
        self._tags = list(_tags.change_tags(self.catalogue.store, self.uuid, remove=tags).tags)
        return self

    def download(self, dest: str | os.PathLike, *, progress: Callable[[int], None] | None = None) -> Path:
        """Fetch the file to ``dest`` (a file or an existing folder), verified; resumes if interrupted.
        Site-aware: see :meth:`fetch`."""
        return self.fetch(dest, progress=progress).path

    # --- copies at sites (anemoi_ckpt_nb.sites.locations, site_transfer, site_clean) ------------

    def fetch(
        self, dest: str | os.PathLike, *, progress: Callable[[int], None] | None = None, site: str | None = None
    ) -> FetchResult:
        """Download from the first copy that works (this machine's site first); says which one was used."""
        from anemoi_ckpt_nb.sites.fetch import fetch

        return fetch(self.catalogue.store, self.record, dest, progress=progress, site=site)

    def locations(self) -> list[Location]:
        """Every recorded copy of the file: site, kind, url, sha256, size, verified_at, problem."""
        from anemoi_ckpt_nb.sites.locations import list_locations

        return list_locations(self.catalogue.store, self.record)

    def replicate(self, site: str, **options: Any) -> ReplicateResult:
        """Copy the file to ``site`` (server-side when possible), verified, and record the location;
        see :func:`anemoi_ckpt_nb.sites.transfer.replicate`."""
        from anemoi_ckpt_nb.sites.transfer import replicate

        return replicate(self.catalogue.store, self.record, site, **options)

    def verify_locations(self, *, sites: Sequence[str] | None = None, progress: Callable[[int], None] | None = None) -> list[VerifyResult]:
        """Re-hash every copy (streamed) and record ``verified_at`` or the problem found."""
        from anemoi_ckpt_nb.sites.transfer import verify

        return verify(self.catalogue.store, self.record, sites=list(sites) if sites is not None else None, progress=progress)

    def drop_location(self, site: str, *, dry_run: bool = True, check: bool = True) -> DropResult:
        """Delete the copy at ``site``, only while another verified copy remains (dry run by default);
        see :func:`anemoi_ckpt_nb.sites.drop.drop_location`."""
        from anemoi_ckpt_nb.sites.drop import drop_location

        return drop_location(self.catalogue.store, self.record, site, dry_run=dry_run, check=check)

    def prefetch(self, *, cache: str | os.PathLike | None = None, **options: Any) -> Any:
        """Fetch the file into a run cache (``<cache>/<uuid>/``) for offline training; see
        :func:`anemoi_ckpt_nb.runs.cache.prefetch`. Returns the ``CacheEntry``."""
        from anemoi_ckpt_nb.runs import cache as run_cache

        cache = cache if cache is not None else run_cache.default_cache_dir()
        options.setdefault("store", self.catalogue.store)  # site-aware: picks and reports the copy used
        return run_cache.prefetch(self.catalogue.store.storage, self.record, cache=cache, **options)

    def fork(self, **options: Any) -> Any:
        """Start a new run from this checkpoint's weights: check code versions, store a run
        manifest, prefetch; see :func:`anemoi_ckpt_nb.runs.plans.start_run`. Returns the ``RunManifest``."""
        from anemoi_ckpt_nb.runs.plans import start_run

        return start_run(self.catalogue.store, self.record, mode="fork", **options)

    def resume(self, **options: Any) -> Any:
        """Continue this checkpoint's run (same run id, optimizer state restored); as :meth:`fork`."""
        from anemoi_ckpt_nb.runs.plans import start_run

        return start_run(self.catalogue.store, self.record, mode="resume", **options)

    def local_path(self, *, cache_dir: str | os.PathLike | None = None) -> Path:
        """A local copy of the file: the original if it is still on this machine with
        the registered size, else a verified download into ``cache_dir`` (default:
        the user cache folder)."""
        return self._local_copy(cache_dir)[0]

    def _local_copy(self, cache_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
        """``(path, verified)``: verified is True when the bytes were checked against the sha256."""
        from anemoi_ckpt_nb.storage.hashing import sha256_of
        record, original = self.record, Path(self.record.source.path)
        if record.source.host == socket.gethostname() and original.is_file() and original.stat().st_size == record.size:
            with contextlib.suppress(OSError):  # same-size rewrites (last.ckpt): only while it hashes to the record
                if sha256_of(original) == record.sha256:
                    return original, False
        # The same cache as prefetch, fork and resume (one folder, one layout, verify-cache works on it).
        return Path(self.prefetch(cache=cache_dir).path), True

    def load_model(self, *, device: str = "cpu", cache_dir: str | os.PathLike | None = None) -> Any:
        """The model of this checkpoint, built by anemoi-models (:func:`~anemoi_ckpt_nb.conversion.loader.load_model`)."""
        from anemoi_ckpt_nb.conversion.loader import load_model

        return load_model(self.local_path(cache_dir=cache_dir), device=device)

    def convert(
        self,
        dest_dir: str | os.PathLike,
        *,
        format: str = "anemoi",
        register: bool = True,
        tags: Sequence[str] = (),
        overwrite: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> Checkpoint | ConvertResult:
        """Write the inference checkpoint of this training checkpoint, and register it.

        Args:
            dest_dir: Folder (created if needed) or file path for the output.
            format: ``"anemoi"`` or ``"safetensors"``.
            register: Register the output, linked ``converted-from`` this checkpoint.
            tags: Tags for the registered output.
            overwrite: Replace an existing output file.
            progress: Called as ``progress(done, total)`` with tensor bytes copied.

        Returns:
            The registered inference :class:`Checkpoint`, or with
            ``register=False`` the converter's ``ConvertResult``.

        Raises:
            ConvertError: the conversion failed; nothing was written.
        """
        from anemoi_ckpt_nb.conversion.convert import convert
        from anemoi_ckpt_nb.errors import ConvertError

        dest = Path(dest_dir)
        if not dest.suffix:
            dest.mkdir(parents=True, exist_ok=True)
        source, verified = self._local_copy()
        # Only vouch for the hash of bytes we checked; the converter hashes the others itself.
        result = convert(
            source, dest, format=format, overwrite=overwrite, source_sha256=self.sha256 if verified else None,
            progress=progress,
        )
        if result.source_sha256 != self.sha256:  # rewritten between our check and the converter's read
            for path in filter(None, (result.destination, result.sidecar)):
                Path(path).unlink(missing_ok=True)
            raise ConvertError(source, result.destination, f"the source changed while it was converted: it no longer "
                               f"holds checkpoint {self.uuid}; nothing kept", hint="convert again")
        if not register:
            return result
        # The converter hashed the output as it wrote it: registering it does not read it again.
        (registration,) = _register.register_paths(
            self.catalogue.store,
            [result.destination],
            tags=tags,
            parents=[(self.uuid, "converted-from")],
            sha256=result.sha256,
        )
        return Checkpoint(self.catalogue, registration.record)

    # --- lineage ------------------------------------------------------------------------------

    def ancestors(self) -> list[Checkpoint]:
        """Registered checkpoints this one came from, nearest first."""
        from anemoi_ckpt_nb.catalogue.lineage import ancestors

        graph = self.catalogue.lineage_parents()
        graph.setdefault(self.uuid, [(p.uuid, p.relation) for p in self.parents])
        return [self.catalogue._by_uuid(u) for u in ancestors(graph, self.uuid) if u in graph]

    def descendants(self) -> list[Checkpoint]:
        """Registered checkpoints that came from this one, nearest first."""
        from anemoi_ckpt_nb.catalogue.lineage import descendants

        graph = self.catalogue.lineage_parents()
        graph.setdefault(self.uuid, [])
        return [self.catalogue._by_uuid(u) for u in descendants(graph, self.uuid)]

    def family(self) -> list[Checkpoint]:
        """Every registered checkpoint the lineage views show with this one: from its run's first
        saves down to every descendant (this one included), in tree order."""
        _, members, graph = self.catalogue.lineage_family(self.uuid)
        return [self.catalogue._by_uuid(u) for u in members if u in graph]

    def lineage_text(self) -> str:
        """A text tree of this checkpoint's family (as ``anemoi-ckpt lineage``)."""
        return self.catalogue.lineage_text(self.uuid)

    # --- notebook display (built in anemoi_ckpt_nb.notebook, imported on use) -----------------

    def _repr_html_(self) -> str:
        from anemoi_ckpt_nb.notebook.html import checkpoint_card

        try:
            locations = self.locations()
        except Exception:  # a repr must not raise (e.g. the catalogue is unreachable)
            locations = None
        return checkpoint_card(self.record, tags=self.tags, protected_tags=self.catalogue.protected_tags, locations=locations)

    def lineage(self, *, depth: int | None = None, direction: str = "family", collapse: int | None = 4, renderer: str | None = None):
        """This checkpoint's lineage graph (``.source`` DOT, ``.svg()``; SVG in notebooks); see :mod:`anemoi_ckpt_nb.notebook.graph`.

        The default ``direction="family"`` draws what ``anemoi-ckpt lineage`` prints; ``"ancestors"``,
        ``"descendants"`` and ``"both"`` draw less."""
        from anemoi_ckpt_nb.notebook.graph import LineageGraph

        records = self.catalogue.entries()
        return LineageGraph.from_records(records, self.uuid, depth=depth, direction=direction, collapse=collapse, renderer=renderer)

    def tag_editor(self):
        """An ipywidgets editor of this checkpoint's tags, writing through to the catalogue."""
        from anemoi_ckpt_nb.notebook.widgets import TagEditor

        return TagEditor(self)

    def convert_button(self, dest_dir: str | os.PathLike | None = None, *, format: str = "anemoi", tags: Sequence[str] = ()):
        """A "Convert" button with a progress bar that shows the new inference checkpoint's card."""
        from anemoi_ckpt_nb.notebook.widgets import ConvertPanel

        return ConvertPanel(self, dest_dir=dest_dir, format=format, tags=tags)

    # --- python protocol -----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.uuid == self.uuid and other.catalogue.url == self.catalogue.url

    def __hash__(self) -> int:
        return hash((self.catalogue.url, self.uuid))

    def __repr__(self) -> str:
        parts = [f"{self.uuid}", self.kind]
        if self.run_id:
            parts.append(f"run={self.run_id[:8]}")
        if self.epoch is not None:
            parts.append(f"epoch={self.epoch}")
        if self.global_step is not None:
            parts.append(f"step={self.global_step}")
        parts.append(self.name or self.filename)
        try:
            tags = self.tags
        except Exception:  # a repr must not raise (e.g. the record was cleaned meanwhile)
            tags = []
        if tags:
            parts.append("tags=" + ",".join(tags))
        return f"<Checkpoint {' '.join(parts)}>"
