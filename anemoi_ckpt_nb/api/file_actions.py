"""The methods of :class:`~anemoi_ckpt_nb.api.checkpoint.Checkpoint` that act on its file: copies at sites,
the run cache, fork and resume, loading the model and converting.

Kept apart so that the checkpoint's face stays short; each method delegates to ``sites``, ``runs`` or ``conversion``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anemoi_ckpt_nb.catalogue import register as _register

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.api.catalogue import Catalogue
    from anemoi_ckpt_nb.api.checkpoint import Checkpoint
    from anemoi_ckpt_nb.catalogue.schema import CheckpointRecord, Location
    from anemoi_ckpt_nb.conversion.plan import ConvertResult
    from anemoi_ckpt_nb.sites.drop import DropResult
    from anemoi_ckpt_nb.sites.fetch import FetchResult
    from anemoi_ckpt_nb.sites.transfer import ReplicateResult, VerifyResult


class FileActions:
    """Mixed into :class:`~anemoi_ckpt_nb.api.checkpoint.Checkpoint`, which provides ``catalogue``, ``record``,
    ``uuid`` and ``sha256``."""

    catalogue: Catalogue
    record: CheckpointRecord
    uuid: str
    sha256: str

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

    def load_model(self, *, device: str = "cpu", mmap: bool | None = None, cache_dir: str | os.PathLike | None = None) -> Any:
        """The model of this checkpoint, built by anemoi-models (:func:`~anemoi_ckpt_nb.conversion.loader.load_model`)."""
        from anemoi_ckpt_nb.conversion.loader import load_model

        return load_model(self.local_path(cache_dir=cache_dir), device=device, mmap=mmap)

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
            format: ``"anemoi"``, ``"safetensors"`` or ``"pickled"`` (anemoi-training's pickled
                model, which anemoi-inference's default runner loads; needs anemoi-models here).
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
        return type(self)(self.catalogue, registration.record)
