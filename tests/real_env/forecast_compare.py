"""Run in an environment with the real anemoi packages (``ANEMOI_CKPT_REAL_ENV``).

    python forecast_compare.py REFERENCE.nc FORECAST.nc...

Compares netCDF forecasts written by ``anemoi-inference run`` with a reference one, variable
by variable; prints one JSON object:
``{"runner": {"module": file of the class registered as anemoi-ckpt}, "results": {FORECAST: {"equal": bool, "max_abs": float,
"max_relative": float (the largest difference over its variable's largest magnitude), "variables": [...]}}}``.
"""

from __future__ import annotations

import json
import sys

import netCDF4
import numpy as np


def compare(reference: str, path: str) -> dict:
    with netCDF4.Dataset(reference) as expected, netCDF4.Dataset(path) as got:
        names = sorted(expected.variables)
        if sorted(got.variables) != names:
            return {"equal": False, "variables": sorted(got.variables), "expected": names}
        diffs, relative = {}, {}
        for name in names:
            a, b = np.ma.filled(expected[name][:], np.nan), np.ma.filled(got[name][:], np.nan)
            same = a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
            diffs[name] = 0.0 if same else (float(np.nanmax(np.abs(a.astype(float) - b.astype(float)))) if a.shape == b.shape else float("inf"))
            # The difference against the variable's own scale (its largest magnitude): float32 rounding
            # that differs between CPUs is about 1e-7 of it, a wrong weight or graph far more.
            scale = float(np.nanmax(np.abs(a.astype(float)))) if a.size and a.dtype.kind in "fiu" else 0.0
            relative[name] = 0.0 if same else (diffs[name] / scale if scale else float("inf"))
        return {"equal": all(d == 0.0 for d in diffs.values()), "max_abs": max(diffs.values()),
                "max_relative": max(relative.values()), "variables": names}


def registered_runner() -> dict:
    """Where anemoi-inference's registry finds the ``anemoi-ckpt`` runner (which checkout's code)."""
    import inspect

    from anemoi.inference.runners import runner_registry

    factory = runner_registry.lookup("anemoi-ckpt", return_none=True)
    return {"module": inspect.getfile(factory) if isinstance(factory, type) else repr(factory)}


if __name__ == "__main__":
    reference, *forecasts = sys.argv[1:]
    results = {path: compare(reference, path) for path in forecasts}
    print(json.dumps({"runner": registered_runner(), "results": results}))
