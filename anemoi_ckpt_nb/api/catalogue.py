"""The public objects: :class:`Catalogue` and :class:`Checkpoint`.

They join the packages below (``catalogue``, ``sites``, ``runs``, ``conversion``)
and the storage backends, and own the behaviour; the stored data are the
pydantic models of :mod:`anemoi_ckpt_nb.catalogue.schema`. Display (HTML, graphs)
is left to :mod:`anemoi_ckpt_nb.notebook`; here there is only a plain ``repr``.

    >>> from anemoi_ckpt_nb import Catalogue
    >>> cat = Catalogue("s3://bucket/catalogue")          # or a folder, or memory://name
    >>> ck = cat.register("run/anemoi-by_epoch-epoch_003-step_000300.ckpt", tags=["candidate"])
    >>> cat.search(tags=["candidate"], kind="training")
    >>> ck.convert("inference/").tag("production-ready")
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anemoi_ckpt_nb.catalogue import files as _files
from anemoi_ckpt_nb.catalogue import register as _register
from anemoi_ckpt_nb.catalogue import search as _search
from anemoi_ckpt_nb.catalogue import tags as _tags
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import CatalogueNotFoundError, NotRegisteredError
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, ParentLink, RetentionPolicy, TagEvent

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from anemoi_ckpt_nb.conversion.convert import ConvertResult
    from anemoi_ckpt_nb.catalogue.policy import CleanPlan
    from anemoi_ckpt_nb.catalogue.schema import Location
    from anemoi_ckpt_nb.sites.drop import DropResult
    from anemoi_ckpt_nb.sites.fetch import FetchResult
    from anemoi_ckpt_nb.sites.transfer import ReplicateResult, VerifyResult
    from anemoi_ckpt_nb.compat.validate import ValidationReport
    from anemoi_ckpt_nb.storage.base import Storage

#: Environment variable naming the default catalogue.
ENV_CATALOGUE = "ANEMOI_CKPT_CATALOGUE"


def default_url() -> str:
    """The catalogue used when none is named: ``$ANEMOI_CKPT_CATALOGUE``, else
    ``<user data dir>/anemoi-ckpt-nb/catalogue`` (platformdirs)."""
    url = os.environ.get(ENV_CATALOGUE)
    if url:
        return url
    import platformdirs

    return str(Path(platformdirs.user_data_dir("anemoi-ckpt-nb")) / "catalogue")


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


class Catalogue:
    """A catalogue of checkpoints on S3, a folder, or in memory.

    Args:
        url: ``s3://bucket/prefix``, ``file:///path``, a folder path or
            ``memory://name``. Default: :func:`default_url`; that default, when
            it is a local folder, is created on first use.
        storage: An already opened storage (instead of ``url``).

    Raises:
        CatalogueNotFoundError: no catalogue at ``url`` (create it with
            :meth:`Catalogue.create` or ``anemoi-ckpt init URL``).
    """

    def __init__(self, url: str | os.PathLike | None = None, *, storage: Storage | None = None) -> None:
        from anemoi_ckpt_nb.storage import open_storage

        implicit = url is None and storage is None
        if storage is None:
            url = default_url() if url is None else os.fspath(url)
            storage = open_storage(url)
        try:
            self._store = CatalogueStore.open(storage)
        except CatalogueNotFoundError:
            if not (implicit and _is_local(str(url))):
                raise
            self._store = CatalogueStore.create(storage, exist_ok=True)

    @classmethod
    def create(
        cls,
        url: str | os.PathLike,
        *,
        protected_tags: Sequence[str] | None = None,
        retention: RetentionPolicy | None = None,
        exist_ok: bool = False,
    ) -> Catalogue:
        """Create a new catalogue at ``url``.

        Args:
            url: Where (see :class:`Catalogue`).
            protected_tags: Tags ``clean`` never removes (default ``["production-ready"]``).
            retention: The policy ``clean`` applies by default.
            exist_ok: Open an existing catalogue instead of refusing.

        Raises:
            InvalidTagError: a protected tag is not a valid tag name; nothing is written.
            CatalogueError: a catalogue exists there already (and not ``exist_ok``).
        """
        from anemoi_ckpt_nb.storage import open_storage

        storage = open_storage(url)
        CatalogueStore.create(
            storage,
            protected_tags=list(protected_tags) if protected_tags is not None else None,
            retention=retention,
            exist_ok=exist_ok,
        )
        return cls(storage=storage)

    # --- basics ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def store(self) -> CatalogueStore:
        """The core object, for code that works below the API."""
        return self._store

    @property
    def protected_tags(self) -> list[str]:
        return list(self._store.descriptor.protected_tags)

    @property
    def retention(self) -> RetentionPolicy:
        return self._store.descriptor.retention

    def __len__(self) -> int:
        return len(self._store.index())

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.search())

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str):
            return False
        try:
            self.get(ref)
        except LookupError:
            return False
        return True

    def __getitem__(self, ref: str) -> Checkpoint:
        return self.get(ref)

    def __repr__(self) -> str:
        try:
            entries = self._store.index(refresh=False).entries.values()
        except Exception as error:  # a repr must not raise
            return f"<Catalogue {self.url} (unreadable: {error})>"
        kinds: dict[str, int] = {}
        tags: dict[str, int] = {}
        for entry in entries:
            kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
            for tag in entry.get("tags", ()):
                tags[tag] = tags.get(tag, 0) + 1
        total = sum(kinds.values())
        parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        text = f"<Catalogue {self.url}: {total} checkpoint{'s' if total != 1 else ''}"
        text += f" ({parts})" if parts else ""
        if tags:
            text += "; tags: " + ", ".join(f"{t} ({n})" for t, n in sorted(tags.items()))
        return text + ">"

    # --- notebook display (built in anemoi_ckpt_nb.notebook, imported on use) -----------------

    def _repr_html_(self) -> str:
        from anemoi_ckpt_nb.notebook.html import catalogue_table

        return catalogue_table(self.to_pandas(), title=self.url, protected_tags=self.protected_tags)

    def browser(self, *, renderer: str | None = None):
        """An ipywidgets browser: filter by tag, kind and run; a selected row shows its card and lineage."""
        from anemoi_ckpt_nb.notebook.widgets import CatalogueBrowser

        return CatalogueBrowser(self, renderer=renderer)

    # --- registering ----------------------------------------------------------------------

    def register(
        self,
        path: str | os.PathLike,
        *,
        name: str | None = None,
        tags: Sequence[str] = (),
        parents: Iterable[ParentLink | tuple[str, str]] | None = None,
        upload: bool = True,
        allow_missing_parents: bool = False,
        progress: Callable[[int], None] | None = None,
        code_checkout: str | os.PathLike | None = None,
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
            progress: Called with byte counts while hashing and uploading.
            code_checkout: A git checkout of the training code; its commit and dirty state
                are stored in the record's ``registered_with`` with the Python and package versions.

        Returns:
            The registered checkpoint.

        Raises:
            MissingParentError: a parent is not registered; the hint is the command that registers it.
            UuidClashError: the uuid is registered for a file with other bytes.
            CheckpointReadError: the file is not a readable checkpoint.
            CodeCheckoutError: ``code_checkout`` is not a readable git checkout.
        """
        (result,) = _register.register_paths(
            self._store,
            [path],
            name=name,
            tags=tags,
            parents=parents,
            upload=upload,
            allow_missing_parents=allow_missing_parents,
            progress=progress,
            code_checkout=code_checkout,
        )
        return Checkpoint(self, result.record)

    def register_many(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        tags: Sequence[str] = (),
        upload: bool = True,
        allow_missing_parents: bool = False,
        progress: Callable[[int], None] | None = None,
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
        results = _register.register_paths(
            self._store,
            list(paths),
            tags=tags,
            upload=upload,
            allow_missing_parents=allow_missing_parents,
            progress=progress,
            on_registered=on_registered,
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
        progress: Callable[[int], None] | None = None,
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

    # --- finding ------------------------------------------------------------------------------

    def get(self, ref: str) -> Checkpoint:
        """The checkpoint with this uuid, uuid prefix (4+ characters), name or file name.

        Raises:
            NotRegisteredError: nothing matches.
            AmbiguousReferenceError: several match.
        """
        return Checkpoint(self, _search.resolve(self._store, ref))

    def search(
        self,
        *,
        tags: Sequence[str] = (),
        kind: str | None = None,
        run_id: str | None = None,
        text: str | None = None,
        site: str | None = None,
    ) -> list[Checkpoint]:
        """Checkpoints matching every filter, oldest registration first.

        Args:
            tags: All of these tags.
            kind: ``"training"`` or ``"inference"``.
            run_id: A run id or its first characters.
            text: A case-insensitive substring of uuid, name, file name, run, dataset, user or tag.
            site: A copy of the file is recorded at this site (see :meth:`sites`).
        """
        entries = _search.search(self._store, tags=tags, kind=kind, run_id=run_id, text=text, site=site)
        return [Checkpoint(self, entry=entry) for entry in entries]

    def entries(self, **filters: Any) -> list[dict[str, Any]]:
        """Index entries (plain dicts) matching :meth:`search`'s filters: cheap, for tables."""
        return _search.search(self._store, **filters)

    def to_pandas(self, **filters: Any) -> pandas.DataFrame:
        """A table of the checkpoints matching :meth:`search`'s filters, one row each."""
        import pandas as pd

        from anemoi_ckpt_nb.sites.locations import sites_of_entry
        from anemoi_ckpt_nb.sites.registry import catalogue_site_name

        columns = [
            "uuid", "name", "kind", "format", "run_id", "epoch", "global_step", "tags",
            "filename", "size", "dataset", "registered_at", "registered_by", "parents", "sha256", "sites",
        ]
        home = catalogue_site_name(self._store)
        rows = []
        for entry in _search.search(self._store, **filters):
            row = {c: entry.get(c) for c in columns}
            row["sites"] = sites_of_entry(entry, home)
            row["tags"] = list(entry.get("tags", ()))
            row["parents"] = [f"{p['relation']}:{p['uuid']}" for p in entry.get("parents", ())]
            rows.append(row)
        frame = pd.DataFrame(rows, columns=columns)
        frame["registered_at"] = pd.to_datetime(frame["registered_at"], utc=True, format="ISO8601")
        return frame

    # --- acting by reference ---------------------------------------------------------------------

    def tag(self, ref: str, *tags: str) -> list[str]:
        """Add tags to a checkpoint; returns its tags afterwards."""
        return self.retag(ref, add=tags)

    def untag(self, ref: str, *tags: str) -> list[str]:
        """Remove tags from a checkpoint; returns its tags afterwards."""
        return self.retag(ref, remove=tags)

    def retag(self, ref: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        """Add and remove tags in one compare-and-swap; returns the tags afterwards."""
        record = _search.resolve(self._store, ref)
        return list(_tags.change_tags(self._store, record.uuid, add=add, remove=remove).tags)

    def download(
        self, ref: str, dest: str | os.PathLike, *, progress: Callable[[int], None] | None = None
    ) -> Path:
        """Fetch a checkpoint's file to ``dest`` (a file or an existing folder), verified;
        from the best of its copies (see :meth:`fetch`, which also says which copy was used)."""
        return self.fetch(ref, dest, progress=progress).path

    # --- sites (anemoi_ckpt_nb.sites.registry) ---------------------------------------------------------

    def fetch(
        self, ref: str, dest: str | os.PathLike, *, progress: Callable[[int], None] | None = None, site: str | None = None
    ) -> FetchResult:
        """Download a checkpoint from the first of its copies that works: this machine's
        site (``$ANEMOI_CKPT_SITE`` or ``site``) first, falling back on failure.

        Returns:
            ``FetchResult``: ``path``, ``site`` used, ``attempts`` skipped.

        Raises:
            NoReachableCopyError: every copy failed; each is named with why.
        """
        from anemoi_ckpt_nb.sites.fetch import fetch

        return fetch(self._store, _search.resolve(self._store, ref), dest, progress=progress, site=site)

    def sites(self) -> list[dict[str, Any]]:
        """Every site as plain data, the catalogue's own first (``name``, ``kind``, ``url``, ...)."""
        from anemoi_ckpt_nb.sites import registry as sites

        return sites.describe_sites(self._store)

    def add_site(self, name: str, **options: Any) -> Any:
        """Describe a site in ``catalogue.json``: ``s3=`` URL (with ``endpoint_url``,
        ``profile``) or ``path=``; see :func:`anemoi_ckpt_nb.sites.registry.add_site`."""
        from anemoi_ckpt_nb.sites import registry as sites

        return sites.add_site(self._store, name, **options)

    def remove_site(self, name: str, *, force: bool = False) -> None:
        """Remove a site's description (refused while copies are recorded there)."""
        from anemoi_ckpt_nb.sites import registry as sites

        sites.remove_site(self._store, name, force=force)

    def name_catalogue_site(self, name: str) -> None:
        """Give the catalogue's own storage a site name (default ``"catalogue"``)."""
        from anemoi_ckpt_nb.sites import registry as sites

        sites.name_catalogue_site(self._store, name)

    def clean(
        self,
        policy: RetentionPolicy | None = None,
        *,
        keep_last: int | None = None,
        older_than_days: float | None = None,
        dry_run: bool = True,
    ) -> CleanPlan:
        """Remove what a retention policy selects; never protected checkpoints nor ancestors.

        Args:
            policy: The rules; default the catalogue's own, or the two keywords.
            keep_last: Keep the newest N checkpoints of each run.
            older_than_days: Drop untagged checkpoints registered more than D days ago.
            dry_run: Only report (the default); pass False to delete.

        Returns:
            The plan: ``delete`` (what goes, or went) and ``keep`` (candidates kept, with why).

        Raises:
            CatalogueError: no rule given and none in the catalogue's policy.
        """
        from anemoi_ckpt_nb.catalogue.clean import clean
        from anemoi_ckpt_nb.sites.drop import forget

        if policy is None and (keep_last is not None or older_than_days is not None):
            policy = RetentionPolicy(keep_last=keep_last, older_than_days=older_than_days)
        return clean(self._store, policy, dry_run=dry_run, forget_copies=forget)

    def rebuild_index(self) -> int:
        """Recreate the index from the records; returns the number of entries."""
        return len(self._store.rebuild_index())

    def check_index(self):
        """Compare the index with ``records/`` (one listing): an ``IndexCheck`` with
        ``missing`` (records the index lacks), ``stale`` (entries without a record) and ``ok``.
        Repair with :meth:`rebuild_index` (``anemoi-ckpt reindex``)."""
        return self._store.check_index()

    # --- lineage ------------------------------------------------------------------------------------

    def lineage_parents(self) -> dict[str, list[tuple[str, str]]]:
        """The whole lineage graph: ``uuid -> [(parent_uuid, relation)]`` (see :mod:`anemoi_ckpt_nb.catalogue.lineage`)."""
        from anemoi_ckpt_nb.catalogue.lineage import parents_map

        return parents_map(self._store.index().entries.values())

    def lineage_text(self, ref: str, *, whole_runs: bool = True) -> str:
        """A text tree of a checkpoint's family, marking it with ``<==``.

        Args:
            ref: The checkpoint.
            whole_runs: Start from every parentless checkpoint of the runs its
                roots belong to, not only from its own roots. The checkpoints
                of one Anemoi run are siblings, so this shows the forks and
                resumes taken from the other epochs of those runs.
        """
        from anemoi_ckpt_nb.catalogue.lineage import parents_map, roots, text_tree

        record = _search.resolve(self._store, ref)
        entries = self._store.index().entries
        graph = parents_map(entries.values())
        graph.setdefault(record.uuid, [(p.uuid, p.relation) for p in record.parents])

        def label(uuid: str) -> str:
            entry = entries.get(uuid)
            return checkpoint_line(entry) if entry else uuid[:8]

        def order(uuid: str) -> tuple:
            entry = entries.get(uuid) or {}
            step = entry.get("global_step")
            return (entry.get("kind") != "training", step if step is not None else -1, uuid)

        tops = roots(graph, record.uuid)
        if whole_runs:
            runs = {entries[u].get("run_id") for u in tops if u in entries} - {None}
            tops = sorted(set(tops) | {u for u, e in entries.items() if e.get("run_id") in runs and not e.get("parents")})
        return text_tree(graph, record.uuid, label=label, sort_key=order, tops=tops)

    def path(self, a: str, b: str) -> list[Checkpoint]:
        """The chain of lineage links from checkpoint ``a`` to ``b``."""
        from anemoi_ckpt_nb.catalogue.lineage import path

        ua, ub = _search.resolve(self._store, a).uuid, _search.resolve(self._store, b).uuid
        return [self._by_uuid(u) for u in path(self.lineage_parents(), ua, ub)]

    def _by_uuid(self, uuid: str) -> Checkpoint:
        entry = self._store.index(refresh=False).entries.get(uuid)
        if entry is not None:
            return Checkpoint(self, entry=entry)
        record = self._store.read_record(uuid)
        if record is None:
            raise NotRegisteredError(uuid, hint="it is named as a parent but was never registered")
        return Checkpoint(self, record)


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
            self.metadata(), label=f"{self.uuid} ({self.filename})", format=self.kind, all_packages=all_packages
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
        record = self.record
        original = Path(record.source.path)
        if record.source.host == socket.gethostname() and original.is_file() and original.stat().st_size == record.size:
            return original, False
        if cache_dir is None:
            import platformdirs

            cache_dir = Path(platformdirs.user_cache_dir("anemoi-ckpt-nb")) / "checkpoints"
        target = Path(cache_dir) / record.sha256 / record.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        return self.download(target), True

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

        dest = Path(dest_dir)
        if not dest.suffix:
            dest.mkdir(parents=True, exist_ok=True)
        source, verified = self._local_copy()
        # Only vouch for the hash of bytes we checked; the converter hashes the others itself.
        result = convert(
            source, dest, format=format, overwrite=overwrite, source_sha256=self.sha256 if verified else None,
            progress=progress,
        )
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

    def lineage(self, *, depth: int | None = None, direction: str = "both", collapse: int | None = 4, renderer: str | None = None):
        """This checkpoint's lineage graph (``.source`` DOT, ``.svg()``; SVG in notebooks); see :mod:`anemoi_ckpt_nb.notebook.graph`."""
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
