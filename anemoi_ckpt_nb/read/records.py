"""Plain record classes for the reading path, without :mod:`dataclasses`.

``import dataclasses`` brings ``inspect``, ``ast``, ``dis`` and ``tokenize``, and each
``@dataclass`` compiles generated code when its module is imported: together about
a tenth of what ``anemoi-ckpt inspect`` spent on a 3 GB checkpoint (issue 16). The
reader's few records write their ``__init__`` by hand and take ``__repr__`` and
``__eq__`` (and, frozen, ``__hash__`` and immutability) from these bases, which
behave as the dataclass methods did: the repr lists the fields in order, two
records are equal when they are of the same class with equal fields.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any


class Record:
    """A mutable record: ``FIELDS`` in order, compared by value (``eq=False`` classes set ``__eq__`` back)."""

    FIELDS: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as a dataclass


class FrozenRecord(Record):
    """An immutable record: set once in ``__init__`` (through :meth:`_set`), hashed by its fields."""

    def _set(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def __hash__(self) -> int:
        return hash(self._values())
