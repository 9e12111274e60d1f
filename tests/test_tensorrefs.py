"""Reading without torch gives what reading with torch gives (issue 16).

The reader first reads a torch file without torch (tensors described by
``tensorrefs``); these tests hold that path to the torch one: its tables against
the installed torch, its answer for every global of torch's namespaces against
the answer with torch, its tensors against ``torch.load``'s, and the archive the
converter writes by hand against ``torch.save``'s own bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import sys
import zipfile

import pytest
import torch

from anemoi_ckpt_nb.read import tensorrefs
from anemoi_ckpt_nb.errors import CorruptCheckpointError, UnsafePickleError
from anemoi_ckpt_nb.read.reader import open_checkpoint
from anemoi_ckpt_nb.read.tensorrefs import DTYPES, NeedsTorch
from anemoi_ckpt_nb.read.torchfile import load_torch_file
from anemoi_ckpt_nb.read.placeholders import Placeholder, Reference
from anemoi_ckpt_nb.read.resolver import Globals


def test_the_dtype_table_is_torchs():
    storages = {str(k).removeprefix("torch."): v for k, v in torch.storage._dtype_to_storage_type_map().items()}
    for name, (itemsize, storage) in DTYPES.items():
        dtype = getattr(torch, name)
        assert dtype.itemsize == itemsize, name
        assert storages.get(name) == storage, name
        assert (name in tensorrefs.GRAD_DTYPES) == (dtype.is_floating_point or dtype.is_complex), name


def _answer(globals_: Globals, module: str, name: str) -> str:
    try:
        found = globals_.resolve(module, name)
    except UnsafePickleError:
        return "refused"
    except NeedsTorch:
        return "needs torch"
    except pickle.UnpicklingError:
        return "error"
    if isinstance(found, type) and issubclass(found, Placeholder):
        return "placeholder"
    if isinstance(found, Reference):
        return "reference"
    return "allowed"


def _torch_names():
    """``(module, name, defined there)`` of every name in the torch modules loaded now: a pickle of
    torch.save names a class or function by the module that defines it, a crafted one by any name."""
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "torch" or module_name.startswith("torch.")):
            continue
        for name, value in list(vars(module).items()):
            yield module_name, name, getattr(value, "__module__", None) == module_name
            if isinstance(value, type) and module_name in ("torch", "torch.nn.modules.linear"):
                for attr in list(vars(value))[:50]:
                    yield module_name, f"{name}.{attr}", False


@pytest.mark.filterwarnings("ignore::FutureWarning")  # reading torch's namespaces touches deprecated names
def test_without_torch_every_torch_global_gets_the_answer_it_gets_with_torch():
    """Described or not, a global is refused, kept inert, or left to torch; never allowed where torch refuses.

    For what torch.save writes (a class or function named by its own module) the answer is the
    same; a name a module only imports (``torch.nn.modules.module.Optional``) may be kept as an
    inert class where torch keeps an inert function: neither is ever run.
    """
    described, with_torch = Globals("<test>", describe=True), Globals("<test>")
    checked = 0
    for module, name, defined_there in _torch_names():
        without = _answer(described, module, name)
        if without == "needs torch":
            continue
        checked += 1
        answer = _answer(with_torch, module, name)
        if without == "allowed":  # the stand-ins of tensorrefs: only what torch allows
            assert answer == "allowed", (module, name)
        elif defined_there or "refused" in (without, answer):
            assert without == answer, (module, name, without, answer)
        else:
            assert {without, answer} <= {"placeholder", "reference"}, (module, name, without, answer)
    assert checked > 1000  # torch.nn.modules' classes, torch._C._nn's operators, every refusal


def _zip_of(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_described_tensors_are_the_tensors_torch_loads(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved = {
        "plain": base,
        "view": base[1:, 2:5],  # a strided view into a shared storage
        "transposed": base.t(),
        "bf16": torch.linspace(-3, 3, 10, dtype=torch.bfloat16),
        "f8": torch.ones(7).to(torch.float8_e4m3fn),
        "u16": torch.arange(9, dtype=torch.int32).to(torch.uint16),
        "param": torch.nn.Parameter(torch.randn(3, 2)),
        "complex": torch.randn(4, dtype=torch.complex64),
        "empty": torch.empty(0, 5),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
    }
    path = tmp_path / "mixed.pt"
    torch.save(saved, path)
    loaded = load_torch_file(path, describe=True)
    loaded.close()
    assert loaded.described
    expected = torch.load(path, weights_only=True)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.kind == "state-dict"
        for name, tensor in expected.items():
            info = checkpoint.weights[name]
            assert (info.dtype, tuple(info.shape)) == (str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape))
            got = checkpoint.tensor(name)
            assert got.dtype == tensor.dtype and got.stride() == tensor.stride()
            assert torch.equal(got.reshape(-1).contiguous().view(torch.uint8), tensor.reshape(-1).contiguous().view(torch.uint8)), name
            dense = checkpoint.read_bytes(name)
            assert bytes(dense) == tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), name
        assert checkpoint.tensor_span("view") is None and checkpoint.tensor_span("plain") is not None
        # view and plain share one storage: counted once, as with torch
        assert checkpoint.weights_bytes == sum(
            t.untyped_storage().nbytes() for n, t in expected.items() if n not in ("view", "transposed")
        )


def test_a_tensor_beyond_its_storage_is_a_corrupt_file_without_torch(tmp_path):
    class Reduce:
        def __init__(self, *args):
            self.args = args

        def __reduce__(self):
            return self.args[0], self.args[1:]

    small = torch.ones(3)
    storage = torch.storage.TypedStorage(wrap_storage=small.untyped_storage(), dtype=torch.float32, _internal=True)
    lying = Reduce(torch._utils._rebuild_tensor_v2, storage, 1, (3,), (1,), False, collections.OrderedDict())
    path = tmp_path / "lying.pt"
    torch.save({"w": lying}, path)
    with pytest.raises(CorruptCheckpointError, match="holds 12"):
        load_torch_file(path, describe=True)
    with pytest.raises(CorruptCheckpointError):  # torch's own check says the same
        open_checkpoint(path)


def test_a_file_needing_torch_is_read_with_it(tmp_path):
    path = tmp_path / "sparse.pt"
    torch.save({"s": torch.eye(3).to_sparse()}, path)
    with pytest.raises(NeedsTorch):
        load_torch_file(path, describe=True)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.weights["s"].layout == "sparse_coo"


def test_the_archive_pickle_is_torch_saves_own(tmp_path):
    """The data.pkl written from descriptions is byte for byte the one torch.save writes."""
    from anemoi_ckpt_nb.conversion.writers import TensorEntry, state_dict_pickle

    tensors = {
        "a.weight": torch.randn(3, 4),
        "b": torch.ones(5).to(torch.float8_e4m3fn),
        "c": torch.randn(2, 2, dtype=torch.bfloat16),
        "d": torch.tensor(7, dtype=torch.uint16),
        "e": torch.empty(0, 3, dtype=torch.int64),
        "f": torch.zeros(4, dtype=torch.bool),
    }
    with zipfile.ZipFile(io.BytesIO(_zip_of(tensors))) as zf:
        theirs = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    entries = [
        TensorEntry(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), t.untyped_storage().nbytes(), list)
        for name, t in tensors.items()
    ]
    assert state_dict_pickle(entries) == theirs
