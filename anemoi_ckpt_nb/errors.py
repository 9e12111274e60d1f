"""Typed exceptions that carry context.

Every error the toolkit raises on purpose is a :class:`CkptError`. Each one names the thing it is
about (a file, a catalogue object, a storage key) and, where one exists, a ``hint``: the action or
command that fixes it. The CLI and the notebook magics format these at the edge (one sentence, no
traceback); the core never prints.

Each family also subclasses the builtin a caller would naturally catch (``OSError`` for files and
storage, ``LookupError`` for missing objects, ``ValueError`` for bad input), so plain ``except
OSError`` keeps working.
"""

from __future__ import annotations


class CkptError(Exception):
    """Base of every error raised on purpose by anemoi-ckpt-nb.

    Args:
        message: One sentence saying what went wrong, naming the object.
        hint: What to do about it, ideally a command; shown after the message.
            It names the command-line way: the CLI and the ``%ckpt`` magics show it.

    Attributes:
        python_hint: The same advice in Python terms (``Catalogue(...)``,
            ``overwrite=True``), for the few errors the Python API and the CLI
            share where the two ways differ. ``str(error)`` (what a traceback
            shows) prefers it; :func:`describe_error` (the CLI's line) never uses it.
    """

    python_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def with_python_hint(self, python_hint: str | None) -> CkptError:
        """Attach the Python way of the hint; returns the error, for ``raise error.with_python_hint(...)``."""
        self.python_hint = python_hint
        return self

    def __str__(self) -> str:
        hint = self.python_hint or self.hint
        if hint:
            return f"{self.message} ({hint})"
        return self.message

    def cli_text(self) -> str:
        """The message with the command-line hint: what a CLI user reads."""
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def __reduce__(self):
        # Subclasses take other constructor arguments, so rebuild from the
        # attributes instead: errors then cross process boundaries intact.
        return (_restore_error, (type(self), self.args, self.__dict__))


def describe_error(error: BaseException) -> str:
    """One line for a user: our typed errors as they are, an OSError with its file, others with their type."""
    if isinstance(error, CkptError):
        return error.cli_text()
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    # Messages of other libraries (pydantic, botocore) may span lines; the contract is one line.
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _restore_error(cls: type, args: tuple, state: dict) -> CkptError:
    error = cls.__new__(cls)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    return error


# --- reading checkpoint files -------------------------------------------------


