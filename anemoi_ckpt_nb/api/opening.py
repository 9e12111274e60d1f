"""Which catalogue a :class:`~anemoi_ckpt_nb.api.catalogue.Catalogue` opens when none is named,
and when that default is created (by writers, on first use; never by a reader)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import CatalogueNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.storage.base import Storage

#: Environment variable naming the default catalogue.
ENV_CATALOGUE = "ANEMOI_CKPT_CATALOGUE"


def default_url() -> str:
    """The catalogue used when none is named: ``$ANEMOI_CKPT_CATALOGUE``, else
    ``<user data dir>/anemoi-ckpt-nb/catalogue`` (see :mod:`anemoi_ckpt_nb.settings`)."""
    from anemoi_ckpt_nb import settings

    return settings.catalogue().value


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def open_store(
    url: str | os.PathLike | None, storage: Storage | None, *, create_default: bool
) -> tuple[CatalogueStore, bool]:
    """``(store, created)``: the catalogue at ``url`` (or ``storage``), else the default one,
    created if missing, local and ``create_default``; ``created`` tells it was made now.

    Raises:
        CatalogueNotFoundError: no catalogue there (and not the default one to create).
    """
    from anemoi_ckpt_nb.storage import open_storage

    implicit = url is None and storage is None
    if storage is None:
        url = default_url() if url is None else os.fspath(url)
        storage = open_storage(url, **({"role": f"the catalogue {url}"} if _is_local(str(url)) else {}))
    try:
        return CatalogueStore.open(storage), False
    except CatalogueNotFoundError as error:
        if not (implicit and _is_local(str(url))):
            raise
        if not create_default:
            raise CatalogueNotFoundError(
                str(url), hint="nothing is registered yet: the first `anemoi-ckpt register` creates it "
                "(`anemoi-ckpt info` shows which catalogue is used and why)",
            ) from error
        return CatalogueStore.create(storage, exist_ok=True), True
