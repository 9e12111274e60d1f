"""Pydantic models of what the catalogue writes to storage.

Each stored document carries a ``schema_version`` (an int, bumped when the
layout changes; :mod:`anemoi_ckpt_nb.compat.migrate` turns old versions into the
current one). These models describe only what is stored: the behaviour lives
in :mod:`anemoi_ckpt_nb.catalogue` and :class:`anemoi_ckpt_nb.api.Checkpoint`.

Where each model lives on storage (see DESIGN.md, "The catalogue on storage")::

    catalogue.json             CatalogueDescriptor
    records/<uuid>.json        CheckpointRecord      (create-only)
    tags/<uuid>.json           TagState              (compare-and-swap)
    locations/<uuid>.json      LocationsState        (compare-and-swap)
    aliases/<uuid>.json        Alias                 (create-only)
    blobs/sha256/<hash>        checkpoint bytes, metadata JSON (content-addressed)
    index/snapshot.json.gz     IndexSnapshot         (compare-and-swap)
    index/deltas/<key>.json    IndexDelta            (create-only)

Their JSON Schemas are published in ``anemoi_ckpt_nb/schemas/catalogue-*.json``
(:func:`json_schemas`).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from anemoi_ckpt_nb.compat.environment import EnvironmentSnapshot
from anemoi_ckpt_nb.errors import InvalidTagError

#: Relations a record can have to a parent.
Relation = Literal["resumed-from", "forked-from", "converted-from", "fine-tuned-from"]
RELATIONS: tuple[str, ...] = get_args(Relation)

Kind = Literal["training", "inference"]
#: ``anemoi``: a torch zip archive as anemoi-training writes it (Lightning dict or
#: pickled model); ``safetensors``: weights with the metadata in the header;
#: ``state-dict``: a plain ``torch.save`` of the weights.
Format = Literal["anemoi", "safetensors", "state-dict", "pickled"]

DEFAULT_PROTECTED_TAGS: tuple[str, ...] = ("production-ready",)


def utcnow() -> dt.datetime:
    """Now, timezone-aware in UTC, to the microsecond."""
    return dt.datetime.now(dt.timezone.utc)


class _Stored(BaseModel):
    # Unknown keys are kept, so that a document written by a newer minor
    # release survives a read-modify-write by an older one.
    model_config = ConfigDict(extra="allow")


class Who(_Stored):
    """Who did something: the login name and the machine."""

    user: str
    host: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}"


# --- catalogue.json ---------------------------------------------------------------


class RetentionPolicy(_Stored):
    """What ``clean`` removes when asked to apply the catalogue's own policy.

    A checkpoint is a candidate when any enabled rule selects it; protected
    tags and registered descendants then keep it (see :mod:`anemoi_ckpt_nb.catalogue.policy`).
    """

    keep_last: int | None = Field(
        default=None, ge=1, description="Keep the newest N checkpoints of each run (by step); older ones are candidates."
    )
    older_than_days: float | None = Field(
        default=None, gt=0, description="Untagged checkpoints registered more than D days ago are candidates."
    )


class CatalogueDescriptor(_Stored):
    """``catalogue.json``: marks a folder or bucket prefix as a catalogue."""

    schema_version: int = 1
    created: dt.datetime
    created_by: Who | None = None
    protected_tags: list[str] = Field(default_factory=lambda: list(DEFAULT_PROTECTED_TAGS))
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy)
    #: Sites that hold copies of its checkpoints (``anemoi_ckpt_nb.sites.registry.Site`` as JSON:
    #: name, kind s3|filesystem, url, endpoint_url, profile name; never credentials).
    sites: list[dict[str, Any]] = Field(default_factory=list)
    #: Site name of the catalogue's own storage (its blobs are a location like any other).
    catalogue_site: str = "catalogue"


# --- records/<uuid>.json ----------------------------------------------------------


class ParentLink(_Stored):
    """One edge of the lineage: this checkpoint came from ``uuid`` by ``relation``."""

    uuid: str
    relation: Relation


class Sizes(_Stored):
    """Bytes by part of the file, and the model's parameter count."""

    total_bytes: int
    weights_bytes: int = 0
    optimizer_bytes: int = 0
    other_bytes: int = 0
    parameter_count: int = 0


