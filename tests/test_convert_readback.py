"""The converted file is checked as it reads back: a wrong byte in it is caught before it is published.

Weights whose CRC-32 the source archive records are copied by the kernel (copy_file_range) and
never pass through Python; the others are written from memory. Either way the output is read
back through a second descriptor opened on its name, hashed and CRC'd, and compared with the
source. These tests make the file hold a wrong byte after a write returned, as a faulty
file system, disk or copy would, and check the conversion refuses it and leaves nothing.
"""

from __future__ import annotations

import errno
import os

import pytest
import torch

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.conversion.convert import convert
from anemoi_ckpt_nb.conversion.output import OutputFile
from anemoi_ckpt_nb.errors import ConvertError
from anemoi_ckpt_nb.read.checkpoint import CheckpointFile
from anemoi_ckpt_nb.storage.hashing import sha256_file

FORMATS = ["anemoi", "safetensors"]


@pytest.fixture
def source(tmp_path):
    return examples.write_training_checkpoint(tmp_path / "t.ckpt", weights_bytes=3_000_000).path


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _flip_last_byte(fd: int) -> None:
    """Change the last byte written to ``fd`` (at its position), behind the writer's back."""
    at = os.lseek(fd, 0, os.SEEK_CUR) - 1
    with open(f"/proc/self/fd/{fd}", "r+b") as again:
        again.seek(at)
        value = again.read(1)
        again.seek(at)
        again.write(bytes([value[0] ^ 0x01]))


@pytest.mark.parametrize("format", FORMATS)
def test_a_wrong_byte_copied_by_the_kernel_is_caught(source, out, format, monkeypatch):
    real = os.copy_file_range
    flipped = []

    def faulty(src: int, dst: int, count: int, offset_src=None, offset_dst=None) -> int:
        done = real(src, dst, count, offset_src, offset_dst)
        if not flipped and done:
            _flip_last_byte(dst)
            flipped.append(done)
        return done

    monkeypatch.setattr(os, "copy_file_range", faulty)
    with pytest.raises(ConvertError, match="verification failed") as raised:
        convert(source, out, format=format)
    assert flipped
    assert "faulty" in raised.value.hint
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("format", FORMATS)
def test_a_wrong_byte_written_from_memory_is_caught(source, out, format, monkeypatch):
    """Without a recorded CRC-32 the bytes go through this process: CRC'd from the source, checked as they read back."""
    monkeypatch.setattr(CheckpointFile, "tensor_crc32", lambda self, name: None)
    real = OutputFile._write_all
    flipped = []

    def faulty(self, view) -> None:
        real(self, view)
        if not flipped and view.nbytes > 100_000:  # a tensor's chunk, not a header
            _flip_last_byte(self._fd)
            flipped.append(view.nbytes)

    monkeypatch.setattr(OutputFile, "_write_all", faulty)
    with pytest.raises(ConvertError, match="verification failed"):
        convert(source, out, format=format)
    assert flipped
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("format", FORMATS)
def test_where_the_kernel_cannot_copy_the_bytes_go_through_a_buffer(source, out, format, monkeypatch):
    """copy_file_range refused (another file system, an old kernel): the same file, written from memory."""
    calls = []

    def refused(*args, **kwargs) -> int:
        calls.append(args)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", refused)
    result = convert(source, out, format=format)
    assert len(calls) == 1  # refused once, then not asked again
    assert result.sha256 == sha256_file(result.destination)
    monkeypatch.undo()
    again = convert(source, out / "again", format=format)
    assert again.destination.read_bytes() != b"" and _weights(again.destination) == _weights(result.destination)


def test_a_copy_that_fails_for_real_is_an_error_and_leaves_nothing(source, out, monkeypatch):
    def broken(*args, **kwargs) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "copy_file_range", broken)
    with pytest.raises(ConvertError, match="input/output error|I/O error|Input/output error"):
        convert(source, out)
    assert sorted(p.name for p in out.iterdir()) == []


def test_the_output_is_hashed_as_it_reads_back(source, out):
    """Its sha256 is that of the file on disk, and each weight matches the source's bytes."""
    result = convert(source, out)
    assert result.sha256 == sha256_file(result.destination)
    from anemoi_ckpt_nb.read.reader import open_checkpoint

    loaded = torch.load(result.destination, weights_only=True)
    with open_checkpoint(source) as ck:
        assert loaded and all(torch.equal(tensor, ck.tensor(f"model.{name}")) for name, tensor in loaded.items())


def _weights(path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {name: tensor.tolist() for name, tensor in load_file(path).items() if not name.startswith("anemoi")}
    return {name: tensor.tolist() for name, tensor in torch.load(path, weights_only=True).items()}
