"""Which checkpoint a run was forked from, by the run manifests in ``manifests/`` (written by
:mod:`anemoi_ckpt_nb.runs.manifest`).

A fork that loads only the weights records no ``parent_uuid``: the ``fork`` or ``plan``
manifest naming its new run id is what links it to its parent. Registration asks for every
training file without a parent, so reading every manifest on every call would cost one GET per
manifest per call (a training callback or ``sync`` registers one file per call). Manifests are
create-only, so what a manifest says is kept per catalogue object, by key and etag: a later call
lists ``manifests/`` once and reads only the manifests it has not seen.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.errors import ObjectNotFoundError, SchemaError

if TYPE_CHECKING:  # pragma: no cover
    from anemoi_ckpt_nb.catalogue.store import CatalogueStore

#: One manifest's fork, ``(created_at, run id, parent uuid)``, or None if it is not a fork.
Fork = tuple[str, str, str] | None

_seen: weakref.WeakKeyDictionary[CatalogueStore, dict[str, tuple[str, Fork]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def fork_parents(store: CatalogueStore) -> dict[str, str]:
    """New run id -> parent uuid of every fork manifest (``manifests/<uuid>.json``).

    Should two manifests name one run id (a run id is fresh per fork), the first one planned stands.
    """
    with _lock:
        known = _seen.setdefault(store, {})
    current: dict[str, tuple[str, Fork]] = {}
    for info in store.storage.list(layout.MANIFESTS):
        cached = known.get(info.key)
        if cached is not None and cached[0] == info.etag:
            current[info.key] = cached
            continue
        try:
            data, etag = store.storage.get(info.key)
        except ObjectNotFoundError:
            continue
        current[info.key] = (etag, _fork_of(store, info.key, data))
    with _lock:
        _seen[store] = current  # deleted manifests drop out
    forks: dict[str, str] = {}
    for _, run_id, parent_uuid in sorted(fork for _, fork in current.values() if fork is not None):
        forks.setdefault(run_id, parent_uuid)
    return forks


def _fork_of(store: CatalogueStore, key: str, data: bytes) -> Fork:
    from anemoi_ckpt_nb.catalogue.documents import parse_object

    try:
        manifest = parse_object(data, f"{store.url}/{key}", expected="a run manifest")
    except SchemaError:
        return None
    parent = manifest.get("parent")
    run_id = manifest.get("run_id")
    if manifest.get("mode") == "fork" and isinstance(run_id, str) and isinstance(parent, dict):
        if isinstance(parent.get("uuid"), str):
            return (str(manifest.get("created_at", "")), run_id, parent["uuid"])
    return None
