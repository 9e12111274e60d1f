"""Convert training checkpoints to inference checkpoints: streaming, verified, deterministic.

A Lightning training checkpoint holds the model weights, the optimizer state
(about twice the weights for Adam), loops, callbacks and hyper-parameters. An
inference checkpoint needs only the weights and the metadata. :func:`convert`
writes them in one pass, reading only the weights' bytes where the reader says
they lie (:meth:`CheckpointFile.tensor_span`; the optimizer state is never
unpickled into tensors nor read, except by the sha256 of the whole source for
``converted_from``, computed in other threads meanwhile and skipped when the
caller knows it), with memory bounded by a few 1 MiB chunks (and three 4 MiB
ones for that hash) plus at most one tensor (a non-contiguous one is copied),
whatever the size of the file.

**Names.** anemoi-training saves its inference checkpoint by pickling
``trainer.model.model`` (``AnemoiCheckpoint._torch_drop_down`` in
``anemoi/training/diagnostics/callbacks/checkpoint.py``): the
``AnemoiModelInterface`` held by the Lightning module as its ``model``
attribute. Its ``state_dict`` keys are therefore the Lightning ``state_dict``
keys that start with ``model.``, with that first ``model.`` removed::

    model.model.encoder.emb_nodes_src.weight   ->  model.encoder.emb_nodes_src.weight
    model.pre_processors.normalizer._norm_mul  ->  pre_processors.normalizer._norm_mul
    loss.node_weights (not under model.)       ->  dropped (belongs to the Lightning module)

so ``AnemoiModelInterface.load_state_dict(torch.load(path, weights_only=True))``
accepts the output. The names of an inference checkpoint given as source are
kept as they are.

**Formats.**

* ``anemoi`` (default): a torch zip archive of a plain ``dict`` name -> tensor
  that ``torch.load(path, weights_only=True)`` opens (``mmap=True`` too), with
  the metadata at ``<top>/anemoi-metadata/anemoi.json`` and the supporting
  arrays beside it as anemoi-utils' ``save_metadata`` lays them out, so
  ``anemoi.utils.checkpoints.load_metadata(path, supporting_arrays=True)`` and
  ``anemoi-utils metadata`` read it.
* ``safetensors``: no pickle at all; the metadata JSON under the header key
  ``"anemoi"``, each supporting array a tensor named
  ``anemoi-supporting-arrays/<key>`` (see :mod:`anemoi_ckpt_nb.read.embedded`).

* ``pickled``: the pickled ``AnemoiModelInterface`` with anemoi.json, as
  anemoi-training's checkpoint callback writes it (:mod:`.pickled`); built with
  anemoi-models, so it converts only where anemoi-models is installed.

All get a sidecar ``<file name>.json`` holding the same metadata as the
archive: the training metadata (``hyper_parameters["metadata"]``, supporting
arrays described in ``supporting_arrays_paths`` but kept as arrays in the
archive) with a fresh ``uuid``, ``converted_from`` = ``{uuid, sha256, path}`` of
the training checkpoint and ``conversion`` = ``{tool, version, time, format}``.

**Safety.** Everything is written to a hidden temporary file in the destination
folder, flushed to disk (while it is verified), reopened by the reader and
compared tensor by tensor (CRC-32 of the bytes read back where the reopened file
says each tensor lies, against the bytes read from the source; torch or
safetensors must also open it), and only then renamed into place; the sidecar is renamed
last, so a sidecar always describes a complete archive. A failure or an
interruption leaves nothing under the final names. The output is deterministic:
the same source gives byte-identical weights (only the embedded metadata's
``uuid`` and ``conversion.time`` differ between two conversions).
"""

from __future__ import annotations

from pathlib import Path

from anemoi_ckpt_nb.conversion.plan import ConvertResult, Progress, _destination
from anemoi_ckpt_nb.conversion.write import _convert_open, _open


def convert(
    source: str | Path,
    destination: str | Path,
    *,
    format: str = "anemoi",
    overwrite: bool = False,
    progress: Progress | None = None,
    source_sha256: str | None = None,
) -> ConvertResult:
    """Write the inference checkpoint of a training checkpoint.

    Args:
        source: a Lightning training checkpoint (an Anemoi inference checkpoint
            with a pickled model is accepted too and keeps its names).
        destination: the file to write, or a folder to write ``inference-<stem>.ckpt``
            (``.safetensors``) into: an existing one, or a name ending with ``/`` or
            without a suffix, created if missing (as ``anemoi-ckpt convert -o`` does).
        format: ``"anemoi"`` (torch zip with embedded metadata), ``"safetensors"``, or
            ``"pickled"`` (the pickled model anemoi-inference's default runner loads; needs
            anemoi-models and torch-geometric installed, see :mod:`.pickled`).
        overwrite: replace an existing destination (and its sidecar).
        progress: called as ``progress(done, total)`` with bytes of tensors copied.
        source_sha256: the source's sha256 if already known (the catalogue
            passes the one it registered); otherwise it is computed while the
            conversion runs, reading the whole source file once.

    Returns:
        What was written, with the sha256 of the output.

    Raises:
        ConvertError: a bad format or destination, an existing destination
            without ``overwrite``, a source that cannot be read or holds no
            weights, no space left, no permission, or a failed verification.
            It names the source and the destination and says what to do.
    """
    source = Path(source)
    target = _destination(source, destination, format)
    checkpoint = _open(source, target)
    try:
        return _convert_open(
            checkpoint, source, target, format=format, overwrite=overwrite, progress=progress, source_sha256=source_sha256
        )
    finally:
        checkpoint.close()
