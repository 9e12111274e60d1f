"""Byte sizes read the same everywhere: decimal SI units ("kB" = 1000 bytes), from one helper."""

from __future__ import annotations

import pytest

from anemoi_ckpt_nb.cli._catalogue import format_size
from anemoi_ckpt_nb.catalogue import schema
from anemoi_ckpt_nb.read.summary import format_bytes
from anemoi_ckpt_nb.notebook import html, text
from anemoi_ckpt_nb.storage.progress import progress_bar


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (999, "999 B"), (1500, "1.5 kB"), (2_500_000, "2.5 MB"), (3_200_000_000, "3.2 GB")],
)
def test_cli_and_notebook_show_a_size_alike(size, shown):
    assert format_bytes(size) == shown
    assert format_size(size) == shown  # CLI tables, show, clean, locations
    assert text.format_bytes(size) == shown  # notebook text and HTML
    assert text.cell_text("size", size) == shown  # notebook tables


def test_a_notebook_card_shows_kilobytes_as_the_cli_does():
    entry = schema.IndexEntry(
        uuid="u-1", kind="training", sha256="ab" * 32, size=1500, filename="x.ckpt",
        registered_at="2025-05-02T08:30:00+00:00", registered_by="alice@h",
    )
    card = html.checkpoint_card(entry)
    assert format_size(1500) in card and "1.5 kB" in card
    assert "KB" not in card and "KiB" not in card


def test_a_transfer_progress_bar_counts_in_units_of_1000(capsys):
    with progress_bar(2_000_000, initial=1_500_000, disable=False, desc="copy") as update:
        update(100_000)
    shown = capsys.readouterr().err
    # 2,000,000 bytes are 2.00 MB (not 1.91 "MB" of 1024 x 1024 bytes), as format_bytes says.
    assert "1.50M/2.00M" in shown
    assert format_bytes(2_000_000) == "2.0 MB"
