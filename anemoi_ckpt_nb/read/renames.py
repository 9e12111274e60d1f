"""Moved and renamed classes: old module path -> the one today's code uses.

A pickle names each class by module and name as they were when it was
written. When anemoi code moves, old checkpoints name classes that no longer
exist there. The reader's unpickler asks :func:`resolve_class` for the
current name before it looks a class up in its translation table, so an old
``aifs.data.dataindices.IndexCollection`` is recognised as today's
``anemoi.models.data_indices.collection.IndexCollection``.

Sources of each entry are in the comments: the git history of
aifs-mono/anemoi-models/anemoi-training, and anemoi-models' own checkpoint
migrations (``models/src/anemoi/models/migrations/scripts/``), whose
``migrate_setup`` hooks call ``context.move_module`` / ``move_attribute``.
"""

from __future__ import annotations

#: Old module path (or prefix) -> new one. The longest matching prefix wins,
#: and only at a dot boundary (``aifs.data`` does not match ``aifs.database``).
RENAMED_MODULES: dict[str, str] = {
    # aifs-mono, the code base anemoi was split from: training-side packages
    # moved into anemoi-training with the same layout below them.
    "aifs.data.datamodule": "anemoi.training.data.datamodule",
    "aifs.diagnostics": "anemoi.training.diagnostics",
    "aifs.distributed": "anemoi.training.distributed",
    "aifs.train": "anemoi.training.train",
    "aifs.utils": "anemoi.training.utils",
    # First anemoi-models releases kept data code under anemoi.models.data.
    "anemoi.models.data.data_indices": "anemoi.models.data_indices",
    "anemoi.models.data.normalizer": "anemoi.models.preprocessing.normalizer",
    # The first anemoi-training releases kept the pydantic config schemas under utils/.
    "anemoi.training.utils.schemas": "anemoi.training.schemas",
    # anemoi-models migration 1763479917_hardware_schema_update (config "hardware" became "system").
    "anemoi.training.schemas.hardware": "anemoi.training.schemas.system",
    "anemoi.training.utils.schemas.hardware": "anemoi.training.schemas.system",
}

#: ``(old module, old name)`` -> ``(new module, new name)`` for classes that
#: did not move with their whole module (a module split, or a rename).
RENAMED_CLASSES: dict[tuple[str, str], tuple[str, str]] = {
    # aifs-mono's aifs/data/dataindices.py held all index classes; anemoi-models split it in three.
    ("aifs.data.dataindices", "IndexCollection"): ("anemoi.models.data_indices.collection", "IndexCollection"),
    ("aifs.data.dataindices", "BaseIndex"): ("anemoi.models.data_indices.index", "BaseIndex"),
    ("aifs.data.dataindices", "DataIndex"): ("anemoi.models.data_indices.index", "DataIndex"),
    ("aifs.data.dataindices", "ModelIndex"): ("anemoi.models.data_indices.index", "ModelIndex"),
    ("aifs.data.dataindices", "BaseTensorIndex"): ("anemoi.models.data_indices.tensor", "BaseTensorIndex"),
    ("aifs.data.dataindices", "InputTensorIndex"): ("anemoi.models.data_indices.tensor", "InputTensorIndex"),
    ("aifs.data.dataindices", "OutputTensorIndex"): ("anemoi.models.data_indices.tensor", "OutputTensorIndex"),
    # anemoi-models migration 1763479917_hardware_schema_update: renamed with the move to "system".
    ("anemoi.training.schemas.hardware", "FilesSchema"): ("anemoi.training.schemas.system", "InputSchema"),
    ("anemoi.training.schemas.hardware", "PathsSchema"): ("anemoi.training.schemas.system", "OutputSchema"),
    ("anemoi.training.utils.schemas.hardware", "FilesSchema"): ("anemoi.training.schemas.system", "InputSchema"),
    ("anemoi.training.utils.schemas.hardware", "PathsSchema"): ("anemoi.training.schemas.system", "OutputSchema"),
}


def rename_module(module: str) -> str:
    """``module`` with the longest matching prefix of :data:`RENAMED_MODULES` replaced."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in RENAMED_MODULES:
            return ".".join([RENAMED_MODULES[prefix], *parts[end:]])
    return module


def resolve_class(module: str, name: str) -> tuple[str, str]:
    """Where today's code has the class an old pickle calls ``module.name``.

    Args:
        module: the module path recorded in the pickle.
        name: the class name recorded in the pickle.

    Returns:
        ``(module, name)`` to look up instead; the input unchanged when nothing moved.
    """
    if (module, name) in RENAMED_CLASSES:
        return RENAMED_CLASSES[(module, name)]
    return rename_module(module), name
