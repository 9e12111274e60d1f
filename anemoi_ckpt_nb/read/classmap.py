"""The translation table: known placeholder classes -> plain data.

The restricted unpickler turns every class it does not rebuild into an inert
:class:`~anemoi_ckpt_nb.read.placeholders.Placeholder` that keeps its module path
and state. This module knows what some of those classes *mean* and turns
them into dicts and lists, the way their own code would serialise them:

* omegaconf ``DictConfig``/``ListConfig`` and their nodes -> dict / list of
  values (interpolations such as ``${a.b}`` stay strings, as
  ``OmegaConf.to_container(resolve=False)`` leaves them);
* anemoi index collections (``anemoi.models.data_indices.*``) -> dicts of
  their state, index tensors as lists;
* pydantic models -> dict of their fields;
* dict and list subclasses (anemoi's ``DotDict``, ...) -> dict / list of their items;
* ``argparse.Namespace``, ``types.SimpleNamespace`` and other objects whose
  state is a dict -> that dict, with ``"__class__"`` naming unknown classes.

Classes that moved between anemoi versions are renamed when unpickled (see
:func:`current_name`, backed by ``read.renames``), so entries here use
today's paths only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import lru_cache

from anemoi_ckpt_nb.read.arrayrefs import ArrayRef, DtypeRef
from anemoi_ckpt_nb.read.bounds import MAX_KEY_NODES, tree_size
from anemoi_ckpt_nb.read.placeholders import (
    Placeholder,
    is_placeholder,
    is_placeholder_class,
    is_reference,
)
from anemoi_ckpt_nb.read.tensorrefs import Dtype, TensorRef

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:  # pragma: no cover
    import datetime
    from typing import Any

    Translator = Callable[[Placeholder, Callable[[Any], Any]], Any]

#: ``module.Name`` -> translator(placeholder, plain) where ``plain`` converts nested values.
TRANSLATORS: dict[str, Translator] = {}
#: Module prefixes -> translator, for whole families of classes (longest prefix wins).
PREFIX_TRANSLATORS: dict[str, Translator] = {}

#: Tensors and arrays larger than this become a ``{"shape", "dtype"}`` summary, not a list.
MAX_LIST_ELEMENTS = 1_000_000


def register(*paths: str, prefix: bool = False) -> Callable[[Translator], Translator]:
    """Decorator: use the function to translate placeholders of the given classes (or module prefixes)."""

    def decorate(func: Translator) -> Translator:
        for path in paths:
            (PREFIX_TRANSLATORS if prefix else TRANSLATORS)[path] = func
        return func

    return decorate


def current_name(module: str, name: str) -> tuple[str, str]:
    """Where today's code has the class an old pickle calls ``module.name``.

    Uses ``anemoi_ckpt_nb.read.renames`` (the table of moved and renamed
    classes); the input unchanged when nothing moved.
    """
    resolve = _resolver()
    return resolve(module, name) if resolve is not None else (module, name)


@lru_cache(maxsize=1)
def _resolver() -> Callable[[str, str], tuple[str, str]] | None:
    try:
        from anemoi_ckpt_nb.read.renames import resolve_class
    except ImportError:  # the table is optional: without it names stay as written
        return None
    return resolve_class


def translator_for(path: str) -> Translator | None:
    """The translator registered for ``module.Name``, exactly or by module prefix."""
    if path in TRANSLATORS:
        return TRANSLATORS[path]
    module = path.rpartition(".")[0]
    while module:
        if module in PREFIX_TRANSLATORS:
            return PREFIX_TRANSLATORS[module]
        module = module.rpartition(".")[0]
    return None


def class_path(obj: Any) -> str | None:
    """``module.Name`` of a placeholder (instance or class) or of a function reference, else ``None``."""
    if is_placeholder(obj) or is_placeholder_class(obj) or is_reference(obj):
        return f"{obj.ph_module}.{obj.ph_name}"
    return None


def state_dict(obj: Placeholder) -> dict | None:
    """The ``BUILD`` state of a placeholder as a dict (``(dict, slots)`` pairs merged), or ``None``."""
    state = obj.ph_state
    if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
        merged: dict = {}
        for part in state:
            merged.update(part or {})
        return merged
    return state if isinstance(state, dict) else None


def to_plain(obj: Any, *, tensors: str = "list") -> Any:
    """Plain Python data (dict, list, str, numbers, None) from an unpickled object.

    Args:
        obj: anything from :attr:`CheckpointFile.raw <anemoi_ckpt_nb.read.checkpoint.CheckpointFile.raw>`.
        tensors: ``"list"`` turns tensors and numpy arrays into lists (as
            anemoi-training does when it writes metadata); ``"keep"`` leaves them.

    Returns:
        The same structure with placeholders translated, tuples and sets as
        lists, dates as ISO strings, time deltas as ``"6h"``-style strings.
    """
    return _Plain(tensors).convert(obj)


class _Plain:
    def __init__(self, tensors: str) -> None:
        if tensors not in ("list", "keep"):
            raise ValueError(f"tensors must be 'list' or 'keep', not {tensors!r}")
        self.tensors = tensors
        self.memo: dict[int, Any] = {}

    def convert(self, obj: Any) -> Any:
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if isinstance(obj, dict):
            result: dict = {}
            self.memo[key] = result  # before recursing: shared and cyclic references resolve to the same dict
            for k, v in obj.items():
                result[self._key(k)] = self.convert(v)
            return result
        if isinstance(obj, (list, tuple)) or type(obj).__name__ == "deque":
            items: list = []
            self.memo[key] = items
            items.extend(self.convert(v) for v in obj)
            return items
        if isinstance(obj, (set, frozenset)):
            values = [self.convert(v) for v in obj]
            try:
                values = sorted(values)
            except TypeError:
                pass
            self.memo[key] = values  # sets cannot hold themselves; shared ones convert once
            return values
        if is_placeholder(obj):
            return self._placeholder(obj)
        return self._scalar(obj)

    def _key(self, key: Any) -> Any:
        converted = self.convert(key)
        try:
            hash(converted)
        except TypeError:
            tree_size(converted, limit=MAX_KEY_NODES)  # repr() spells out every shared part
            return repr(converted)
        return converted

    def _placeholder(self, obj: Placeholder) -> Any:
        translate = translator_for(obj.ph_path)
        if translate is not None:
            result = translate(obj, self.convert)
        else:
            result = _generic(obj, self.convert)
        self.memo[id(obj)] = result
        return result

    def _scalar(self, obj: Any) -> Any:
        if isinstance(obj, TensorRef):
            return self._described(obj)
        if type(obj) is ArrayRef:  # a numpy array described: kept as it is, or made (numpy imported) for its values
            return obj if self.tensors == "keep" else self._numpy(obj.numpy())
        if type(obj) is DtypeRef:
            return obj.name
        if isinstance(obj, Dtype):
            return obj.name
        module = type(obj).__module__
        if module.startswith("torch"):
            return self._torch(obj)
        if module.startswith("numpy"):
            return self._numpy(obj)
        if "datetime" in sys.modules:  # else no datetime object exists: not imported for nothing
            import datetime

            if isinstance(obj, datetime.timedelta):
                return frequency_to_string(obj)
            if isinstance(obj, (datetime.date, datetime.time)):
                return obj.isoformat()
        if isinstance(obj, bytes):
            return obj.decode("latin-1")
        if isinstance(obj, complex):
            return [obj.real, obj.imag]
        if is_placeholder_class(obj) or is_reference(obj):
            return class_path(obj)  # "torch.nn.functional.gelu"
        if isinstance(obj, type):
            return f"{obj.__module__}.{obj.__qualname__}"
        if type(obj).__name__ in ("Decimal", "Fraction"):
            return float(obj)
        return str(obj)  # UUID, pure paths, slices, dtypes...

    def _torch(self, obj: Any) -> Any:
        import torch

        if isinstance(obj, torch.Tensor):
            if self.tensors == "keep":
                return obj
            if obj.numel() > MAX_LIST_ELEMENTS:
                return {"shape": list(obj.shape), "dtype": dtype_name(obj.dtype)}
            return obj.tolist()
        if isinstance(obj, torch.Size):
            return list(obj)
        if isinstance(obj, torch.dtype):
            return dtype_name(obj)
        return str(obj)

    def _described(self, obj: TensorRef) -> Any:
        """A tensor read without torch: its values from the file, as for a torch tensor."""
        if self.tensors == "keep":
            return obj.numpy()  # supporting arrays: numpy arrays, as anemoi-utils gives them
        if obj.numel > MAX_LIST_ELEMENTS:
            return {"shape": list(obj.shape), "dtype": obj.dtype.name}
        return obj.numpy().tolist()

    def _numpy(self, obj: Any) -> Any:
        import numpy as np

        if isinstance(obj, np.ndarray):
            if self.tensors == "keep":
                return obj
            if obj.size > MAX_LIST_ELEMENTS:
                return {"shape": list(obj.shape), "dtype": str(obj.dtype)}
            return self.convert(obj.tolist()) if obj.dtype == object else obj.tolist()
        if isinstance(obj, np.generic):
            return self.convert(obj.item())
        return str(obj)


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for ``torch.float32``."""
    return str(dtype).removeprefix("torch.")


