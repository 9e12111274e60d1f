"""Run in an environment with the real anemoi packages (``ANEMOI_CKPT_REAL_ENV``).

    python fastbuild_compare.py FILE...

Builds each FILE's model with ``load_model`` twice: with :mod:`anemoi_ckpt_nb.conversion.fastbuild`
and with OmegaConf and Hydra alone. In the first build every call that takes the direct path is
also given to Hydra, whose call of the target is captured instead of made, so both are compared on
the same objects: the same target, the same keyword arguments in the same order, configs
pickle-identical (state, flags, keys, detached), plain dicts and lists alike, every other
argument the same object. Prints one
JSON object: ``{FILE: {"direct": n, "hydra": n, "differences": [...], "config_same": bool,
"repr_same": bool, "tensors_same": bool, "predict_same": bool}}``.
"""

from __future__ import annotations

import json
import pickle
import sys

import torch
from predict_compare import batch_for


def _same_argument(fast, hydra) -> bool:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(fast) or OmegaConf.is_config(hydra):
        return type(fast) is type(hydra) and pickle.dumps(fast) == pickle.dumps(hydra)
    if type(fast) in (str, int, float, bool, type(None)):
        return type(fast) is type(hydra) and fast == hydra
    if type(fast) in (dict, list):  # _convert_: all: new containers, the same leaves
        if type(fast) is not type(hydra) or len(fast) != len(hydra):
            return False
        pairs = zip(fast.items(), hydra.items()) if isinstance(fast, dict) else (((0, f), (0, h)) for f, h in zip(fast, hydra))
        return all(fk == hk and _same_argument(fv, hv) for (fk, fv), (hk, hv) in pairs)
    return fast is hydra


def recording() -> tuple[dict, list]:
    """Wrap fastbuild's direct path so that each of its calls is checked against Hydra's."""
    import hydra._internal.instantiate._instantiate2 as hydra_instantiate

    from anemoi_ckpt_nb.conversion import fastbuild

    counts, differences = {"direct": 0, "hydra": 0}, []
    direct = fastbuild._direct_call

    def checked(config, args, kwargs):
        call = direct(config, args, kwargs)
        if call is None:
            counts["hydra"] += 1
            return None
        counts["direct"] += 1
        captured = {}
        real_call = hydra_instantiate._call_target

        def capture(target, partial, hydra_args, hydra_kwargs, full_key):
            for value in hydra_kwargs.values():  # as Hydra's _call_target does before calling
                if hasattr(value, "_set_parent"):
                    value._set_parent(None)
            captured.update(target=target, args=hydra_args, kwargs=hydra_kwargs)

        hydra_instantiate._call_target = capture
        try:
            fastbuild._HYDRA(config, *args, **kwargs)
        finally:
            hydra_instantiate._call_target = real_call
        target, arguments = call
        name = getattr(target, "__name__", str(target))
        if captured.get("target") is not target or captured.get("args"):
            differences.append(f"{name}: Hydra would call {captured.get('target')} with {captured.get('args')}")
        elif list(arguments) != list(captured["kwargs"]):
            differences.append(f"{name}: arguments {list(arguments)}, Hydra's {list(captured['kwargs'])}")
        else:
            differences.extend(f"{name}: argument {key} differs" for key in arguments
                               if not _same_argument(arguments[key], captured["kwargs"][key]))
        return call

    fastbuild._direct_call = checked
    return counts, differences


def main(files: list[str]) -> dict:
    from anemoi_ckpt_nb import load_model
    from anemoi_ckpt_nb.conversion import fastbuild

    counts, differences = recording()
    results = {}
    for path in files:
        counts.update(direct=0, hydra=0)
        differences.clear()
        fast = load_model(path)
        fast_counts, fast_differences = dict(counts), list(differences)
        fastbuild.ENABLED = False
        try:
            slow = load_model(path)
        finally:
            fastbuild.ENABLED = True
        batch = batch_for(slow)
        with torch.no_grad():
            got, expected = fast.predict_step(dict(batch)), slow.predict_step(dict(batch))
        fast_state = {**dict(fast.named_parameters()), **dict(fast.named_buffers())}
        slow_state = {**dict(slow.named_parameters()), **dict(slow.named_buffers())}
        results[path] = {
            **fast_counts,
            "differences": fast_differences,
            "config_same": pickle.dumps(fast.config) == pickle.dumps(slow.config),
            "repr_same": repr(fast) == repr(slow),
            "tensors_same": fast_state.keys() == slow_state.keys()
            and all(torch.equal(fast_state[k], slow_state[k]) for k in slow_state),
            "predict_same": got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected),
        }
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
