"""The inputs anemoi-models builds a model from, carried by converted files as plain tensors.

anemoi-models builds the model as ``AnemoiModelInterface(config=..., graph_data=...,
statistics=..., statistics_tendencies=..., data_indices=..., metadata=...,
supporting_arrays=..., n_step_input=..., n_step_output=...)``. The weights alone do not
rebuild it: since anemoi-models 0.19 each graph provider keeps its edges (``edge_attr``,
``edge_index_base``, ``perm``, ``edge_inc``) in non-persistent buffers, computed from the
graph, and an imputer keeps the statistics it fills with as plain attributes. A training
checkpoint has them in ``hyper_parameters``, anemoi-training's pickled inference model as
attributes of the model; this module takes them from either, as the safe reader returns
them (inert placeholders, tensors, numpy arrays), and writes them as plain data.

**Layout** (the name space ``anemoi-model``):

* a JSON *spec*: the zip entry ``<top>/anemoi-model/inputs.json`` of an ``anemoi`` file,
  the header key ``anemoi-model`` of a ``safetensors`` file;
* each array: the raw bytes at ``<top>/anemoi-model/<name>.numpy`` (as anemoi-utils stores
  supporting arrays), or the safetensors tensor ``anemoi-model/<name>``, where ``<name>`` is

  - ``graph/nodes/<node type>/<attribute>``, ``graph/edges/<source>/<relation>/<destination>/<attribute>``,
  - ``graph/global/<attribute>``,
  - ``statistics/<dataset>/<statistic>`` (``statistics_tendencies/<dataset>/...`` alike).

The spec::

    {"version": 1,
     "graph": {"nodes": {type: {attribute: value}},
               "edges": [{"type": [source, relation, destination], "attributes": {attribute: value}}],
               "global": {attribute: value}},
     "statistics": {dataset: {statistic: value}}, "statistics_tendencies": {...} | null,
     "data_indices": {dataset: {"name_to_index": {variable: index}}}, "n_step_input": int, "n_step_output": int}

where a value is JSON, or ``{"__array__": name, "dtype": ..., "shape": [...]}`` for an array
and ``{"__tuple__": [...]}`` for a tuple. No pickle anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.read.arrayrefs import ArrayRef
from anemoi_ckpt_nb.read.records import Record
from anemoi_ckpt_nb.read.tensorrefs import NUMPY_DTYPES, TensorRef

NAMESPACE = "anemoi-model"
#: Tensor name prefix in safetensors files; zip entry folder (under the top folder) in anemoi files.
PREFIX = NAMESPACE + "/"
SPEC_ENTRY = "inputs.json"
SAFETENSORS_SPEC_KEY = NAMESPACE
VERSION = 1

_ARRAY = "__array__"
_TUPLE = "__tuple__"

GRAPH_CLASS = "torch_geometric.data.hetero_data.HeteroData"


class ModelInputsError(ValueError):
    """The model inputs cannot be taken from a checkpoint, or a file's are damaged."""


class ModelInputs(Record):
    """The graph, statistics and indices a model is built from: a JSON ``spec``, its ``arrays`` (name -> numpy array)."""

    FIELDS = ("spec", "arrays")

    def __init__(self, spec: dict[str, Any], arrays: dict[str, Any] | None = None) -> None:
        self.spec, self.arrays = spec, {} if arrays is None else arrays

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    def graph_summary(self) -> dict[str, Any]:
        """Node types with their node counts and edge types with their edge counts."""
        graph = self.spec.get("graph") or {}
        nodes = {}
        for name, attributes in (graph.get("nodes") or {}).items():
            x = attributes.get("x")
            nodes[name] = x["shape"][0] if isinstance(x, dict) and _ARRAY in x else None
        edges = {}
        for edge in graph.get("edges") or []:
            index = edge["attributes"].get("edge_index")
            edges["->".join((edge["type"][0], edge["type"][2]))] = (
                index["shape"][1] if isinstance(index, dict) and _ARRAY in index else None
            )
        return {"nodes": nodes, "edges": edges}


# --- taking them from a checkpoint read by the safe reader ------------------------------


