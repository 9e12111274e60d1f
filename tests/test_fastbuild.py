"""The config tree load_model builds without OmegaConf.create (``conversion/fastbuild``): the same nodes.

Its Hydra shortcut is judged with the real anemoi-models, argument by argument against Hydra
(tests/test_loader_real.py, ``real_env/fastbuild_compare.py``).
"""

from __future__ import annotations

import pickle

import pytest
from omegaconf import DictConfig, OmegaConf
from realenv import REAL

from anemoi_ckpt_nb import open_checkpoint
from anemoi_ckpt_nb.conversion import fastbuild
from anemoi_ckpt_nb.conversion.loader import translate_config

ALL_KINDS = {
    "model": {"_target_": "anemoi.models.models.AnemoiModelEncProcDec", "num_channels": 8, "trainable": 0.5,
              "layers": [{"name": "a", "sizes": [1, 2, []]}, None, True, "x"], "empty": {}},
    "interpolated": "${model.num_channels}", "missing": "???", "unicode": "é", "nested": [[{}], [[]]],
}


def _same_as_omegaconf(data: dict) -> None:
    built = fastbuild.config_tree(data)
    assert type(built) is DictConfig
    assert pickle.dumps(built) == pickle.dumps(OmegaConf.create(data))
    assert OmegaConf.to_container(built) == data


def test_the_probe_holds_here_so_the_tree_is_used():
    assert fastbuild._tree_ok()
    assert pickle.dumps(fastbuild._tree(ALL_KINDS, None, None, objects=False)) == pickle.dumps(OmegaConf.create(ALL_KINDS))


@pytest.mark.parametrize("model", ["gnn", "graphtransformer"])
def test_the_real_configs_make_the_same_nodes(model):
    path = next((REAL / "current" / model / "run").glob("*/last.ckpt"))
    with open_checkpoint(path) as checkpoint:
        config = translate_config(checkpoint.metadata["config"])
    assert len(str(config)) > 5000
    _same_as_omegaconf(config)
    assert not fastbuild.has_interpolation(config)  # so Hydra's direct path is taken for them


def test_every_kind_of_node_and_interpolations_resolve_alike():
    _same_as_omegaconf(ALL_KINDS)
    built = fastbuild.config_tree(ALL_KINDS)
    assert built.interpolated == 8 and OmegaConf.is_missing(built, "missing")
    built.model.num_channels = 16  # the tree is a working config: it resolves through its parents
    assert built.interpolated == 16


def test_what_the_tree_cannot_make_is_left_to_omegaconf():
    data = {"a": {1: "int key"}, "b": (1, 2)}
    built = fastbuild.config_tree(data)
    assert pickle.dumps(built) == pickle.dumps(OmegaConf.create(data))


def test_interpolations_are_found_at_any_depth():
    assert not fastbuild.has_interpolation({"a": [1, {"b": "plain $ text {}"}]})
    assert fastbuild.has_interpolation({"a": [1, {"b": "x ${c} y"}]})
    assert fastbuild.has_interpolation({"a": ["???"]})