class CodeVersions(_Stored):
    """A summary of ``provenance_training``: what code wrote the checkpoint."""

    python: str | None = None
    #: Versions of the anemoi packages and the libraries pickles depend on (torch, ...).
    modules: dict[str, str] = Field(default_factory=dict)
    #: Package -> git commit, for packages run from a git checkout.
    git: dict[str, str] = Field(default_factory=dict)
    #: Packages whose git checkout had modified files.
    git_dirty: list[str] = Field(default_factory=list)


class SourceLocation(_Stored):
    """Where the file was when it was registered."""

    host: str
    path: str


class CheckpointRecord(_Stored):
    """``records/<uuid>.json``: one registered checkpoint; written once, never changed."""

    schema_version: int = 1
    #: The checkpoint's metadata uuid; for an inference file that anemoi-training
    #: wrote with its training checkpoint's uuid, a uuid5 derived from that uuid
    #: and the file's sha256 (see ``metadata_uuid``).
    uuid: str
    #: The ``uuid`` in the file's metadata.
    metadata_uuid: str
    #: Other uuids the same file holds. anemoi-training >= 0.6 with torch >= 2.6 gives a training
    #: file the uuid of its pickled ``hyper_parameters["metadata"]`` (the record's ``uuid``: what its
    #: inference file and its children name) and embeds anemoi.json with a second one, kept here.
    #: Each is also an ``aliases/<uuid>.json`` pointing at this record. Empty in older records.
    other_uuids: list[str] = Field(default_factory=list)
    name: str | None = None
    kind: Kind
    format: Format = "anemoi"
    run_id: str | None = None
    fork_run_id: str | None = None
    parents: list[ParentLink] = Field(default_factory=list)
    epoch: int | None = None
    global_step: int | None = None
    sha256: str
    size: int
    #: Key of the file's bytes (``blobs/sha256/<sha256>``); None when registered with ``upload=False``.
    blob: str | None = None
    filename: str
    source: SourceLocation
    sizes: Sizes
    dataset: str | None = None
    metadata_version: str | None = None
    code: CodeVersions = Field(default_factory=CodeVersions)
    #: Key of the metadata JSON (without supporting arrays) in ``blobs/sha256/``.
    metadata_blob: str | None = None
    #: The metadata's own ``timestamp``: when the checkpoint was saved.
    saved_at: str | None = None
    registered_at: dt.datetime
    registered_by: Who
    #: The environment that registered it: Python, installed anemoi/torch versions and, when a
    #: training-code checkout was given, its commit and dirty state. None in older records.
    registered_with: EnvironmentSnapshot | None = None


class Alias(_Stored):
    """``aliases/<uuid>.json``: another uuid of a registered file, and the record it is filed under."""

    schema_version: int = 1
    alias: str
    uuid: str


# --- tags/<uuid>.json ---------------------------------------------------------------


class TagEvent(_Stored):
    """One change of a checkpoint's tags."""

    action: Literal["add", "remove"]
    tag: str
    by: Who
    at: dt.datetime


class TagState(_Stored):
    """``tags/<uuid>.json``: the current tags and every change that led to them."""

    schema_version: int = 1
    uuid: str
    #: ``registered_at`` of the record these tags belong to, so that tags of a
    #: cleaned and re-registered checkpoint never leak onto the new record.
    generation: str
    #: Incremented by every write; the index keeps the highest it has seen.
    revision: int = 0
    tags: list[str] = Field(default_factory=list)
    history: list[TagEvent] = Field(default_factory=list)


# --- locations/<uuid>.json (see anemoi_ckpt_nb.sites.locations) ---------------------------


class Location(_Stored):
    """One copy of a checkpoint's bytes."""

    site: str
    kind: Literal["catalogue-blob", "s3", "filesystem"]
    #: Key of the copy in the site's storage (relative to its URL or path prefix).
    key: str
    #: Where the copy is, for people: ``s3://bucket/prefix/key`` or an absolute path.
    url: str
    sha256: str
    size: int
    added_at: dt.datetime
    added_by: Who
    #: How the copy was made: ``registered``, ``server-side-copy``, ``streamed``, ``uploaded``, ``found``.
    method: str | None = None
    #: When the bytes were last confirmed to hash to ``sha256``.
    verified_at: dt.datetime | None = None
    #: When the copy was last checked, whatever the outcome.
    checked_at: dt.datetime | None = None
    #: What the last check found wrong (``missing``, ``sha256 mismatch: ...``); None when fine.
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Verified at least once and not found wrong since."""
        return self.verified_at is not None and self.problem is None


class LocationEvent(_Stored):
    """One change of a checkpoint's locations."""

    action: Literal["add", "remove", "verify", "problem"]
    site: str
    by: Who
    at: dt.datetime
    detail: str | None = None


