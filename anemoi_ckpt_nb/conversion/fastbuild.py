"""The same model for less of OmegaConf and Hydra: used by :func:`.loader.load_model`.

Building ``AnemoiModelInterface`` spends most of its time outside the model's layers (about 65 of
the 100 ms of a warm build of the real gnn fixture): ``OmegaConf.create`` of the checkpoint's
config (~500 nodes, ~22 ms), and Hydra's ``instantiate``, which anemoi-models calls for the model
and each of its parts: it deep-copies the config it is given, merges the keyword arguments into
that copy (the whole config again, for the model's ``model_config=``: ~24 ms) and resolves it,
only to hand the target plain copies of what it was given. Two shortcuts give the same objects:

* :func:`config_tree` builds the ``DictConfig`` node by node, as unpickling one does, instead of
  through OmegaConf's validating setters: the same nodes as ``OmegaConf.create`` (checked once per
  process against it on a probe holding every kind of node, and by the tests on the fixtures'
  configs; on any difference ``OmegaConf.create`` is used).
* inside :func:`instantiating`, anemoi-models' calls of Hydra's ``instantiate`` that need none of
  its machinery (no interpolation, no ``_partial_``, no recursion into nested targets, no
  ``_convert_``, no positional arguments, no keyword overriding a config key) call the target
  directly with what Hydra would pass: configs as detached ``DictConfig``/``ListConfig`` copies
  keyed by the argument's name, plain dicts and lists of keyword arguments turned into configs,
  other objects as they are. Everything else goes to Hydra. Targets must be classes of
  :data:`.targets.ALLOWED` (Hydra's own target policy is not consulted on this path; the file's
  config was checked by :func:`.targets.check_targets` before).

``tests/real_env/fastbuild_compare.py`` records every call either way and checks the arguments
are the same (configs pickle-identical, other objects the same objects), and the models' outputs
equal.
"""

from __future__ import annotations

import pickle
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Off: OmegaConf and Hydra build everything (the comparison tests build both ways).
ENABLED = True
_LOCAL = threading.local()
_LOCK = threading.Lock()
_HYDRA: Any = None  # Hydra's instantiate, once replaced in anemoi.models' modules
_PATCHED: set[str] = set()
_SEEN = 0  # len(sys.modules) when last looked through
_TREE_OK: bool | None = None
_SPECIAL = ("_target_", "_convert_", "_recursive_", "_partial_", "_args_")
#: Plain values OmegaConf keeps in an ``AnyNode`` as they are.
_PRIMITIVES = (str, int, float, bool, type(None))
#: Every kind of node a JSON config makes: the probe the fast tree is checked against.
_PROBE = {"a": 1, "b": [1, {"c": None, "d": []}], "e": {"f": "x", "g": {}}, "h": 1.5, "i": True,
          "j": "${a}", "k": "???", "l": [[2.0, "y"], False]}


class _NotPlain(Exception):
    """A value the fast paths leave to OmegaConf or Hydra."""


# --- config trees ---------------------------------------------------------------------------


def config_tree(data: dict[str, Any]) -> Any:
    """``OmegaConf.create(data)`` for JSON-like ``data`` (dicts with string keys, lists, plain values)."""
    from omegaconf import OmegaConf

    if _tree_ok():
        try:
            return _tree(data, None, None, objects=False)
        except _NotPlain:
            pass
    return OmegaConf.create(data)


def has_interpolation(data: Any) -> bool:
    """Whether a string of ``data`` (plain values) is or holds an OmegaConf interpolation or ``???``."""
    if isinstance(data, str):
        return "${" in data or data == "???"
    if isinstance(data, dict):
        return any(has_interpolation(value) for value in data.values())
    if isinstance(data, list):
        return any(has_interpolation(value) for value in data)
    return False


def _tree_ok() -> bool:
    """Whether :func:`_tree` makes what this OmegaConf's ``create`` makes (once per process)."""
    global _TREE_OK
    if _TREE_OK is None:
        from omegaconf import OmegaConf

        try:
            _TREE_OK = pickle.dumps(_tree(_PROBE, None, None, objects=False)) == pickle.dumps(OmegaConf.create(_PROBE))
        except Exception:  # another OmegaConf whose nodes are made otherwise
            _TREE_OK = False
    return _TREE_OK


