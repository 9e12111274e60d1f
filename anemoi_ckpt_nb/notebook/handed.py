"""What the widgets are handed: the shape of a checkpoint and of a catalogue, as protocols.

The public objects (:class:`~anemoi_ckpt_nb.api.Checkpoint`, :class:`~anemoi_ckpt_nb.api.Catalogue`)
have this shape; the notebook names only the shape, so it never imports the objects that display
themselves through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class HandedCatalogue(Protocol):
    """A catalogue as the browser and the editors use it."""

    @property
    def url(self) -> str: ...

    @property
    def protected_tags(self) -> list[str]: ...

    def entries(self, **filters: Any) -> list[dict[str, Any]]: ...

    def get(self, ref: str) -> HandedCheckpoint: ...


class HandedCheckpoint(Protocol):
    """A registered checkpoint as the tag editor, the convert panel and the browser use it."""

    @property
    def catalogue(self) -> HandedCatalogue: ...

    @property
    def uuid(self) -> str: ...

    @property
    def name(self) -> str | None: ...

    @property
    def filename(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def record(self) -> Any: ...

    @property
    def size(self) -> int | None: ...

    @property
    def tags(self) -> list[str]: ...

    def tag_history(self) -> list[Any]: ...

    def locations(self) -> list[Any]: ...

    def tag(self, *tags: str) -> Any: ...

    def untag(self, *tags: str) -> Any: ...

    def convert(
        self,
        dest_dir: str | os.PathLike,
        *,
        format: str = ...,
        tags: Sequence[str] = ...,
        progress: Callable[[int, int], None] | None = ...,
    ) -> Any: ...

    def lineage(self, *, renderer: str | None = ...) -> Any: ...
