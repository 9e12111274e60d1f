"""A catalogue on a storage: the descriptor, records, tag states and the index.

:class:`CatalogueStore` is the one object the other catalogue modules share.
It reads and writes single documents and keeps the index cached; the
operations (register, tag, search, clean) are functions of their own modules.
"""

from __future__ import annotations

import threading

from anemoi_ckpt_nb.catalogue import events as _events
from anemoi_ckpt_nb.catalogue import index as _index
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue import reindex as _reindex
from anemoi_ckpt_nb.catalogue.copies import CATALOGUE_SITE_KEY, DEFAULT_CATALOGUE_SITE
from anemoi_ckpt_nb.catalogue.documents import read_document
from anemoi_ckpt_nb.catalogue.schema import (
    Alias,
    CatalogueDescriptor,
    CheckpointRecord,
    RetentionPolicy,
    TagState,
    utcnow,
    validate_tag,
)
from anemoi_ckpt_nb.errors import (
    CatalogueError,
    CatalogueNotFoundError,
    ConflictError,
    ObjectNotFoundError,
    SchemaError,
)
from anemoi_ckpt_nb.storage.base import Storage


class CatalogueStore:
    """A catalogue on ``storage``, described by ``descriptor``.

    Use :meth:`open` or :meth:`create` rather than the constructor.
    """

    def __init__(self, storage: Storage, descriptor: CatalogueDescriptor) -> None:
        self.storage = storage
        self.descriptor = descriptor
        self._index: _index.Index | None = None
        self._index_lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.storage.url

    def __repr__(self) -> str:
        return f"CatalogueStore({self.url!r})"

    # --- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, storage: Storage) -> CatalogueStore:
        """Open the catalogue whose ``catalogue.json`` is on ``storage``.

        Raises:
            CatalogueNotFoundError: there is no ``catalogue.json``.
            SchemaError: the catalogue was written by a newer release.
        """
        try:
            data, _ = storage.get(layout.DESCRIPTOR)
        except ObjectNotFoundError:
            raise CatalogueNotFoundError(
                storage.url,
                hint=f"create it with `anemoi-ckpt init {storage.url}`",
            ).with_python_hint(f"create it with Catalogue.create({storage.url!r})") from None
        descriptor = read_document(CatalogueDescriptor, "descriptor", data, f"{storage.url}/{layout.DESCRIPTOR}")
        return cls(storage, descriptor)

    @classmethod
    def create(
        cls,
        storage: Storage,
        *,
        protected_tags: list[str] | None = None,
        retention: RetentionPolicy | None = None,
        exist_ok: bool = False,
    ) -> CatalogueStore:
        """Write ``catalogue.json`` (create-only) and return the new catalogue.

        Args:
            storage: Where the catalogue lives.
            protected_tags: Tags whose checkpoints ``clean`` never removes
                (default: ``["production-ready"]``).
            retention: The policy ``clean`` applies when given none.
            exist_ok: Open an existing catalogue instead of refusing.

        Raises:
            InvalidTagError: a protected tag is not a valid tag name; nothing is written.
            CatalogueError: a catalogue already exists there and ``exist_ok`` is false.
        """
        descriptor = CatalogueDescriptor(created=utcnow(), created_by=layout.whoami())
        if protected_tags is not None:
            # The same rule as tagging: a protected tag no checkpoint can carry would protect nothing.
            descriptor.protected_tags = [validate_tag(tag) for tag in protected_tags]
        if retention is not None:
            descriptor.retention = retention
        try:
            storage.put(layout.DESCRIPTOR, layout.dump(descriptor), if_absent=True)
        except ConflictError:
            if exist_ok:
                return cls.open(storage)
            raise CatalogueError(
                f"{storage.url}: a catalogue already exists here",
                hint=f"use it with --catalogue {storage.url} or ANEMOI_CKPT_CATALOGUE={storage.url}; "
                "`anemoi-ckpt init --exist-ok` accepts an existing one",
            ).with_python_hint(f"open it with Catalogue({storage.url!r}), or pass exist_ok=True") from None
        return cls(storage, descriptor)

    # --- documents -----------------------------------------------------------------

    def read_record(self, uuid: str) -> CheckpointRecord | None:
        """The record of ``uuid``, or None if it is not registered.

        Raises:
            SchemaError: the stored record is damaged or does not follow the layout
                (:func:`.layout.check_record`: it is untrusted input).
        """
        if not layout.is_uuid(uuid):
            return None  # nothing can be registered under it; never a key built from a path
        try:
            data, _ = self.storage.get(layout.record_key(uuid))
        except ObjectNotFoundError:
            return None
        where = f"{self.url}/{layout.record_key(uuid)}"
        return layout.check_record(read_document(CheckpointRecord, "record", data, where), uuid, where)

    def find_record(self, uuid: str) -> CheckpointRecord | None:
        """The record filed under ``uuid`` or, failing that, under the uuid ``uuid`` is an alias of.

        A current anemoi-training file holds two uuids (see ``CheckpointRecord.other_uuids``);
        either finds its record. An alias whose record was cleaned finds nothing.
        """
        record = self.read_record(uuid)
        if record is not None:
            return record
        target = self.read_alias(uuid)
        record = self.read_record(target) if target is not None and target != uuid else None
        if record is not None and record.other_uuids and uuid not in {*record.other_uuids, record.metadata_uuid}:
            raise SchemaError(  # an alias written by hand: it would answer with another checkpoint
                f"{self.url}/{layout.alias_key(uuid)}: it files {uuid} under {target}, whose record does not name it",
                hint="`anemoi-ckpt clean --orphans` lists it and `--apply` removes it",
            )
        return record

    def read_alias(self, uuid: str) -> str | None:
        """The uuid of the record that ``uuid`` is another uuid of, or None."""
        if not layout.is_uuid(uuid):
            return None
        try:
            data, _ = self.storage.get(layout.alias_key(uuid))
        except ObjectNotFoundError:
            return None
        where = f"{self.url}/{layout.alias_key(uuid)}"
        alias = read_document(Alias, "alias", data, where)
        if alias.alias != uuid or not layout.is_uuid(alias.uuid):
            raise SchemaError(f"{where}: it files {alias.alias!r} under {alias.uuid!r}; the layout allows only {uuid} under a uuid",
                              hint="`anemoi-ckpt clean --orphans` lists it and `--apply` removes it")
        return alias.uuid

    def create_alias(self, alias: str, uuid: str) -> None:
        """File ``alias`` as another uuid of the record ``uuid`` (create-only; the same pair again is fine).

        Raises:
            UuidClashError: ``alias`` already names another record.
        """
        from anemoi_ckpt_nb.errors import UuidClashError

        try:
            self.storage.put(layout.alias_key(alias), layout.dump(Alias(alias=alias, uuid=uuid)), if_absent=True)
        except ConflictError:
            existing = self.read_alias(alias)
            if existing != uuid:
                raise UuidClashError(
                    alias,
                    f"{self.url}: uuid {alias} is already another uuid of {existing}, not of {uuid}",
                    hint=f"compare them with `anemoi-ckpt show {existing}` and `anemoi-ckpt show {uuid}`",
                ) from None

    def create_record(self, record: CheckpointRecord) -> None:
        """Write a record create-only.

        Raises:
            ConflictError: a record with this uuid already exists.
        """
        self.storage.put(layout.record_key(record.uuid), layout.dump(record), if_absent=True)

    def read_tags(self, uuid: str) -> tuple[TagState | None, str | None]:
        """``(state, etag)`` of the tags of ``uuid``; ``(None, None)`` before the first tag."""
        try:
            data, etag = self.storage.get(layout.tags_key(uuid))
        except ObjectNotFoundError:
            return None, None
        return read_document(TagState, "tags", data, f"{self.url}/{layout.tags_key(uuid)}"), etag

    def record_uuids(self, prefix: str = "") -> list[str]:
        """Uuids of the records whose uuid starts with ``prefix``, straight from ``records/``."""
        return [
            layout.uuid_of_key(info.key)
            for info in self.storage.list(layout.RECORDS + prefix)
            if info.key.endswith(".json")
        ]

    # --- index -------------------------------------------------------------------------

    def index(self, *, refresh: bool = True) -> _index.Index:
        """The merged index, refreshed from storage unless ``refresh`` is false."""
        with self._index_lock:
            if self._index is None or refresh:
                self._index = _index.load(self.storage, self._index)
            return self._index

    def publish(self, events: list[_events.Event]) -> None:
        """Record index events (one delta) and apply them to the cached index."""
        key = _index.publish(self.storage, events)
        with self._index_lock:
            if self._index is not None:
                for event in events:
                    self._index.apply(event)
                self._index.applied.add(key)  # so the next refresh does not fetch it again

    def cached_index(self) -> _index.Index | None:
        """The index as last read by this object, without any request; None if never read."""
        return self._index

    def rebuild_index(self) -> _index.Index:
        """Recreate the index snapshot from the records (see :func:`.reindex.rebuild`)."""
        with self._index_lock:
            self._index = _reindex.rebuild(self.storage)
            return self._index

    def check_index(self) -> _reindex.IndexCheck:
        """Compare the current index with ``records/`` (see :func:`.reindex.check`)."""
        return _reindex.check(self.storage, self.index())


def catalogue_site_name(store: CatalogueStore) -> str:
    """The site name of the catalogue's own storage (default ``"catalogue"``)."""
    return str(getattr(store.descriptor, CATALOGUE_SITE_KEY, None) or DEFAULT_CATALOGUE_SITE)
