"""An opened checkpoint file: :class:`CheckpointFile`, its tensors (:class:`TensorInfo`), where their bytes lie, and its identity.

Made by :func:`anemoi_ckpt_nb.read.reader.open_checkpoint`; never built by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any

from anemoi_ckpt_nb.errors import CheckpointChangedError
from anemoi_ckpt_nb.read.records import FrozenRecord
from anemoi_ckpt_nb.read.summary import KIND_LABELS, checkpoint_summary


class TensorInfo(FrozenRecord):
    """Name, shape, dtype and size of one tensor, known without reading its values.

    Attributes:
        name: its name in the checkpoint.
        shape: its shape.
        dtype: ``"float32"``, ...
        nbytes: bytes the file holds for it (a sparse tensor: its indices and values).
        layout: ``"strided"`` (dense), or a sparse layout such as ``"sparse_coo"`` or ``"sparse_csr"``.
    """

    FIELDS = ("name", "shape", "dtype", "nbytes", "layout")
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    layout: str

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str, nbytes: int, layout: str = "strided") -> None:
        self._set(name=name, shape=shape, dtype=dtype, nbytes=nbytes, layout=layout)

    @property
    def numel(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count


class CheckpointFile:
    """An open checkpoint: what it holds, with tensors memory-mapped and loaded on demand.

    Made by :func:`open_checkpoint`. Attributes are computed on opening; the
    tensor values are only read when used.

    Attributes:
        path: the file.
        kind: ``"training"``, ``"inference"``, ``"state-dict"`` or ``"safetensors"``.
        format: ``"zip"``, ``"legacy"``, ``"pickle"`` or ``"safetensors"``.
        metadata: the embedded ``anemoi.json`` (else ``ai-models.json``), else
            ``hyper_parameters["metadata"]`` as plain data, else ``None``.
        metadata_source: where the metadata came from: ``"anemoi.json"``,
            ``"ai-models.json"``, ``"hyper_parameters"``, ``"model"``, ``"safetensors"`` or ``None``.
        supporting_arrays: name -> numpy array (a nested dict per dataset for multi-dataset).
        weights: name -> :class:`TensorInfo`, in file order.
        total_bytes, weights_bytes, optimizer_bytes, other_bytes: the file's size and its split.
        parameter_count: elements in the weights (parameters and buffers; shared tensors counted once).
        epoch, global_step: from the Lightning dict, else from the metadata.
        uuid: the uuid lineage uses: for a training file the one in its pickled
            ``hyper_parameters["metadata"]`` (which children name as ``parent_uuid``), else the metadata's.
        embedded_uuid: the uuid of the embedded anemoi.json (``None`` without one); anemoi-training
            >= 0.6 with torch >= 2.6 embeds a second, different uuid into every training file.
        uuids: every distinct uuid the file holds, ``uuid`` first.
        run_id, parent_uuid: from the metadata.
        opaque_classes: ``(module, name)`` of the classes the pickle named and the reader did not rebuild,
            and of the functions it keeps as inert references (``torch.nn.functional.gelu``).
        raw: the unpickled top-level object: plain data and inert placeholders (``None`` for safetensors).
        label: what the file is, in words (see :attr:`label`).
    """

    def __init__(self, path: Path, kind: str, fmt: str) -> None:
        self.path = path
        self.kind = kind
        self.format = fmt
        self.metadata: dict | None = None
        self.metadata_source: str | None = None
        self._supporting_arrays: dict = {}  # numpy arrays, or arrays described (arrayrefs) until asked for
        self._arrays_made = True
        self.weights: dict[str, TensorInfo] = {}
        self.total_bytes = 0
        self.weights_bytes = 0
        self.optimizer_bytes = 0
        self.other_bytes = 0
        self.parameter_count = 0
        self.epoch: int | None = None
        self.global_step: int | None = None
        self.uuid: str | None = None
        self.embedded_uuid: str | None = None
        self.uuids: list[str] = []
        self.run_id: str | None = None
        self.parent_uuid: str | None = None
        self.opaque_classes: list[tuple[str, str]] = []
        #: The ``__metadata__`` of a safetensors file's header (strings), else empty.
        self.safetensors_metadata: dict[str, str] = {}
        self._raw: Any = None
        self._raw_with_torch: Any = None  # a file read without torch: reads it again with torch for ``raw``
        self._tensors: dict[str, Any] = {}
        self._refs: dict[str, Any] = {}  # name -> TensorRef, for a file read without torch
        self._read: Any = None  # (offset, nbytes) -> bytes of the file opened, for a file read without torch
        self._make_tensor: Any = None  # safetensors: name -> tensor, made on demand
        self._span: Any = None  # name -> (offset, nbytes) | None, set by the opener
        self._crc: Any = None  # name -> the archive's CRC-32 of its bytes | None, set by the opener
        self._model_inputs: Any = None  # () -> ModelInputs | None, set by the opener
        #: ``os.stat`` of the file when it was opened: a caller reading it again can tell it was replaced or rewritten.
        self.opened_stat: os.stat_result | None = None
        self._closers: list[Any] = []
        self._closed = False

    @property
    def supporting_arrays(self) -> dict:
        """name -> numpy array (made, importing numpy, the first time they are asked for)."""
        if not self._arrays_made:
            from anemoi_ckpt_nb.read.arrayrefs import made

            self._supporting_arrays, self._arrays_made = made(self._supporting_arrays), True
        return self._supporting_arrays

    @supporting_arrays.setter
    def supporting_arrays(self, value: dict) -> None:
        self._supporting_arrays, self._arrays_made = value, False

    @property
    def raw(self) -> Any:
        """The unpickled top-level object: plain data, inert placeholders and torch tensors.

        A file opened without torch (every ``torch.save`` zip archive of dense tensors) is read
        again, with torch, the first time this is asked for, so that its tensors are torch's.

        Raises:
            CheckpointChangedError: the file changed on disk since it was opened.
        """
        if self._raw_with_torch is not None:
            self._refuse_changed()
            load, self._raw_with_torch = self._raw_with_torch, None
            loaded = load()
            self._closers.append(loaded.close)
            self._raw = loaded.raw
        return self._raw

    @raw.setter
    def raw(self, value: Any) -> None:
        self._raw = value
        self._raw_with_torch = None

    # -- tensors
    def tensor(self, name: str) -> Any:
        """The tensor ``name`` (memory-mapped: its values are read when used).

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed.
            CheckpointChangedError: the file changed on disk since it was opened (reading a
                memory map past a truncated end would kill the process instead).
        """
        self._check(name)
        self._refuse_changed()
        if name in self._tensors:
            return self._tensors[name].detach()
        return self._make_tensor(name)

    def tensor_span(self, name: str) -> tuple[int, int] | None:
        """Where the bytes of the weight ``name`` lie in the file, as ``(offset, nbytes)``.

        Computed from the file's structure, without reading any tensor: for a
        torch zip archive, the storage entry's data offset (its local header's
        offset + 30 + the name and extra lengths read from that header) plus the
        tensor's ``storage_offset * itemsize``; for a legacy torch file, the
        storage's place after its element count; for safetensors, the header's
        ``data_offsets``. The bytes there are exactly ``tensor(name)``'s values,
        C-contiguous, in the machine's byte order, so a caller may read them with
        plain file reads instead of through the memory map.

        Returns:
            ``None`` when the tensor is not a contiguous run of the file's bytes:
            a non-contiguous view, a storage held in memory (plain pickles,
            compressed entries, tensors pickled inside the pickle) or one
            byte-swapped from a file of the other byte order.

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed.
        """
        self._check(name)
        return self._span(name) if self._span is not None else None

    def tensor_crc32(self, name: str) -> int | None:
        """The CRC-32 the zip archive records for the bytes of the weight ``name``.

        Lets a caller that read those bytes (:meth:`tensor_span`) check them: a
        mismatch means the file changed since it was opened, or is damaged.

        Returns:
            ``None`` unless the weight is exactly one whole, stored (uncompressed)
            entry of a torch zip archive in this machine's byte order.

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed.
        """
        self._check(name)
        return self._crc(name) if self._crc is not None else None

    def storage_nbytes(self, name: str) -> int:
        """How many bytes the file stores for the storage of the weight ``name`` (a view may cover
        fewer, or repeat them: an expanded tensor).

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed.
        """
        self._check(name)
        if name in self._refs:
            return self._refs[name].storage.nbytes
        return self.tensor(name).untyped_storage().nbytes()

    def opened_bytes(self, name: str, count: int) -> bytes:
        """The first ``count`` bytes of the weight ``name`` (one run of the file: :meth:`tensor_span`),
        as the file opened holds them, even if it was replaced on disk since.

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed, or the weight is not one run of the file.
            CheckpointChangedError: the file was rewritten or truncated since it was opened.
        """
        span = self.tensor_span(name)
        if span is None:
            raise ValueError(f"{self.path}: the weight {name} is not one run of the file's bytes")
        count = min(count, span[1])
        self._refuse_changed()
        if self._read is not None:
            return self._read(span[0], count)
        import torch

        return self.tensor(name).reshape(-1).view(torch.uint8)[:count].numpy().tobytes()

    def read_bytes(self, name: str) -> Any:
        """The weight ``name``'s elements as C-contiguous bytes (a numpy ``uint8`` array) in this
        machine's byte order, read from the file opened; without torch for a file read without it.

        For a weight that is not one run of the file's bytes (:meth:`tensor_span` is ``None``): a
        strided view, a compressed or byte-swapped storage. Holds one tensor's worth of memory.

        Raises:
            KeyError: no weight of that name.
            ValueError: the checkpoint was closed.
            CheckpointChangedError: the file changed on disk since it was opened.
        """
        self._check(name)
        ref = self._refs.get(name)
        if ref is None:
            import torch

            tensor = self.tensor(name).contiguous()
            return tensor.reshape(-1).view(torch.uint8).numpy()
        from anemoi_ckpt_nb.read.tensorrefs import dense_bytes

        self._refuse_changed()
        return dense_bytes(ref, ref.storage.buffer())

    def _refuse_changed(self) -> None:
        if self.changed_on_disk():
            raise CheckpointChangedError(
                self.path,
                "it changed on disk since it was opened (rewritten, replaced or truncated)",
                hint="open it again once the program writing it has finished",
            )

    def changed_on_disk(self) -> bool:
        """Whether the file at :attr:`path` is no longer the one opened, or was rewritten since
        (another inode, size or modification time)."""
        if self.opened_stat is None:
            return False
        try:
            now = self.path.stat()
        except OSError:
            return True
        before = self.opened_stat
        return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != (
            before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns
        )

    def _check(self, name: str) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the checkpoint is closed")
        if name not in self.weights:
            close = [n for n in self.weights if name in n or n in name][:3]
            raise KeyError(f"{self.path}: no weight {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))

    def model_inputs(self) -> Any:
        """What anemoi-models builds the model from besides the weights: graph, statistics, indices.

        Read from the ``anemoi-model`` entries of a converted file, from
        ``hyper_parameters`` of a training checkpoint, or from the attributes of the model
        pickled in anemoi-training's inference checkpoint (see
        :mod:`anemoi_ckpt_nb.read.model_inputs`); read when first asked.

        Returns:
            A :class:`~anemoi_ckpt_nb.read.model_inputs.ModelInputs`, or ``None`` when the
            file holds no graph (a plain state dict, or a file converted before graphs were kept).

        Raises:
            CorruptCheckpointError: they are there but damaged or in an unknown form.
        """
        from anemoi_ckpt_nb.errors import CorruptCheckpointError
        from anemoi_ckpt_nb.read.model_inputs import ModelInputsError

        if self._closed:
            raise ValueError(f"{self.path}: the checkpoint is closed")
        if callable(self._model_inputs):
            try:
                self._model_inputs = (self._model_inputs(),)
            except ModelInputsError as error:
                self._model_inputs = None
                raise CorruptCheckpointError(self.path, f"its graph and statistics cannot be read: {error}") from None
        return self._model_inputs[0] if self._model_inputs else None

    def iter_weights(self) -> Iterator[tuple[str, Any]]:
        """``(name, tensor)`` for every weight, in file order."""
        for name in self.weights:
            yield name, self.tensor(name)

    @property
    def label(self) -> str:
        """What the file is, for people: ``kind`` says how it was read, this says what it is for.

        A file written by ``anemoi-ckpt convert`` is read as a ``"state-dict"`` (a torch zip
        of the weights) or ``"safetensors"``, which is what the catalogue and the converter's own
        check key on; its metadata's ``conversion`` record makes it an inference checkpoint.
        """
        metadata = self.metadata if isinstance(self.metadata, dict) else {}
        conversion = metadata.get("conversion")
        if self.kind in ("state-dict", "safetensors") and isinstance(conversion, dict):
            source = metadata.get("converted_from")
            source_uuid = source.get("uuid") if isinstance(source, dict) else None
            label = f"inference checkpoint (weights only, converted by {conversion.get('tool') or 'a converter'}"
            return label + (f" from {source_uuid})" if source_uuid else ")")
        return KIND_LABELS.get(self.kind, self.kind)

    # -- summary
    def summary(self) -> dict[str, Any]:
        """A JSON-able description: what ``anemoi-ckpt inspect --json`` prints."""
        return checkpoint_summary(self)

    # -- life cycle
    def close(self) -> None:
        """Release the file (memory maps go once the tensors handed out are gone too)."""
        for close in self._closers:
            close()
        self._closers.clear()
        self._tensors.clear()
        self._refs = {}
        self._read = None
        self._make_tensor = None
        self._span = None
        self.raw = None
        self._closed = True

    def __enter__(self) -> CheckpointFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CheckpointFile {self.kind} {str(self.path)!r} uuid={self.uuid} parameters={self.parameter_count}>"
