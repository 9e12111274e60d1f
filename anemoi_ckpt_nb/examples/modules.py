"""The anemoi and torch_geometric classes an example file refers to, in modules that exist only while it is written.

A reader on another machine meets them as the real files make it: named by the pickle,
absent from its environment.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any


def _make_classes() -> dict[str, dict[str, type]]:
    """Classes with the module paths anemoi and torch_geometric give them."""
    import pydantic
    import torch

    class BaseIndex:
        def __init__(self, included: list[int], excluded: list[int]) -> None:
            self.included = included
            self.excluded = excluded

    class InputTensorIndex:
        def __init__(self, name_to_index: dict[str, int], full: list[int]) -> None:
            self.name_to_index = name_to_index
            self.full = torch.tensor(full, dtype=torch.int64)

    class IndexCollection:
        def __init__(self, name_to_index: dict[str, int], forcing: list[str]) -> None:
            self.name_to_index = dict(name_to_index)
            full = list(name_to_index.values())
            forcing_idx = [name_to_index[n] for n in forcing]
            self.forcing = forcing
            self.data = BaseIndex(full, [])
            self.model = BaseIndex([i for i in full if i not in forcing_idx] + forcing_idx, [])
            self.input = InputTensorIndex(name_to_index, full)

    class NodeStorage:
        def __init__(self, mapping: dict[str, Any]) -> None:
            self._mapping = mapping

    class EdgeStorage(NodeStorage):
        pass

    class HeteroData:
        def __init__(self, nodes: dict[str, Any], edges: dict[tuple[str, str, str], Any]) -> None:
            self._node_store_dict = {k: NodeStorage(v) for k, v in nodes.items()}
            self._edge_store_dict = {k: EdgeStorage(v) for k, v in edges.items()}

    class ModelSchema(pydantic.BaseModel):
        num_channels: int
        model: str = "anemoi.models.models.AnemoiModelEncProcDec"

    class TrainingSchema(pydantic.BaseModel):
        lr: float = 6.25e-5
        max_epochs: int = 10
        run_id: str | None = None
        fork_run_id: str | None = None

    class BaseSchema(pydantic.BaseModel):
        model: ModelSchema
        training: TrainingSchema

    class Block(torch.nn.Module):
        """A container standing in for anemoi's encoder, processor and decoder layers."""

    class AnemoiModelEncProcDec(torch.nn.Module):
        pass

    class AnemoiModelInterface(torch.nn.Module):
        pass

    class Parameter:  # torch_geometric.inspector.Parameter: one argument of message()
        def __init__(self, name: str, type: Any, type_repr: str, default: Any) -> None:
            self.name, self.type, self.type_repr, self.default = name, type, type_repr, default

    class Signature:
        def __init__(self, param_dict: dict[str, Any], return_type: Any, return_type_repr: str) -> None:
            self.param_dict, self.return_type, self.return_type_repr = param_dict, return_type, return_type_repr

    class Inspector:
        def __init__(self, signatures: dict[str, Any]) -> None:
            self._signature_dict = signatures

    return {
        "anemoi.models.data_indices.index": {"BaseIndex": BaseIndex},
        "anemoi.models.data_indices.tensor": {"InputTensorIndex": InputTensorIndex},
        "anemoi.models.data_indices.collection": {"IndexCollection": IndexCollection},
        "torch_geometric.data.storage": {"NodeStorage": NodeStorage, "EdgeStorage": EdgeStorage},
        "torch_geometric.data.hetero_data": {"HeteroData": HeteroData},
        "anemoi.training.schemas.base_schema": {
            "BaseSchema": BaseSchema,
            "ModelSchema": ModelSchema,
            "TrainingSchema": TrainingSchema,
        },
        "anemoi.models.layers.block": {"Block": Block},
        "anemoi.models.models.encoder_processor_decoder": {"AnemoiModelEncProcDec": AnemoiModelEncProcDec},
        "anemoi.models.interface": {"AnemoiModelInterface": AnemoiModelInterface},
        "torch_geometric.inspector": {"Inspector": Inspector, "Parameter": Parameter, "Signature": Signature},
    }


@contextlib.contextmanager
def throwaway_modules() -> Iterator[types.SimpleNamespace]:
    """Put the anemoi-like modules in ``sys.modules`` for as long as pickling takes.

    Modules that were not there are added and removed afterwards, so the files refer to
    classes the reader cannot import. Where the real package is imported (anemoi-models or
    torch-geometric installed with the ``[inference]`` extra), the module holding the classes is
    shadowed for that time and put back: the real modules are never imported or changed here.
    """
    classes = _make_classes()
    added: list[str] = []
    shadowed: dict[str, types.ModuleType] = {}
    namespace = types.SimpleNamespace()
    try:
        for module_name, members in classes.items():
            parts = module_name.split(".")
            for depth in range(1, len(parts) + 1):
                name = ".".join(parts[:depth])
                if name in sys.modules:
                    if name == module_name and name not in shadowed and name not in added:
                        shadowed[name] = sys.modules[name]
                        sys.modules[name] = types.ModuleType(name)
                    continue
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
            module = sys.modules[module_name]
            for cls_name, cls in members.items():
                cls.__module__ = module_name
                cls.__qualname__ = cls_name
                setattr(module, cls_name, cls)
                setattr(namespace, cls_name, cls)
        yield namespace
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)
        sys.modules.update(shadowed)