class LocationsState(_Stored):
    """``locations/<uuid>.json``: the copies of one checkpoint and how they changed."""

    schema_version: int = 1
    uuid: str
    #: ``registered_at`` of the record these locations belong to.
    generation: str
    #: Incremented by every write; the index keeps the highest it has seen.
    revision: int = 0
    locations: list[Location] = Field(default_factory=list)
    history: list[LocationEvent] = Field(default_factory=list)

    def at(self, site: str) -> Location | None:
        """The location at ``site``, if any."""
        return next((loc for loc in self.locations if loc.site == site), None)


# --- index/ -----------------------------------------------------------------------------


class IndexEntry(_Stored):
    """What the index keeps of one record: enough to list, search, clean and draw lineage."""

    uuid: str
    name: str | None = None
    kind: Kind
    format: Format = "anemoi"
    run_id: str | None = None
    parents: list[ParentLink] = Field(default_factory=list)
    epoch: int | None = None
    global_step: int | None = None
    sha256: str
    size: int
    blob: str | None = None
    metadata_blob: str | None = None
    filename: str
    dataset: str | None = None
    #: ISO 8601 text of the record's ``registered_at``: also its generation.
    registered_at: str
    registered_by: str
    tags: list[str] = Field(default_factory=list)
    tags_revision: int = 0
    #: Sites holding a copy (``:catalogue`` for the catalogue's blob); None: only the
    #: implicit catalogue blob (no ``locations/<uuid>.json`` yet).
    sites: list[str] | None = None
    sites_revision: int = 0


class PutEvent(_Stored):
    op: Literal["put"] = "put"
    entry: IndexEntry


class TagsEvent(_Stored):
    op: Literal["tags"] = "tags"
    uuid: str
    generation: str
    revision: int
    tags: list[str]


class DeleteEvent(_Stored):
    op: Literal["delete"] = "delete"
    uuid: str
    generation: str


class LocationsEvent(_Stored):
    op: Literal["locations"] = "locations"
    uuid: str
    generation: str
    revision: int
    sites: list[str]


class IndexDelta(_Stored):
    """``index/deltas/<time>-<random>.json``: changes not yet merged into the snapshot."""

    schema_version: int = 1
    events: list[Annotated[PutEvent | TagsEvent | DeleteEvent | LocationsEvent, Field(discriminator="op")]]


class IndexSnapshot(_Stored):
    """``index/snapshot.json.gz``: every entry as of the last compaction."""

    schema_version: int = 1
    compacted_at: dt.datetime
    entries: list[IndexEntry] = Field(default_factory=list)
    #: Tag events whose record's entry had not reached the index yet.
    pending_tags: list[TagsEvent] = Field(default_factory=list)
    #: ``[uuid, generation]`` of deleted records, so a stale put cannot revive them.
    deleted: list[tuple[str, str]] = Field(default_factory=list)


#: Stored models whose JSON Schema is published, by file stem.
STORED_MODELS: dict[str, type[BaseModel]] = {
    "catalogue-descriptor": CatalogueDescriptor,
    "catalogue-record": CheckpointRecord,
    "catalogue-tags": TagState,
    "catalogue-locations": LocationsState,
    "catalogue-alias": Alias,
    "catalogue-index-delta": IndexDelta,
    "catalogue-index-snapshot": IndexSnapshot,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every stored catalogue model, by file stem.

    Returns:
        ``{"catalogue-record": {...}, ...}``, ready for ``json.dumps``.
    """
    return {stem: model.model_json_schema() for stem, model in STORED_MODELS.items()}


#: The rule of a tag name (see :func:`validate_tag`).
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/@=-]{0,127}$")


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid tag name.

    A tag is 1 to 128 characters of letters, digits and ``_ . : / @ = -``,
    not starting with ``-`` or ``+`` (the CLI's add/remove marks) nor a dot.

    Raises:
        InvalidTagError: the tag breaks a rule.
    """
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise InvalidTagError(
            str(tag),
            f"invalid tag {tag!r}: use 1-128 letters, digits or _ . : / @ = -, starting with a letter, digit or _",
            hint="for example `candidate` or `production-ready`",
        )
    return tag
