"""RangeCopier: byte ranges copied by the kernel, or through a buffer where it declines (storage/kernelcopy.py).

The kernel's refusals are simulated (this machine's file systems all copy): refused with
EXDEV (another file system), or 0 bytes copied before the end (a file system that copies
nothing). A real I/O error is raised, not hidden by the buffer.
"""

from __future__ import annotations

import errno
import os

import pytest

from anemoi_ckpt_nb.storage.kernelcopy import RangeCopier

DATA = bytes(range(256)) * 4096  # 1 MiB


def _copy_all(copier: RangeCopier, source: int, out: int, *, positioned: bool) -> int:
    offset = 0
    while copied := copier.copy(source, out, offset, 300_000, out_offset=offset if positioned else None):
        offset += copied
    return offset


@pytest.mark.parametrize("positioned", [True, False])
@pytest.mark.parametrize("kernel", ["copies", "refuses", "copies nothing"])
def test_every_byte_is_copied_whatever_the_kernel_does(tmp_path, monkeypatch, kernel, positioned):
    (tmp_path / "src").write_bytes(DATA)
    calls = []
    real = os.copy_file_range

    def declining(source, out, count, offset_src=None, offset_dst=None):
        calls.append(offset_src)
        if kernel == "refuses":
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return 0

    if kernel != "copies":
        monkeypatch.setattr(os, "copy_file_range", declining)
    copier = RangeCopier(64 * 1024)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        assert _copy_all(copier, src.fileno(), dst.fileno(), positioned=positioned) == len(DATA)
    assert (tmp_path / "dst").read_bytes() == DATA
    if kernel == "copies":
        assert os.copy_file_range is real
    else:
        assert calls == [0] and not copier.in_kernel  # declined once, then not asked again


def test_a_source_that_ends_gives_0(tmp_path):
    (tmp_path / "src").write_bytes(DATA[:1000])
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        copier = RangeCopier(4096)
        assert copier.copy(src.fileno(), dst.fileno(), 1000, 500) == 0
        copier.in_kernel = False
        assert copier.copy(src.fileno(), dst.fileno(), 1000, 500) == 0


def test_a_real_error_is_raised(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "copy_file_range", broken)
    (tmp_path / "src").write_bytes(DATA)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst, pytest.raises(OSError) as raised:
        RangeCopier(4096).copy(src.fileno(), dst.fileno(), 0, 100)
    assert raised.value.errno == errno.EIO