def _tree(value: Any, key: Any, parent: Any, *, objects: bool, allow_objects: bool = False) -> Any:
    """The OmegaConf node of ``value`` (``objects``: any other object is kept in an ``AnyNode``, as
    Hydra's ``allow_objects`` does; ``allow_objects``: that flag set on every dict and list, as
    Hydra's recursive instantiation sets it), its state set as unpickling sets it."""
    from omegaconf import AnyNode, DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata

    if isinstance(value, (dict, list)):
        kind, is_dict = (DictConfig, True) if isinstance(value, dict) else (ListConfig, False)
        node = kind.__new__(kind)
        metadata = ContainerMetadata(ref_type=Any, object_type=dict if is_dict else list, optional=True, key=key,
                                     key_type=Any if is_dict else int, element_type=Any,
                                     flags={"allow_objects": True} if allow_objects else None)
        _state(node, metadata, parent)
        if is_dict:
            if any(type(name) is not str for name in value):
                raise _NotPlain(value)
            items = value.items()
        else:
            items = enumerate(value)
        content = {name: _tree(item, name, node, objects=objects, allow_objects=allow_objects) for name, item in items}
        node.__dict__["_content"] = content if is_dict else list(content.values())
        return node
    if type(value) not in _PRIMITIVES and (not objects or _config_like(value)):
        raise _NotPlain(value)
    node = AnyNode.__new__(AnyNode)
    _state(node, Metadata(ref_type=Any, object_type=None, optional=True, key=key), parent)
    node.__dict__["_val"] = value
    return node


def _state(node: Any, metadata: Any, parent: Any) -> None:
    # The order of OmegaConf's Node.__init__, so that the pickles compare equal.
    node.__dict__["_metadata"] = metadata
    node.__dict__["_parent"] = parent
    node.__dict__["_flags_cache"] = None


def _config_like(value: Any) -> bool:
    """Values OmegaConf would turn into config nodes or special nodes rather than keep as objects."""
    import enum
    from pathlib import PurePath

    from omegaconf import OmegaConf
    from omegaconf._utils import is_structured_config

    return (isinstance(value, (tuple, bytes, enum.Enum, PurePath, str, dict, list)) or OmegaConf.is_config(value)
            or is_structured_config(value))


def _plain(node: Any) -> Any:
    """The values of an OmegaConf tree whose every node is a plain one (no flags, types or
    interpolations), for :func:`_tree` to copy it; else :class:`_NotPlain`."""
    from omegaconf import AnyNode, DictConfig, ListConfig

    metadata = node._metadata
    if metadata.flags or metadata.flags_root or metadata.ref_type is not Any or metadata.resolver_cache:
        raise _NotPlain(node)
    kind = type(node)
    if kind is AnyNode:
        value = node._val
        if isinstance(value, str) and has_interpolation(value):
            raise _NotPlain(value)
        return value
    content = node.__dict__["_content"]
    if kind is DictConfig and metadata.object_type is dict and metadata.key_type is Any and metadata.element_type is Any:
        if not isinstance(content, dict):  # None or an interpolation in place of the dict
            raise _NotPlain(node)
        return {name: _plain(item) for name, item in content.items()}
    if kind is ListConfig and metadata.object_type is list and metadata.element_type is Any:
        if not isinstance(content, list):
            raise _NotPlain(node)
        return [_plain(item) for item in content]
    raise _NotPlain(node)


# --- instantiate ----------------------------------------------------------------------------


@contextmanager
def instantiating() -> Iterator[None]:
    """anemoi-models' ``instantiate`` calls made by this thread inside the block take the direct
    path where it gives what Hydra gives (see the module's docs); other threads are untouched."""
    from anemoi_ckpt_nb.conversion.empty import inside

    _install()
    with inside(_LOCAL):
        yield


def _install() -> None:
    global _HYDRA
    with _LOCK:
        if _HYDRA is None:
            from hydra.utils import instantiate

            _HYDRA = instantiate
        _patch_modules()


