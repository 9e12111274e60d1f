"""The catalogue: records and their schema, register, tags, search, the index, clean and its policy, lineage, on any storage.

May import: ``compat``, ``read``, ``storage``, ``errors``; never ``sites``, ``runs`` or a face (sites plug in through :mod:`.copies` and ``clean``'s ``forget``).
"""

from anemoi_ckpt_nb.catalogue.store import CatalogueStore

__all__ = ["CatalogueStore"]