def from_pickle(checkpoint: Any) -> ModelInputs | None:
    """The model inputs of a pickled checkpoint as the reader returned it, or ``None``.

    A training checkpoint has them in ``hyper_parameters``, anemoi-training's
    inference checkpoint as the pickled model's attributes.

    Raises:
        ModelInputsError: they are there but not in a form this code knows.
    """
    source = _source_attributes(checkpoint)
    if source is None or source.get("graph_data") is None:
        return None
    encoder = _Encoder()
    spec: dict[str, Any] = {"version": VERSION}
    spec["graph"] = encoder.graph(source["graph_data"])
    spec["statistics"] = encoder.value(_per_dataset(source.get("statistics")), "statistics")
    spec["statistics_tendencies"] = encoder.value(
        _per_dataset(source.get("statistics_tendencies"), keep_none=True), "statistics_tendencies"
    )
    spec["data_indices"] = _data_indices(source.get("data_indices"))
    spec["n_step_input"], spec["n_step_output"] = _steps(source, checkpoint.metadata or {})
    return ModelInputs(spec=spec, arrays=encoder.arrays)


def _source_attributes(checkpoint: Any) -> dict[str, Any] | None:
    from anemoi_ckpt_nb.read.classmap import state_dict
    from anemoi_ckpt_nb.read.unpickler import is_placeholder

    # The tree read on opening: without torch (tensors and arrays described) when the file allowed it.
    raw = checkpoint._raw if checkpoint._raw is not None else checkpoint.raw
    if checkpoint.kind == "training" and isinstance(raw, dict):
        hyper = raw.get("hyper_parameters")
        if is_placeholder(hyper):  # an AttributeDict pickled as a placeholder
            hyper = dict(hyper.ph_dictitems or []) or state_dict(hyper)
        return hyper if isinstance(hyper, dict) else None
    if checkpoint.kind == "inference" and is_placeholder(raw):
        return state_dict(raw)
    return None


def _per_dataset(value: Any, *, keep_none: bool = False) -> Any:
    """Statistics keyed by dataset name; anemoi-models before 0.12 had one dataset, unnamed."""
    if value is None:
        return None
    if isinstance(value, dict) and value and all(isinstance(v, dict) or (keep_none and v is None) for v in value.values()):
        return value
    return {"data": value}


def _data_indices(value: Any) -> dict[str, Any]:
    from anemoi_ckpt_nb.read.classmap import state_dict
    from anemoi_ckpt_nb.read.unpickler import is_placeholder

    if value is None:
        raise ModelInputsError("the checkpoint holds no data_indices")
    collections = value if isinstance(value, dict) else {"data": value}
    out = {}
    for dataset, collection in collections.items():
        state = state_dict(collection) if is_placeholder(collection) else collection
        name_to_index = state.get("name_to_index") if isinstance(state, dict) else None
        if not isinstance(name_to_index, dict):
            raise ModelInputsError(f"the data_indices of dataset {dataset!r} have no name_to_index")
        out[str(dataset)] = {"name_to_index": {str(k): int(v) for k, v in name_to_index.items()}}
    return out


def _steps(source: dict[str, Any], metadata: dict[str, Any]) -> tuple[int, int]:
    """``(n_step_input, n_step_output)``: the model's own, else the task's, else the config's."""
    from anemoi_ckpt_nb.read.classmap import state_dict, to_plain
    from anemoi_ckpt_nb.read.unpickler import is_placeholder

    if isinstance(source.get("n_step_input"), int):
        return source["n_step_input"], int(source.get("n_step_output") or 1)
    task = source.get("task")
    if is_placeholder(task):
        state = state_dict(task) or {}
        for inputs, outputs in (("num_input_steps", "num_output_steps"), ("num_input_timesteps", "num_output_timesteps")):
            if isinstance(state.get(inputs), int) and isinstance(state.get(outputs), int):
                return state[inputs], state[outputs]
        offsets_in, offsets_out = state.get("_input_offsets"), state.get("_output_offsets")
        if isinstance(offsets_in, (list, tuple)) and isinstance(offsets_out, (list, tuple)):
            return len(offsets_in), len(offsets_out)
    config = to_plain(metadata.get("config")) or {}
    for section in ("task", "training"):  # anemoi-training 0.17 has them under task, earlier under training
        part = config.get(section) or {}
        if isinstance(part, dict) and isinstance(part.get("multistep_input"), int):
            return part["multistep_input"], int(part.get("multistep_output") or 1)
    raise ModelInputsError("cannot tell how many input and output steps the model takes")


