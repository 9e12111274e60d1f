"""The catalogue: register, get, search, tag, clean, on any :class:`~anemoi_ckpt_nb.storage.base.Storage`.

Modules, each small:

* :mod:`.layout`: the keys of every object and how documents are written;
* :mod:`.store`: :class:`CatalogueStore`, the descriptor, records and tag states;
* :mod:`.index`: the compacted index that keeps listing fast (design in its docstring);
* :mod:`.records`: what a checkpoint file says about itself;
* :mod:`.register`: files to blobs to records, in lineage order;
* :mod:`.tags`: tag changes by compare-and-swap, with history;
* :mod:`.search`: lookups by uuid, prefix or name, and filters;
* :mod:`.files`: a checkpoint's metadata;
* :mod:`.clean`: applying a retention policy (rules in :mod:`anemoi_ckpt_nb.core.policy`).

The public face is :class:`anemoi_ckpt_nb.api.Catalogue`.
"""

from anemoi_ckpt_nb.core.catalogue.store import CatalogueStore

__all__ = ["CatalogueStore"]