def _patch_modules() -> None:
    """Replace Hydra's ``instantiate`` in the anemoi.models modules imported so far (they bind it by name)."""
    global _SEEN
    if len(sys.modules) == _SEEN:
        return
    _SEEN = len(sys.modules)
    for name, module in list(sys.modules.items()):
        if name in _PATCHED or not (name == "anemoi.models" or name.startswith("anemoi.models.")):
            continue
        if getattr(module, "instantiate", None) is _HYDRA:
            module.instantiate = _instantiate
        _PATCHED.add(name)


def _instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    if getattr(_LOCAL, "depth", 0):
        call = _direct_call(config, args, kwargs)
        if call is not None:
            target, arguments = call
            with _LOCK:
                _patch_modules()  # locating the target may have imported more of anemoi.models
            return target(**arguments)
    return _HYDRA(config, *args, **kwargs)


def _direct_call(config: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """``(target, keyword arguments)`` as Hydra would call them, or ``None`` when Hydra must do it."""
    from omegaconf import DictConfig, OmegaConf

    if args or not (isinstance(config, dict) or type(config) is DictConfig):
        return None
    try:
        items = _plain(config) if OmegaConf.is_config(config) else config
    except _NotPlain:
        return None
    options = {key: kwargs.get(key, items.get(key)) for key in _SPECIAL}
    flags = (options["_partial_"], options["_recursive_"])
    if (options["_args_"] is not None or options["_partial_"] or any(type(flag) not in (bool, type(None)) for flag in flags)
            or options["_convert_"] not in (None, "none", "all") or not isinstance(options["_target_"], str)):
        return None  # Hydra's partials are kept: the model holds them (and Hydra raises on odd flags)
    recursive = options["_recursive_"] is not False
    plain = options["_convert_"] == "all"
    passed = {key: value for key, value in kwargs.items() if key not in _SPECIAL}
    own = {key: value for key, value in items.items() if key not in _SPECIAL}
    if own.keys() & passed.keys():  # Hydra would merge the two
        return None
    arguments: dict[str, Any] = {}
    try:
        for key, value in (*own.items(), *passed.items()):  # Hydra's order: the config's keys, then the others
            arguments[key] = _argument(value, key, recursive, plain)
    except _NotPlain:
        return None
    target = _target(options["_target_"])
    return None if target is None else (target, arguments)


def _argument(value: Any, key: str, recursive: bool, plain: bool) -> Any:
    """A value of the config or a keyword argument as Hydra passes it on, once merged into its copy of
    the config and detached from it (:class:`_NotPlain` where unsure). With ``recursive`` Hydra would
    rebuild a dict (a list, or a target in it: left to Hydra). With ``plain``
    (``_convert_: all``) Hydra passes new dicts and lists holding the same leaves."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = _plain(value)
    if isinstance(value, (dict, list)):
        if recursive and (isinstance(value, list) or _has_target(value)):
            raise _NotPlain(value)
        # Recursive: Hydra rebuilds the dict, detached, with allow_objects on each dict and list.
        tree = _tree(value, None if recursive else key, None, objects=True, allow_objects=recursive and not plain)
        return _plain(tree) if plain else tree  # _tree checks every leaf
    if type(value) in _PRIMITIVES:
        if isinstance(value, str) and has_interpolation(value):
            raise _NotPlain(value)
        return value
    if _config_like(value):
        raise _NotPlain(value)
    return value


def _has_target(value: Any) -> bool:
    if isinstance(value, dict):
        return "_target_" in value or any(_has_target(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_target(item) for item in value)
    return False


_TARGETS: dict[str, Any] = {}


def _target(name: str) -> Any:
    """The class ``name`` names when it is one a config may build (:mod:`.targets`), else ``None``."""
    if name not in _TARGETS:
        from anemoi_ckpt_nb.conversion.targets import _is_allowed_class, _locate

        found = None
        if _is_allowed_class(name):
            try:
                found = _locate(name)
            except (ImportError, AttributeError, ValueError):
                found = None  # Hydra says why
        _TARGETS[name] = found
    return _TARGETS[name]
