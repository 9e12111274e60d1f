"""The public :class:`Checkpoint`: one registered checkpoint, its record read lazily, and what can be done with it.

Made by :class:`~anemoi_ckpt_nb.api.catalogue.Catalogue` (``get``, ``search``, ``register``); each method delegates to
the package that owns the decision (``catalogue``, ``sites``, ``runs``, ``conversion``, ``compat``), display to ``notebook``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from anemoi_ckpt_nb.api.file_actions import FileActions
from anemoi_ckpt_nb.catalogue import files as _files
from anemoi_ckpt_nb.catalogue import tags as _tags
from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, ParentLink, TagEvent
from anemoi_ckpt_nb.errors import NotRegisteredError

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.api.catalogue import Catalogue
    from anemoi_ckpt_nb.compat.validate import ValidationReport


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


class Checkpoint(FileActions):
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
        from anemoi_ckpt_nb.notebook.html import checkpoint_card_of

        return checkpoint_card_of(self)

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