def frequency_to_string(delta: datetime.timedelta) -> str:
    """A time delta as anemoi-utils writes it in metadata: ``"6h"``, ``"1d"``, ``"30m"``, ``"10s"``."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "-" + frequency_to_string(-delta)
    if seconds == 0:
        return "0h"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _generic(obj: Placeholder, plain: Callable[[Any], Any]) -> Any:
    """What an unknown class most likely held: its items, else its state, named by ``__class__``."""
    if obj.ph_dictitems and not obj.ph_listitems:
        return {_hashable(plain(k)): plain(v) for k, v in obj.ph_dictitems}
    if obj.ph_listitems and not obj.ph_dictitems:
        return [plain(v) for v in obj.ph_listitems]
    state = state_dict(obj)
    pydantic = _pydantic_fields(state)
    if pydantic is not None:
        return plain(pydantic)
    result: dict[str, Any] = {"__class__": obj.ph_path}
    if state is not None:
        for k, v in state.items():
            result[str(k)] = plain(v)
    elif obj.ph_state is not None:
        result["state"] = plain(obj.ph_state)
    if obj.ph_args:
        result["args"] = [plain(a) for a in obj.ph_args]
    if obj.ph_kwargs:
        result["kwargs"] = {str(k): plain(v) for k, v in obj.ph_kwargs.items()}
    if obj.ph_setitems:
        result["items"] = [plain(v) for v in obj.ph_setitems]
    return result


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _pydantic_fields(state: dict | None) -> dict | None:
    """The field values of a pickled pydantic (v1 or v2) model, or ``None`` if it is not one."""
    if not state or "__dict__" not in state or not isinstance(state["__dict__"], dict):
        return None
    if not any(k in state for k in ("__pydantic_fields_set__", "__fields_set__", "__pydantic_extra__")):
        return None
    fields = dict(state["__dict__"])
    extra = state.get("__pydantic_extra__")
    if isinstance(extra, dict):
        fields.update(extra)
    return fields


# --- the table ------------------------------------------------------------------

_OMEGACONF_NODES = (
    "AnyNode",
    "ValueNode",
    "StringNode",
    "IntegerNode",
    "FloatNode",
    "BooleanNode",
    "EnumNode",
    "BytesNode",
    "PathNode",
    "InterpolationResultNode",
    "UnionNode",
)


@register("omegaconf.dictconfig.DictConfig")
def _dictconfig(obj: Placeholder, plain: Callable[[Any], Any]) -> Any:
    content = (state_dict(obj) or {}).get("_content")
    if isinstance(content, dict):
        return {_hashable(plain(k)): plain(v) for k, v in content.items()}
    return plain(content)  # None, "???" (missing) or an interpolation string


@register("omegaconf.listconfig.ListConfig")
def _listconfig(obj: Placeholder, plain: Callable[[Any], Any]) -> Any:
    content = (state_dict(obj) or {}).get("_content")
    if isinstance(content, (list, tuple)):
        return [plain(v) for v in content]
    return plain(content)


@register(*(f"omegaconf.nodes.{name}" for name in _OMEGACONF_NODES))
def _omegaconf_node(obj: Placeholder, plain: Callable[[Any], Any]) -> Any:
    return plain((state_dict(obj) or {}).get("_val"))


@register("omegaconf.base.ContainerMetadata", "omegaconf.base.Metadata")
def _omegaconf_metadata(obj: Placeholder, plain: Callable[[Any], Any]) -> Any:
    return {str(k): plain(v) for k, v in (state_dict(obj) or {}).items()}


@register("anemoi.models.data_indices", prefix=True)
def _anemoi_index(obj: Placeholder, plain: Callable[[Any], Any]) -> Any:
    # IndexCollection, DataIndex/ModelIndex and the tensor indices: their state, tensors as lists.
    return {str(k): plain(v) for k, v in (state_dict(obj) or {}).items()}


@register("argparse.Namespace", "types.SimpleNamespace")
def _namespace(obj: Placeholder, plain: Callable[[Any], Any]) -> Any:
    return {str(k): plain(v) for k, v in (state_dict(obj) or {}).items()}


@register("operator.getitem", "types.GenericAlias")
def _subscript(obj: Placeholder, plain: Callable[[Any], Any]) -> Any:
    # typing aliases: Dict[str, Any] -> "typing.Dict[builtins.str, typing.Any]";
    # builtin generics: tuple[int, str] -> "tuple[int, str]" (``types.GenericAlias(tuple, (int, str))``)
    base, args = (obj.ph_args + (None, None))[:2]
    args = args if isinstance(args, tuple) else (args,)
    return f"{_type_name(base)}[{', '.join(_type_name(a) for a in args)}]"


def _type_name(value: Any) -> str:
    if is_placeholder(value) and value.ph_path in ("operator.getitem", "types.GenericAlias"):
        return _subscript(value, str)
    path = class_path(value)
    if path is not None:
        return path
    if isinstance(value, type):
        return value.__qualname__ if value.__module__ == "builtins" else f"{value.__module__}.{value.__qualname__}"
    return repr(value)
