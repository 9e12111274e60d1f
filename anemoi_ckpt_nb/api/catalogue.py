"""The public :class:`Catalogue` (its checkpoints are :class:`~anemoi_ckpt_nb.api.checkpoint.Checkpoint`).

It delegates to the packages below (``catalogue``, ``sites``, ``runs``, ``conversion``); registering is
:mod:`.registering`; display (HTML, graphs) is left to :mod:`anemoi_ckpt_nb.notebook`.

    >>> from anemoi_ckpt_nb import Catalogue
    >>> cat = Catalogue("s3://bucket/catalogue")          # or a folder, or memory://name
    >>> ck = cat.register("run/anemoi-by_epoch-epoch_003-step_000300.ckpt", tags=["candidate"])
    >>> cat.search(tags=["candidate"], kind="training")
    >>> ck.convert("inference/").tag("production-ready")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anemoi_ckpt_nb.api.checkpoint import Checkpoint, checkpoint_line
from anemoi_ckpt_nb.api.opening import open_store
from anemoi_ckpt_nb.api.maintenance import Maintenance
from anemoi_ckpt_nb.api.registering import Registering
from anemoi_ckpt_nb.catalogue import search as _search
from anemoi_ckpt_nb.catalogue import tags as _tags
from anemoi_ckpt_nb.catalogue.schema import RetentionPolicy
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import NotRegisteredError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from anemoi_ckpt_nb.catalogue.policy import CleanPlan
    from anemoi_ckpt_nb.sites.fetch import FetchResult
    from anemoi_ckpt_nb.storage.base import Storage


class Catalogue(Registering, Maintenance):
    """A catalogue of checkpoints on S3, a folder, or in memory.

    Args:
        url: ``s3://bucket/prefix``, ``file:///path``, a folder path or
            ``memory://name``. Default: :func:`~anemoi_ckpt_nb.api.opening.default_url`; that default, when
            it is a local folder, is created on first use (``created`` tells).
        storage: An already opened storage (instead of ``url``).
        create_default: Create the default catalogue if it does not exist yet; False
            for read-only use, which then raises ``CatalogueNotFoundError`` instead.

    Attributes:
        created: True when this object created the (default) catalogue, on first use.

    Raises:
        CatalogueNotFoundError: no catalogue at ``url`` (create it with
            :meth:`Catalogue.create` or ``anemoi-ckpt init URL``).
    """

    def __init__(
        self, url: str | os.PathLike | None = None, *, storage: Storage | None = None, create_default: bool = True
    ) -> None:
        self._store, self.created = open_store(url, storage, create_default=create_default)

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
        from anemoi_ckpt_nb.notebook.browser import CatalogueBrowser

        return CatalogueBrowser(self, renderer=renderer)

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

    def retag(
        self, ref: str, *, add: Sequence[str] = (), remove: Sequence[str] = (),
        on_unchanged: Callable[[list[str]], None] | None = None, confirm_protected: bool = True,
    ) -> list[str]:
        """Add and remove tags in one compare-and-swap; returns the tags afterwards.
        ``on_unchanged`` is called with the changes that had nothing to do (``+tag`` it had,
        ``-tag`` it had not); ``confirm_protected=False`` refuses a change naming a protected
        tag (``ProtectedError``), as ``anemoi-ckpt tag`` does without ``--confirm-protected``."""
        record = _search.resolve(self._store, ref)
        return list(_tags.change_tags(
            self._store, record.uuid, add=add, remove=remove, on_unchanged=on_unchanged, confirm_protected=confirm_protected,
        ).tags)

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
        from anemoi_ckpt_nb.sites.drop import forget, planned

        if policy is None and (keep_last is not None or older_than_days is not None):
            policy = RetentionPolicy(keep_last=keep_last, older_than_days=older_than_days)
        return clean(self._store, policy, dry_run=dry_run, forget_copies=forget, planned_copies=planned)

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
        """The lineage graph every view shows: ``uuid -> [(parent_uuid, relation)]``, the recorded
        links plus ``continued-from`` between successive checkpoints of one training session
        (see :func:`~anemoi_ckpt_nb.catalogue.lineage.lineage_graph`)."""
        from anemoi_ckpt_nb.catalogue.lineage import lineage_graph

        return lineage_graph(self._store.index().entries.values())

    def lineage_family(self, ref: str, *, whole_runs: bool = True) -> tuple[list[str], list[str], dict]:
        """``(tops, members, graph)``: the scope every lineage view of ``ref`` shows (its roots, and
        with ``whole_runs`` the other first saves of their runs, down to every descendant)."""
        from anemoi_ckpt_nb.catalogue.lineage import family, lineage_graph

        record = _search.resolve(self._store, ref)
        entries = self._store.index().entries
        graph = lineage_graph(entries.values())
        graph.setdefault(record.uuid, [(p.uuid, p.relation) for p in record.parents])
        run_of = {u: e.get("run_id") for u, e in entries.items()} if whole_runs else None
        tops, members = family(graph, record.uuid, run_of=run_of)
        return tops, members, graph

    def lineage_text(self, ref: str, *, whole_runs: bool = True) -> str:
        """A text tree of a checkpoint's family (see :meth:`lineage_family`), marking it with ``<==``.

        Args:
            ref: The checkpoint.
            whole_runs: Start from every parentless checkpoint of the runs its
                roots belong to (saves of one first step side by side), not only
                from its own roots.
        """
        from anemoi_ckpt_nb.catalogue.lineage import display_order, text_tree

        uuid = _search.resolve(self._store, ref).uuid
        tops, _, graph = self.lineage_family(uuid, whole_runs=whole_runs)
        entries = self._store.index(refresh=False).entries

        def label(uuid: str) -> str:
            entry = entries.get(uuid)
            return checkpoint_line(entry) if entry else uuid[:8]

        def order(uuid: str) -> tuple:
            return display_order(entries.get(uuid) or {"uuid": uuid})

        return text_tree(graph, uuid, label=label, sort_key=order, tops=tops)

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