class _Encoder:
    """Plain JSON with arrays by reference, collecting the arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, Any] = {}

    def graph(self, graph: Any) -> dict[str, Any]:
        from anemoi_ckpt_nb.read.classmap import class_path, state_dict

        state = state_dict(graph) if class_path(graph) == GRAPH_CLASS else None
        if state is None:
            raise ModelInputsError(f"the graph is a {class_path(graph) or type(graph).__name__}, not a torch-geometric HeteroData")
        nodes = {}
        for name, store in (state.get("_node_store_dict") or {}).items():
            _check_part(name)
            nodes[name] = self._store(store, f"graph/nodes/{name}")
        edges = []
        for key, store in (state.get("_edge_store_dict") or {}).items():
            if not (isinstance(key, tuple) and len(key) == 3):
                raise ModelInputsError(f"graph edge type {key!r} is not (source, relation, destination)")
            for part in key:
                _check_part(part)
            edges.append({"type": list(key), "attributes": self._store(store, "graph/edges/" + "/".join(key))})
        glob = self._store(state.get("_global_store"), "graph/global") if state.get("_global_store") is not None else {}
        return {"nodes": nodes, "edges": edges, "global": glob}

    def _store(self, store: Any, path: str) -> dict[str, Any]:
        from anemoi_ckpt_nb.read.classmap import state_dict

        state = state_dict(store) or {}
        mapping = state.get("_mapping") or {}
        return {str(k): self.value(v, f"{path}/{k}") for k, v in mapping.items()}

    def value(self, value: Any, path: str) -> Any:
        import numpy as np

        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ModelInputsError(f"{path} has a key {key!r} that is not a string")
                _check_part(key)
                out[key] = self.value(item, f"{path}/{key}")
            return out
        if isinstance(value, list):
            return [self.value(item, f"{path}/{i}") for i, item in enumerate(value)]
        if isinstance(value, tuple):
            return {_TUPLE: [self.value(item, f"{path}/{i}") for i, item in enumerate(value)]}
        array = _as_numpy(value, path)
        self.arrays[path] = array
        ref = {_ARRAY: path, "dtype": array.dtype.str.lstrip("<|="), "shape": list(array.shape)}
        if not isinstance(value, (np.ndarray, ArrayRef)):
            ref["torch"] = True  # made again as a torch tensor, as the model had it
        return ref


def _check_part(name: Any) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ModelInputsError(f"the name {name!r} cannot be part of a tensor name")


def _as_numpy(value: Any, path: str) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (ArrayRef, TensorRef)):  # read without torch
        if isinstance(value, TensorRef) and value.dtype.name not in NUMPY_DTYPES:
            raise ModelInputsError(f"{path} has dtype {value.dtype}, which numpy cannot hold")
        array = value.numpy()
    elif hasattr(value, "detach") and hasattr(value, "numpy"):
        if getattr(value, "layout", None) is not None and str(value.layout) != "torch.strided":
            raise ModelInputsError(f"{path} is a {value.layout} tensor; only dense ones can be stored")
        try:
            array = value.detach().cpu().numpy()
        except TypeError as error:  # bfloat16 and other dtypes numpy lacks
            raise ModelInputsError(f"{path} has dtype {value.dtype}, which numpy cannot hold") from error
    else:
        from anemoi_ckpt_nb.read.classmap import class_path

        raise ModelInputsError(f"{path} is a {class_path(value) or type(value).__name__}, not plain data or an array")
    if array.dtype.hasobject or array.dtype.fields is not None:
        raise ModelInputsError(f"{path} is an array of dtype {array.dtype}, not numbers")
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


# --- reading them from converted files -----------------------------------------------------


def from_zip(zf: Any) -> ModelInputs | None:
    """The model inputs stored in a torch zip archive, or ``None`` when it has none.

    Raises:
        ModelInputsError: the spec or an array is damaged.
    """
    names = zf.namelist()
    folder = f"/{NAMESPACE}/"
    found = [n for n in names if n.endswith(folder + SPEC_ENTRY) and n.count("/") == 2]
    if not found:
        return None
    base = found[0][: -len(SPEC_ENTRY)]
    spec = parse_spec(zf.read(found[0]))
    arrays = {}
    for name, (dtype, shape) in array_refs(spec).items():
        entry = f"{base}{name}.numpy"
        try:
            data = bytearray(zf.read(entry))  # writable: torch.from_numpy needs it
        except KeyError:
            raise ModelInputsError(f"the array {name} named by the spec is missing") from None
        arrays[name] = _array(name, data, dtype, shape)
    return ModelInputs(spec=spec, arrays=arrays)


def from_tensors(spec_text: str, tensor: Callable[[str], Any]) -> ModelInputs:
    """The model inputs of a safetensors file: its spec, and ``tensor(full name)`` for each array."""
    import numpy as np

    spec = parse_spec(spec_text)
    arrays = {}
    for name, (dtype, shape) in array_refs(spec).items():
        try:
            data = np.require(tensor(PREFIX + name), requirements=("C", "W"))  # TensorRef.numpy's new array: not copied again
        except KeyError:
            raise ModelInputsError(f"the array {name} named by the spec is missing") from None
        arrays[name] = _array(name, data.reshape(-1).view(np.uint8), dtype, shape)
    return ModelInputs(spec=spec, arrays=arrays)


def _array(name: str, data: Any, dtype: str, shape: tuple[int, ...]) -> Any:  # data: writable bytes
    import numpy as np

    try:
        kind = np.dtype(dtype)
    except TypeError:
        raise ModelInputsError(f"the array {name} has an unknown dtype {dtype!r}") from None
    if kind.hasobject or kind.fields is not None:
        raise ModelInputsError(f"the array {name} has dtype {dtype}, not numbers")
    count = 1
    for n in shape:
        count *= n
    if count * kind.itemsize != len(data):
        raise ModelInputsError(f"the array {name} holds {len(data)} bytes, not {count * kind.itemsize} for {shape} {dtype}")
    return np.frombuffer(data, dtype=kind).reshape(shape)


def spec_json(inputs: ModelInputs) -> str:
    return json.dumps(inputs.spec)


def parse_spec(text: str | bytes) -> dict[str, Any]:
    """The spec of a file, checked for what this code can read.

    Raises:
        ModelInputsError: not JSON, or a version this code does not know.
    """
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise ModelInputsError(f"the {NAMESPACE} spec is not JSON ({error})") from None
    if not isinstance(spec, dict) or spec.get("version") != VERSION:
        version = spec.get("version") if isinstance(spec, dict) else None
        raise ModelInputsError(
            f"the {NAMESPACE} spec has version {version!r}; this anemoi-ckpt-nb reads version {VERSION}: upgrade anemoi-ckpt-nb"
        )
    return spec


def array_refs(spec: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every array the spec refers to."""
    refs: dict[str, tuple[str, tuple[int, ...]]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if _ARRAY in node:
                refs[str(node[_ARRAY])] = (str(node["dtype"]), tuple(int(n) for n in node["shape"]))
                return
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)
    return refs


def decode(value: Any, array: Callable[[str], Any]) -> Any:
    """A spec value with arrays and tuples made again.

    ``array(name)`` gives the numpy array ``name``; one the model had as a torch
    tensor becomes a tensor sharing its memory.
    """
    if isinstance(value, dict):
        if _ARRAY in value:
            data = array(value[_ARRAY])
            if value.get("torch"):
                import torch

                return torch.from_numpy(data)
            return data
        if _TUPLE in value and len(value) == 1:
            return tuple(decode(item, array) for item in value[_TUPLE])
        return {key: decode(item, array) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item, array) for item in value]
    return value
