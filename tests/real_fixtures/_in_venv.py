"""Steps of make_real_fixtures.py that run inside an anemoi venv (they import the real packages).

    python _in_venv.py source OUT.nc          # the synthetic netcdf the dataset recipe reads
    python _in_venv.py facts FILE...          # JSON: what each checkpoint file really holds
    python _in_venv.py reference DATASET OUTDIR FILE...   # predict_step of each pickled inference model
"""

from __future__ import annotations

import json
import sys


def write_source(path: str) -> None:
    """A 15-degree global lat/lon grid (12 x 24 = 288 points), 6-hourly, 2020-01-01..2020-01-10."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    lat = np.arange(82.5, -90, -15.0)
    lon = np.arange(0, 360, 15.0)
    times = pd.date_range("2020-01-01", "2020-01-10T18:00", freq="6h")
    rng = np.random.default_rng(0)
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")

    def field(base: float, amp: float, k: int) -> np.ndarray:
        steps = [base + amp * np.cos(la) * np.sin(lo * k + 0.3 * i) + 0.1 * amp * rng.standard_normal(la.shape)
                 for i in range(len(times))]
        return np.stack(steps).astype("float32")

    dims = ("time", "latitude", "longitude")
    lsm = (np.sin(3 * lo) * np.cos(2 * la) > 0.2).astype("float32")
    ds = xr.Dataset(
        {
            "2t": (dims, field(280, 15, 1), {"units": "K"}),
            "10u": (dims, field(0, 8, 2), {"units": "m s**-1"}),
            "10v": (dims, field(0, 8, 3), {"units": "m s**-1"}),
            "msl": (dims, field(101000, 1500, 1), {"units": "Pa"}),
            "tp": (dims, np.abs(field(0, 0.002, 2)), {"units": "m"}),
            "lsm": (dims, np.repeat(lsm[None], len(times), 0), {"units": "(0 - 1)"}),
        },
        coords={
            "time": times,
            "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    ds.to_netcdf(path)


def facts(path: str) -> dict:
    """The uuids and lineage a file holds, read with torch.load and anemoi-utils' own reader."""
    import torch
    from anemoi.utils.checkpoints import load_metadata

    out: dict = {}
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and "hyper_parameters" in obj:
        md = obj["hyper_parameters"].get("metadata") or {}
        out.update(kind="training", epoch=obj.get("epoch"), global_step=obj.get("global_step"),
                   pickled_uuid=md.get("uuid"), pickled_parent_uuid=md.get("parent_uuid"),
                   pickled_run_id=md.get("run_id"), pickled_version=md.get("version"),
                   pytorch_lightning_version=obj.get("pytorch-lightning_version"))
    else:
        md = getattr(obj, "metadata", None) or {}
        out.update(kind="inference", model_class=f"{type(obj).__module__}.{type(obj).__qualname__}",
                   pickled_uuid=md.get("uuid"), pickled_parent_uuid=md.get("parent_uuid"),
                   pickled_run_id=md.get("run_id"))
    try:
        emb = load_metadata(path)
    except Exception as exc:  # older training files have no embedded metadata
        message = str(exc).replace(path, path.rsplit("/", 1)[-1])  # no machine-specific folders in MANIFEST.json
        out.update(embedded=None, embedded_error=f"{type(exc).__name__}: {message}")
    else:
        out.update(embedded={"uuid": emb.get("uuid"), "parent_uuid": emb.get("parent_uuid"),
                             "run_id": emb.get("run_id"), "version": emb.get("version"),
                             "training": emb.get("training")})
    return out


def reference(dataset: str, out_dir: str, paths: list[str]) -> dict:
    """Run each pickled inference model's own predict_step on one input taken from the dataset.

    The input is dataset dates 30 and 31 (2020-01-08T12 and T18, the multistep input of 2), the
    variables `data_indices["data"].data.input.full`, shaped (batch 1, time 2, grid, variables) as
    anemoi-models 0.19's predict_step takes them under the dataset's name.
    """
    from pathlib import Path

    import numpy as np
    import torch
    from anemoi.datasets import open_dataset

    ds = open_dataset(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index: dict = {}
    for path in paths:
        model = torch.load(path, map_location="cpu", weights_only=False)
        model.eval()
        columns = model.data_indices["data"].data.input.full.numpy()
        x = np.asarray(ds[30:32])[:, columns, 0, :]  # (time, variables, grid)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))[None].float()
        with torch.inference_mode():
            y = model.predict_step({"data": x})["data"]
        name = path.replace("/", "__")
        np.save(out / f"{name}.output.npy", y.numpy())
        input_name = "input.npy"
        if (out / input_name).exists() and index:
            assert np.array_equal(np.load(out / input_name), x.numpy()), f"{path}: another input than the others"
        np.save(out / input_name, x.numpy())
        index[path] = {"input": input_name, "input_dates": [str(d) for d in ds.dates[30:32]],
                       "input_variables": [ds.variables[i] for i in columns],
                       "output": f"{name}.output.npy", "output_shape": list(y.shape),
                       "output_variables": [ds.variables[i] for i in
                                            model.data_indices["data"].data.output.full.numpy()],
                       "call": 'model.predict_step({"data": input})["data"] under torch.inference_mode()'}
    return index


def main(argv: list[str]) -> None:
    if argv[0] == "source":
        write_source(argv[1])
    elif argv[0] == "reference":
        print(json.dumps(reference(argv[1], argv[2], argv[3:]), indent=1))
    elif argv[0] == "facts":
        print(json.dumps({p: facts(p) for p in argv[1:]}, indent=1, default=str))
    else:
        raise SystemExit(f"unknown step {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
