"""Sparse tensors in a checkpoint: sized by what the file holds, checked, refused by convert."""

from __future__ import annotations

import pytest
import torch

from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.errors import ConvertError, CorruptCheckpointError
from anemoi_ckpt_nb.read.reader import open_checkpoint
from anemoi_ckpt_nb.read.summary import summary_text


def _lightning(path, state_dict, optimizer_tensors=()):
    torch.save(
        {
            "pytorch-lightning_version": "2.4.0",
            "epoch": 1,
            "global_step": 10,
            "state_dict": state_dict,
            "optimizer_states": [{"state": {i: {"exp_avg": t} for i, t in enumerate(optimizer_tensors)}}],
            "hyper_parameters": {},
        },
        path,
    )
    return path


def _coo():
    indices = torch.tensor([[0, 1, 3], [2, 0, 1]])
    return torch.sparse_coo_tensor(indices, torch.tensor([1.0, 2.0, 3.0]), (4, 3), check_invariants=True)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["coo", "csr", "csc"])
def test_a_sparse_weight_is_sized_by_its_indices_and_values(tmp_path, layout):
    dense = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    sparse = {"coo": _coo(), "csr": _coo().to_sparse_csr(), "csc": _coo().to_sparse_csc()}[layout]
    path = _lightning(tmp_path / "s.ckpt", {"model.model.w": sparse, "model.model.d": dense}, [dense.clone()])
    with open_checkpoint(path) as ck:
        info = ck.weights["model.model.w"]
        assert info.layout == f"sparse_{layout}"
        assert info.shape == (4, 3)
        if layout == "coo":
            assert info.nbytes == 2 * 3 * 8 + 3 * 4  # int64 indices 2x3, float32 values 3
        assert ck.weights["model.model.d"].layout == "strided"
        if layout == "coo":
            assert ck.weights_bytes == info.nbytes + dense.nbytes
        else:  # the compressed indices may be views of larger storages, which the file holds whole
            assert ck.weights_bytes >= info.nbytes + dense.nbytes
        assert ck.optimizer_bytes == dense.nbytes
        assert ck.parameter_count == 3 + 12  # the stored values, then the dense weight
        assert ck.tensor_span("model.model.w") is None  # not a run of the file's bytes
        assert torch.equal(ck.tensor("model.model.w").to_dense(), sparse.to_dense())
        assert ck.summary()["sparse_tensors"] == {"model.model.w": f"sparse_{layout}"}
        assert f"2 tensors (float32), 1 sparse (sparse_{layout})" in summary_text(ck.summary())


def test_a_sparse_tensor_with_indices_out_of_range_is_a_corrupt_file(tmp_path):
    """torch checks these only when invariant checking is on (off by default); to_dense()
    of such a tensor would write outside its memory."""
    bad = torch.sparse_coo_tensor(torch.tensor([[0, 1_000_000], [0, 0]]), torch.tensor([1.0, 2.0]), (4, 3),
                                  check_invariants=False)
    path = _lightning(tmp_path / "bad.ckpt", {"model.model.w": bad})
    with pytest.raises(CorruptCheckpointError, match="sparse tensor is inconsistent") as caught:
        open_checkpoint(path)
    assert str(path) in str(caught.value)
    assert not torch._utils._sparse_tensors_to_validate  # nothing left over for the next load


def test_a_sparse_tensor_in_a_plain_pickle_is_checked_too(tmp_path):
    bad = torch.sparse_coo_tensor(torch.tensor([[5], [0]]), torch.tensor([1.0]), (4, 3), check_invariants=False)
    path = tmp_path / "plain.pt"
    torch.save({"w": bad}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CorruptCheckpointError, match="sparse tensor is inconsistent"):
        open_checkpoint(path)


def test_convert_refuses_a_sparse_weight_by_name(tmp_path):
    path = _lightning(tmp_path / "s.ckpt", {"model.model.w": _coo(), "model.model.d": torch.ones(3)})
    (tmp_path / "out").mkdir()
    with pytest.raises(ConvertError, match=r"model\.model\.w is a sparse_coo tensor") as caught:
        convert(path, tmp_path / "out")
    assert "to_dense" in caught.value.hint
    assert list((tmp_path / "out").iterdir()) == []


def test_loads_in_threads_check_their_own_sparse_tensors(tmp_path):
    """torch keeps the sparse tensors to check in one list per process: loads in threads
    (convert --jobs) must not check, or blame, each other's."""
    from concurrent.futures import ThreadPoolExecutor

    good = _lightning(tmp_path / "good.ckpt", {"model.model.w": _coo()})
    bad = _lightning(
        tmp_path / "bad.ckpt",
        {"model.model.w": torch.sparse_coo_tensor(torch.tensor([[9], [0]]), torch.tensor([1.0]), (4, 3),
                                                  check_invariants=False)},
    )

    def load(path):
        try:
            open_checkpoint(path).close()
        except CorruptCheckpointError as error:
            return path, str(path) in str(error)
        return path, None

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(load, [good, bad] * 30))
    assert all(named is None for path, named in outcomes if path == good)
    assert all(named is True for path, named in outcomes if path == bad)


def test_a_load_that_failed_half_way_does_not_blame_the_next_file(tmp_path):
    """torch's list of sparse tensors to check keeps what a load that failed after rebuilding
    one left there; the next file's load must not check (and blame itself for) it."""
    bad = torch.sparse_coo_tensor(torch.tensor([[9], [0]]), torch.tensor([1.0]), (4, 3), check_invariants=False)
    good = _lightning(tmp_path / "good.ckpt", {"model.model.w": _coo()})
    torch._utils._sparse_tensors_to_validate.append(bad)  # left by a load that failed half-way
    with open_checkpoint(good) as ck:
        assert ck.weights["model.model.w"].layout == "sparse_coo"
    assert not torch._utils._sparse_tensors_to_validate