class CheckpointReadError(CkptError, OSError):
    """A checkpoint file could not be read. Carries ``path``."""

    def __init__(self, path: object, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = str(path)
        #: The message without the path, for a caller that names the file itself.
        self.reason = message


class CheckpointChangedError(CheckpointReadError):
    """The file changed on disk since it was opened: rewritten, replaced or truncated."""


class NotACheckpointError(CheckpointReadError):
    """The file exists but is not a checkpoint of any kind we know."""


class CorruptCheckpointError(CheckpointReadError):
    """The file looks like a checkpoint but is truncated or damaged."""


class CheckpointNotFoundError(CheckpointReadError, FileNotFoundError):
    """There is no file at the path given."""


class UnsafePickleError(CheckpointReadError):
    """The pickle asked for a callable outside the allow-list; nothing was run.

    Carries ``module`` and ``name`` of the refused global.
    """

    def __init__(self, path: object, module: str, name: str) -> None:
        super().__init__(
            path,
            f"refused to load: the pickle calls {module}.{name}, which is not on the "
            "allow-list of tensor rebuild functions and plain containers; nothing from "
            "the file was run",
            hint="do not use this file unless you trust its origin and know why it needs that call",
        )
        self.module = module
        self.name = name


# --- conversion ---------------------------------------------------------------


class ConvertError(CkptError):
    """A conversion failed. Carries ``source`` and ``destination``."""

    def __init__(self, source: object, destination: object, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{source} -> {destination}: {message}", hint=hint)
        self.source, self.destination = str(source), str(destination)


class ModelLoadError(CkptError):
    """The model of a checkpoint cannot be built. Carries ``path`` and ``reason``."""

    def __init__(self, path: object, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = str(path)
        self.reason = reason


class ModelPackageMissingError(ModelLoadError, ImportError):
    """Building the model needs a package that is not installed (anemoi-models, torch-geometric).
    Carries ``package`` and ``version`` (the one the checkpoint was written with, if known)."""

    def __init__(self, path: object, reason: str, *, package: str, version: str | None = None, hint: str | None = None) -> None:
        super().__init__(path, reason, hint=hint)
        self.package, self.version = package, version


class ModelVersionGapError(ModelLoadError):
    """Another anemoi-models wrote it and the installed one cannot build it. Carries ``written_with``, ``installed``."""

    def __init__(self, path: object, reason: str, *, written_with: str, installed: str, hint: str | None = None) -> None:
        super().__init__(path, reason, hint=hint)
        self.written_with, self.installed = written_with, installed


# --- storage ------------------------------------------------------------------


class StorageError(CkptError, OSError):
    """A storage backend operation failed. Carries ``url`` and ``key``."""

    def __init__(
        self, url: str, key: str | None, message: str, *, hint: str | None = None
    ) -> None:
        where = f"{url.rstrip('/')}/{key}" if key else url
        super().__init__(f"{where}: {message}", hint=hint)
        self.url = url
        self.key = key


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The key does not exist in the storage."""


class ConflictError(StorageError):
    """A create-only write found the key already there, or a compare-and-swap
    found that someone else changed the object meanwhile (S3 412/409)."""


class StorageAccessError(StorageError, PermissionError):
    """Credentials are missing or wrong, or the bucket refuses us."""


class StorageUnreachableError(StorageError, ConnectionError):
    """The storage endpoint cannot be reached."""


class IntegrityError(StorageError):
    """Bytes read or written do not match the expected sha256."""


class InvalidKeyError(StorageError, ValueError):
    """A storage key is malformed (empty part, ``..``, a leading dot, ...)."""


class SymlinkRefusedError(StorageError):
    """A symlink where a folder storage keeps an object or a folder: never followed (docs/threat-model.md)."""


class BucketNotFoundError(StorageError):
    """The S3 bucket named in the storage URL does not exist."""


class StorageURLError(CkptError, ValueError):
    """A storage URL has an unknown scheme or is malformed. Carries ``url``."""

    def __init__(self, url: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{url}: {message}", hint=hint)
        self.url = url


class OfflineError(CkptError, ConnectionError):
    """The network was needed while ``ANEMOI_CKPT_OFFLINE=1`` forbids it."""


# --- catalogue ----------------------------------------------------------------


class CatalogueError(CkptError):
    """A catalogue operation was refused or failed."""


class NotRegisteredError(CatalogueError, LookupError):
    """No record matches the uuid or name. Carries ``ref``."""

    def __init__(self, ref: str, message: str | None = None, *, hint: str | None = None) -> None:
        super().__init__(message or f"no checkpoint {ref!r} in the catalogue", hint=hint)
        self.ref = ref


class MissingParentError(CatalogueError, LookupError):
    """Registration refused: a parent is not registered. Carries ``uuid`` and ``missing``."""

    def __init__(self, uuid: str, missing: list[str], *, hint: str | None = None) -> None:
        names = ", ".join(missing)
        super().__init__(
            f"cannot register {uuid}: its parent {names} is not in the catalogue",
            hint=hint,
        )
        self.uuid = uuid
        self.missing = list(missing)


class CatalogueNotFoundError(CatalogueError, FileNotFoundError):
    """There is no catalogue (no ``catalogue.json``) at the URL. Carries ``url``."""

    def __init__(self, url: str, *, hint: str | None = None) -> None:
        super().__init__(f"{url}: no catalogue here (no catalogue.json)", hint=hint)
        self.url = url


class AmbiguousReferenceError(CatalogueError, LookupError):
    """A name or uuid prefix matches several records. Carries ``ref`` and ``candidates``."""

    def __init__(self, ref: str, candidates: list[str], *, hint: str | None = None) -> None:
        shown = ", ".join(candidates[:5]) + (", ..." if len(candidates) > 5 else "")
        super().__init__(f"{ref!r} matches {len(candidates)} checkpoints: {shown}", hint=hint)
        self.ref = ref
        self.candidates = list(candidates)


class UuidClashError(CatalogueError, ValueError):
    """A uuid is already registered for a file with other bytes. Carries ``uuid``."""

    def __init__(self, uuid: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.uuid = uuid


class InvalidTagError(CatalogueError, ValueError):
    """A tag name is empty, has spaces or starts with ``+``/``-``. Carries ``tag``."""

    def __init__(self, tag: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.tag = tag


class ProtectedError(CatalogueError, PermissionError):
    """The action would remove or alter something a policy protects."""


# --- runs, compatibility ------------------------------------------------------


class DriftError(CkptError):
    """The environment differs from the checkpoint's in ways that matter.

    Carries ``differences``: a list of human-readable lines.
    """

    def __init__(self, message: str, differences: list[str], *, hint: str | None = None) -> None:
        super().__init__(message + ": " + "; ".join(differences), hint=hint)
        self.differences = list(differences)


class CacheError(CkptError, OSError):
    """A cached checkpoint is missing, incomplete or does not match its manifest.

    Carries ``path``: the file or folder of the cache it is about.
    """

    def __init__(self, path: object, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = str(path)


class InsufficientSpaceError(CacheError):
    """The cache's disk has too little free space for a download.

    Carries ``needed`` and ``free`` (bytes).
    """

    def __init__(self, path: object, needed: int, free: int, *, hint: str | None = None) -> None:
        super().__init__(
            path,
            f"not enough free disk space: need {needed:,} bytes (file and safety margin), "
            f"only {free:,} free",
            hint=hint,
        )
        self.needed = needed
        self.free = free


class CodeCheckoutError(CkptError, OSError):
    """The git state of a training-code checkout could not be read. Carries ``path``."""

    def __init__(self, path: object, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = str(path)


class SpoolError(CkptError, OSError):
    """A spool of captured checkpoints (``runs.spool``), or one of its entries, is unusable; the message names it."""


class RunPlanError(CkptError, ValueError):
    """A fork or resume cannot be planned as asked (wrong kind of checkpoint,
    no run id to resume, a missing option). Carries ``ref``."""

    def __init__(self, ref: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{ref}: {message}", hint=hint)
        self.ref = ref


class SchemaError(CkptError, ValueError):
    """A document does not match any known schema version, or a migration failed."""


# --- notebook display -----------------------------------------------------------


class RenderError(CkptError):
    """A lineage graph could not be drawn by the renderer asked for. Carries ``renderer``."""

    def __init__(self, renderer: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"lineage renderer {renderer!r}: {message}", hint=hint)
        self.renderer = renderer


# --- sites and locations ----------------------------------------------------------


class SiteError(CatalogueError):
    """A site or location operation was refused or failed (replicate, verify, drop)."""


class UnknownSiteError(SiteError, LookupError):
    """No site of that name is described in ``catalogue.json``. Carries ``site``."""

    def __init__(self, site: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.site = site


class LastCopyError(SiteError, ProtectedError):
    """Dropping this location would leave a kept checkpoint without a verified copy. Carries ``uuid``, ``site``."""

    def __init__(self, uuid: str, site: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.uuid = uuid
        self.site = site


class NoReachableCopyError(SiteError, OSError):
    """Every location of a checkpoint failed (unreachable, missing, damaged).

    Carries ``uuid`` and ``attempts``: ``(site, what went wrong)`` pairs, in the order tried.
    """

    def __init__(self, uuid: str, attempts: list[tuple[str, str]], *, hint: str | None = None) -> None:
        tried = "; ".join(f"{site}: {why}" for site, why in attempts) or "it has no recorded location"
        super().__init__(f"no copy of {uuid} could be fetched ({tried})", hint=hint)
        self.uuid = uuid
        self.attempts = list(attempts)
