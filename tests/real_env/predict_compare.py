"""Run in an environment with the real anemoi packages (``ANEMOI_CKPT_REAL_ENV``).

    python predict_compare.py REFERENCE FILE... [-- REFERENCE FILE...]...

Each REFERENCE is anemoi-training's ``inference-*.ckpt`` (loaded with ``torch.load``, as
anemoi-inference does); each FILE is built by ``anemoi_ckpt_nb.load_model``. The same
random input goes through ``predict_step`` of each; prints one JSON object:
``{"versions": {...}, "results": {FILE: {"equal": bool, "max_abs": float, "same_ties": bool,
"on_meta": [names], "mapped": [parameter count, of them in a memory map of FILE]} | {"error": str}}}``.
Several groups in one process save starting Python and torch again.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import torch


def batch_for(model) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch = {}
    for dataset, indices in model.data_indices.items():
        grid = model.graph_data[dataset if dataset in model.graph_data.node_types else "data"].num_nodes
        batch[dataset] = torch.randn(1, model.n_step_input, grid, len(indices.data.input.full), generator=generator)
    return batch


def mapped(model, path: str) -> list[int]:
    """``[parameters, of them in a memory map of path]`` (Linux's /proc/self/maps; ``[n, 0]`` elsewhere)."""
    import os

    target, ranges = os.path.realpath(path), []
    if os.path.exists("/proc/self/maps"):
        for line in open("/proc/self/maps"):
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == target:
                ranges.append(tuple(int(x, 16) for x in fields[0].split("-")))
    parameters = list(model.parameters())
    inside = [p for p in parameters if any(low <= p.data_ptr() and p.data_ptr() + p.nbytes <= high for low, high in ranges)]
    return [len(parameters), len(inside)]


def main(reference: str, files: list[str], results: dict) -> None:
    from anemoi_ckpt_nb import load_model
    from anemoi_ckpt_nb.conversion.empty import meta_tensors, tied  # tied: names sharing one parameter

    expected_model = torch.load(reference, weights_only=False, map_location="cpu").eval()
    batch = batch_for(expected_model)
    with torch.no_grad():
        expected = expected_model.predict_step(dict(batch))
    for path in files:
        try:
            model = load_model(path)
            with torch.no_grad():
                got = model.predict_step(dict(batch))
        except Exception as error:  # reported to the test, which fails with it
            results[path] = {"error": f"{type(error).__name__}: {error}"}
            continue
        equal = set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
        diff = max(float((got[k] - expected[k]).abs().max()) for k in expected) if set(got) == set(expected) else None
        results[path] = {"equal": equal, "max_abs": diff, "eval": not model.training,
                         "same_ties": tied(model) == tied(expected_model), "on_meta": meta_tensors(model),
                         "mapped": mapped(model, path)}


if __name__ == "__main__":
    results: dict = {}
    args = sys.argv[1:]
    while args:
        group = args[: args.index("--")] if "--" in args else args
        args = args[len(group) + 1 :]
        main(group[0], group[1:], results)
    versions = {name: importlib.metadata.version(name) for name in ("torch", "anemoi-models", "torch-geometric")}
    print(json.dumps({"versions": versions, "results": results}))
