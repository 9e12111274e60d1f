"""The upkeep methods of :class:`~anemoi_ckpt_nb.api.catalogue.Catalogue` beyond retention: leftovers of killed commands.

Kept apart so that the catalogue's face stays short; each method delegates to its module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore
    from anemoi_ckpt_nb.sites.orphans import OrphanReport


class Maintenance:
    """Mixed into :class:`~anemoi_ckpt_nb.api.catalogue.Catalogue`, which provides ``_store``."""

    _store: CatalogueStore

    def clean_orphans(self, *, min_age_hours: float = 24.0, dry_run: bool = True) -> OrphanReport:
        """Find, and with ``dry_run=False`` remove, what killed commands left in the catalogue and at its sites.

        Temporary files that no live process holds go whatever their age (each writer holds a
        lock on its own); unfinished S3 multipart uploads go once they had no new part for
        ``min_age_hours``.

        Args:
            min_age_hours: Hours without a new part before a multipart upload counts (also the
                age a temporary needs on a filesystem without ``flock``).
            dry_run: Only list (the default).

        Returns:
            An ``OrphanReport``: ``orphans`` (found, or removed), ``skipped`` (taken up by a writer
            meanwhile), ``unreachable`` sites with why.

        Raises:
            ValueError: a negative age.
        """
        from anemoi_ckpt_nb.sites.orphans import clean_orphans

        return clean_orphans(self._store, min_age=min_age_hours * 3600.0, dry_run=dry_run)
