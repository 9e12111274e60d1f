"""What the restricted unpickler gives back instead of running code: inert placeholder classes, references, storage markers.

A :class:`Placeholder` stands for a class the file names (anemoi, omegaconf, ``torch.nn`` modules, ...): calling or
instantiating it only records the arguments and state. A :class:`Reference` stands for a function of torch, numpy,
``math`` or ``operator``: its module and name, never imported, never called.
"""

from __future__ import annotations

from collections.abc import Iterator

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import UnsafePickleError


class _Named:
    """What placeholders and references share: a module path and a name, shown, never looked up."""

    __slots__ = ()
    _label = ""
    ph_module: str
    ph_name: str

    @property
    def ph_path(self) -> str:
        """``module.name`` of the class or function."""
        return f"{self.ph_module}.{self.ph_name}"

    def __repr__(self) -> str:
        return f"<{self._label} {self.ph_module}.{self.ph_name}>"


class Placeholder(_Named):
    """An object of a class the reader does not rebuild: inert, keeps what the pickle gave it.

    A placeholder *class* is made per ``(module, name)`` global; calling it (pickle
    ``REDUCE``) or instantiating it (``NEWOBJ``) makes an instance that stores the
    arguments. ``BUILD`` state, list items and dict items are stored as given.

    Attributes:
        ph_module: the module path of the class (after renames of moved classes).
        ph_name: the qualified name of the class.
        ph_original: ``(module, name)`` as the file wrote it.
        ph_args: positional arguments the pickle called the class with.
        ph_kwargs: keyword arguments (``NEWOBJ_EX`` only).
        ph_state: the ``BUILD`` state (usually the object's ``__dict__``), or ``None``.
        ph_listitems: items appended by the pickle (list subclasses).
        ph_dictitems: ``(key, value)`` pairs set by the pickle (dict subclasses).
        ph_setitems: items added by the pickle (set subclasses).
    """

    __slots__ = ("ph_args", "ph_kwargs", "ph_state", "ph_listitems", "ph_dictitems", "ph_setitems", "__weakref__")
    _label = "opaque"

    ph_module: str = ""
    ph_name: str = ""
    ph_original: tuple[str, str] = ("", "")


def is_placeholder(obj: Any) -> bool:
    """Whether ``obj`` is a placeholder instance (not a placeholder class)."""
    return isinstance(obj, Placeholder)


def is_placeholder_class(obj: Any) -> bool:
    """Whether ``obj`` is a placeholder class made for a global of the pickle."""
    return isinstance(obj, type) and issubclass(obj, Placeholder) and obj is not Placeholder


def new_placeholder(cls: type[Placeholder], args: tuple = (), kwargs: dict | None = None) -> Placeholder:
    """An inert instance of a placeholder class, recording the arguments."""
    obj = object.__new__(cls)
    obj.ph_args = tuple(args)
    obj.ph_kwargs = dict(kwargs or {})
    obj.ph_state = None
    obj.ph_listitems = []
    obj.ph_dictitems = []
    obj.ph_setitems = []
    return obj


def placeholder_class(module: str, name: str, original: tuple[str, str] | None = None) -> type[Placeholder]:
    """A new placeholder class standing for ``module.name``."""
    namespace = {
        "__slots__": (),
        "__module__": module,
        "__qualname__": name,
        "ph_module": module,
        "ph_name": name,
        "ph_original": original or (module, name),
    }
    return type(name.rpartition(".")[2] or "Opaque", (Placeholder,), namespace)


class Reference(_Named):
    """A function the pickle names but never gets: its module and name, nothing else.

    A pickled model keeps functions as attributes (``self.activation =
    torch.nn.functional.gelu``) and pickle stores them by name. The reader
    keeps that name: the function is never looked up for use, imported or
    called, and a reference is not callable. A pickle that tries to call one
    (``REDUCE``, ``NEWOBJ``, ``INST``, a ``defaultdict`` factory, ...) or to
    give it state (``BUILD``, items) is refused with
    :class:`~anemoi_ckpt_nb.errors.UnsafePickleError`.

    Attributes:
        ph_module: the module path of the function.
        ph_name: its qualified name (``"Tensor.add"`` for a method).
        ph_original: ``(module, name)`` as the file wrote it.
    """

    __slots__ = ("ph_module", "ph_name", "ph_original", "__weakref__")
    _label = "reference"

    def __init__(self, module: str, name: str, original: tuple[str, str] | None = None) -> None:
        self.ph_module = module
        self.ph_name = name
        self.ph_original = original or (module, name)


def is_reference(obj: Any) -> bool:
    """Whether ``obj`` is an inert :class:`Reference` to a function."""
    return isinstance(obj, Reference)


class StorageMarker:
    """What a torch ``FloatStorage``-style global resolves to: only a dtype."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: Any) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"StorageMarker({self.name})"


def _unsafe_callable(obj: Any) -> UnsafePickleError:
    if is_reference(obj):
        return UnsafePickleError("<pickle>", obj.ph_module, obj.ph_name)
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return UnsafePickleError("<pickle>", str(module), str(name))


def iter_children(obj: Any) -> Iterator[Any]:
    """The objects directly held by a container or placeholder (for walks over ``raw``)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield value
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from obj
    elif is_placeholder(obj):
        yield from obj.ph_args
        yield from obj.ph_kwargs.values()
        if obj.ph_state is not None:
            yield obj.ph_state
        yield from obj.ph_listitems
        for key, value in obj.ph_dictitems:
            yield key
            yield value
        yield from obj.ph_setitems
