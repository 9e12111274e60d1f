"""What a checkpoint says about itself, in words: its kind, its datasets, sizes as people read them.

Pure functions over plain values; :meth:`CheckpointFile.summary` and the faces use them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.read.identity import str_or_none
from anemoi_ckpt_nb.read.runs_with import runs_with_file, runs_with_text

#: :attr:`CheckpointFile.label` of each kind, for files not written by the converter.
KIND_LABELS = {
    "training": "training checkpoint",
    "inference": "inference checkpoint (whole model pickled)",
    "state-dict": "state dict (weights only)",
    "safetensors": "safetensors (weights only)",
}


def anemoi_parameters(metadata: Any) -> dict[str, int] | None:
    """``{"trainable": n, "total": n}`` as anemoi-training counts them (``metadata["model"]``), or None.

    anemoi's checkpoint callback sums ``p.numel()`` over ``model.parameters()``: buffers
    (normalisers, the graph) are not counted, shared parameters once.
    """
    model = metadata.get("model") if isinstance(metadata, dict) else None
    if not isinstance(model, dict):
        return None
    found = {
        key: model[f"{key}_parameters"]
        for key in ("trainable", "total")
        if isinstance(model.get(f"{key}_parameters"), int) and not isinstance(model.get(f"{key}_parameters"), bool)
    }
    return found or None


def dataset_summary(metadata: dict) -> dict | None:
    """A short description of ``metadata["dataset"]`` (per dataset name for multi-dataset metadata)."""
    dataset = metadata.get("dataset") if isinstance(metadata, dict) else None
    if not isinstance(dataset, dict) or not dataset:
        return None
    if not ({"shape", "variables", "arguments"} & set(dataset)) and all(isinstance(v, dict) for v in dataset.values()):
        return {str(name): _one_dataset(value) for name, value in dataset.items()}
    return _one_dataset(dataset)


def _one_dataset(dataset: dict) -> dict:
    summary: dict[str, Any] = {}
    name = _dataset_name(dataset.get("arguments"))
    if name is None and isinstance(dataset.get("specific"), dict):
        specific_path = dataset["specific"].get("path")
        name = os.path.basename(str(specific_path)) if specific_path else None
    summary["name"] = name
    for key in ("resolution", "frequency", "start_date", "end_date"):
        if dataset.get(key) is not None:
            summary[key] = dataset[key]
    if isinstance(dataset.get("variables"), list):
        summary["variables"] = len(dataset["variables"])
    if isinstance(dataset.get("shape"), list):
        summary["shape"] = dataset["shape"]
    return summary


def _dataset_name(arguments: Any, depth: int = 0) -> str | None:
    if depth > 10 or arguments is None:
        return None
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, dict):
        for key in ("dataset", "args", "kwargs"):
            if key in arguments:
                found = _dataset_name(arguments[key], depth + 1)
                if found:
                    return found
        return None
    if isinstance(arguments, list):
        for item in arguments:
            found = _dataset_name(item, depth + 1)
            if found:
                return found
    return None


def _array_shapes(arrays: dict, prefix: str = "") -> Iterator[tuple[str, tuple[int, ...]]]:
    for name, value in arrays.items():
        if isinstance(value, dict):
            yield from _array_shapes(value, f"{prefix}{name}/")
        elif hasattr(value, "shape"):
            yield f"{prefix}{name}", tuple(int(n) for n in value.shape)


def format_bytes(count: int) -> str:
    """``1.2 GB``-style size (decimal units, as ``ls -h --si`` and S3 consoles show them)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"  # pragma: no cover


def checkpoint_summary(ck: Any) -> dict[str, Any]:
    """A JSON-able description of an open :class:`CheckpointFile`: what ``anemoi-ckpt inspect --json`` prints."""
    dtypes: dict[str, int] = {}
    for info in ck.weights.values():
        dtypes[info.dtype] = dtypes.get(info.dtype, 0) + 1
    metadata = ck.metadata or {}
    return {
        "path": str(ck.path),
        "kind": ck.kind,
        "label": ck.label,
        "format": ck.format,
        "uuid": ck.uuid,
        "embedded_uuid": ck.embedded_uuid,
        "uuids": list(ck.uuids),
        "run_id": ck.run_id,
        "parent_uuid": ck.parent_uuid,
        "epoch": ck.epoch,
        "global_step": ck.global_step,
        "parameter_count": ck.parameter_count,
        "anemoi_parameters": anemoi_parameters(metadata),
        "tensor_elements": sum(info.numel for info in ck.weights.values()),
        "tensor_count": len(ck.weights),
        "dtypes": dtypes,
        "sparse_tensors": {name: info.layout for name, info in ck.weights.items() if info.layout != "strided"},
        "sizes": {
            "total": ck.total_bytes,
            "weights": ck.weights_bytes,
            "optimizer": ck.optimizer_bytes,
            "other": ck.other_bytes,
        },
        "metadata_source": ck.metadata_source,
        "metadata_version": str_or_none(metadata.get("version")),
        "dataset": dataset_summary(metadata),
        # The arrays as read (perhaps only described): their shapes need no numpy.
        "supporting_arrays": {name: list(shape) for name, shape in _array_shapes(ck._supporting_arrays)},
        "opaque_classes": [f"{module}.{name}" for module, name in ck.opaque_classes],
        "runs_with": [list(pair) for pair in runs_with_file(ck)],
    }


