"""The graph and statistics a converted file carries, so that the model can be built again.

What they are and how they are laid out: :mod:`anemoi_ckpt_nb.read.model_inputs`. Here:
taking them from the source, and the entries each format's writer adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from anemoi_ckpt_nb.errors import CkptError, ConvertError


def of_source(checkpoint: Any, source: Path, target: Path) -> Any:
    """The source's model inputs (``None`` for a plain state dict, which has none).

    Raises:
        ConvertError: the source holds a graph this code cannot read.
    """
    try:
        return checkpoint.model_inputs()
    except CkptError as error:
        raise ConvertError(source, target, error.message if hasattr(error, "message") else str(error)) from error


def zip_entries(inputs: Any) -> Iterator[tuple[str, bytes]]:
    """``(entry under the top folder, bytes)``: the spec, then each array's raw bytes."""
    import numpy as np

    from anemoi_ckpt_nb.read.model_inputs import NAMESPACE, SPEC_ENTRY, spec_json

    if inputs is None:
        return
    yield f"{NAMESPACE}/{SPEC_ENTRY}", spec_json(inputs).encode()
    for name, array in inputs.arrays.items():
        yield f"{NAMESPACE}/{name}.numpy", np.ascontiguousarray(array).tobytes()


def safetensors_entries(inputs: Any, chunks: Callable[[Any], Callable[[], list[Any]]]) -> list[Any]:
    """The arrays as tensors named ``anemoi-model/<name>``."""
    from anemoi_ckpt_nb.conversion.streams import TensorEntry
    from anemoi_ckpt_nb.read.model_inputs import PREFIX

    if inputs is None:
        return []
    return [
        TensorEntry(PREFIX + name, array.dtype.name, tuple(array.shape), array.nbytes, chunks(array))
        for name, array in inputs.arrays.items()
    ]


def safetensors_header(inputs: Any) -> dict[str, str]:
    from anemoi_ckpt_nb.read.model_inputs import SAFETENSORS_SPEC_KEY, spec_json

    return {} if inputs is None else {SAFETENSORS_SPEC_KEY: spec_json(inputs)}