def summary_text(summary: dict[str, Any]) -> str:
    """The human-readable form of :meth:`CheckpointFile.summary` (``anemoi-ckpt inspect``)."""
    sizes = summary["sizes"]
    dtypes = ", ".join(f"{name}" if len(summary["dtypes"]) == 1 else f"{count} {name}" for name, count in summary["dtypes"].items())
    lines = [
        str(summary["path"]),
        f"  kind          {_kind_line(summary)}",
        *_uuid_lines(summary),
        f"  run           {summary['run_id'] or '-'}",
        f"  parent        {summary['parent_uuid'] or '-'}",
        f"  epoch, step   {_dash(summary['epoch'])}, {_dash(summary['global_step'])}",
        f"  parameters    {_anemoi_parameters_line(summary.get('anemoi_parameters'))}",
        f"  tensors       {summary['tensor_count']} tensors" + (f" ({dtypes})" if dtypes else "")
        + (f", {len(sparse)} sparse ({', '.join(sorted(set(sparse.values())))})" if (sparse := summary.get("sparse_tensors")) else "")
        + f"; {summary.get('tensor_elements', summary['parameter_count']):,} elements",
        f"  size          {format_bytes(sizes['total'])}: weights {format_bytes(sizes['weights'])}, "
        f"optimizer {format_bytes(sizes['optimizer'])}, other {format_bytes(sizes['other'])}",
    ]
    if summary["metadata_source"]:
        lines.append(f"  metadata      version {summary['metadata_version'] or '?'} (from {summary['metadata_source']})")
    else:
        lines.append("  metadata      none")
    dataset = summary["dataset"]
    if dataset:
        if "name" in dataset and not isinstance(dataset.get("name"), dict):
            lines.append(f"  dataset       {_dataset_line(dataset)}")
        else:
            for name, one in dataset.items():
                lines.append(f"  dataset       {name}: {_dataset_line(one)}")
    if summary["supporting_arrays"]:
        arrays = ", ".join(f"{name} {tuple(shape)}" for name, shape in summary["supporting_arrays"].items())
        lines.append(f"  arrays        {arrays}")
    if "runs_with" in summary:
        lines.append(f"  runs with     {runs_with_text([tuple(p) for p in summary['runs_with']], summary['kind'])}")
    opaque = summary["opaque_classes"]
    lines.append(f"  opaque        {len(opaque)} classes not rebuilt" + (":" if opaque else ""))
    lines.extend(f"                {name}" for name in opaque)
    return "\n".join(lines)


def _uuid_lines(summary: dict[str, Any]) -> list[str]:
    """One uuid, or a training file's two: the lineage one and the embedded anemoi.json's."""
    embedded = summary.get("embedded_uuid")
    if not embedded or embedded == summary["uuid"]:
        return [f"  uuid          {summary['uuid'] or '-'}"]
    return [
        f"  uuid          {summary['uuid'] or '-'} (pickled metadata: its inference file and children name this one)",
        f"  embedded uuid {embedded} (anemoi.json, embedded after saving)",
    ]


def _anemoi_parameters_line(counts: dict[str, int] | None) -> str:
    if not counts:
        return "- (no parameter counts in the metadata)"
    shown = ", ".join(f"{counts[key]:,} {key}" for key in ("trainable", "total") if key in counts)
    return f"{shown} (as anemoi counts them, from the metadata)"


def _kind_line(summary: dict[str, Any]) -> str:
    """``training (zip)``; for a converted file what it is, then how it is stored."""
    label = summary.get("label")
    if not label or label == KIND_LABELS.get(summary["kind"]):
        return f"{summary['kind']} ({summary['format']})"
    return f"{label}; stored as {summary['kind']} ({summary['format']})"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _dataset_line(dataset: dict) -> str:
    details = [str(dataset[k]) for k in ("resolution", "frequency") if k in dataset]
    if "start_date" in dataset or "end_date" in dataset:
        details.append(f"{dataset.get('start_date', '?')} to {dataset.get('end_date', '?')}")
    if "variables" in dataset:
        details.append(f"{dataset['variables']} variables")
    name = dataset.get("name") or "?"
    return f"{name} ({', '.join(details)})" if details else str(name)
