"""The tutorials clean up after themselves: a run leaves nothing in the temporary folder.

nbval checks their outputs (``pytest notebooks``); these tests run each one again with
``TMPDIR`` pointing at a folder of the test's own, and look at that folder afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"

#: Runs a notebook with nbclient, all of it or its first N code cells, then stops the kernel.
RUN = """
import sys
import nbformat
from nbclient import NotebookClient

path, first = sys.argv[1], int(sys.argv[2])
nb = nbformat.read(path, as_version=4)
if first:
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    nb.cells = nb.cells[: code[first - 1] + 1]
NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": sys.argv[3]}}).execute()
"""


def _run(notebook: Path, tmp: Path, *, first_cells: int = 0) -> None:
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    subprocess.run([sys.executable, "-c", RUN, str(notebook), str(first_cells), str(NOTEBOOKS)],
                   env=env, check=True, timeout=900, capture_output=True)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_a_tutorial_leaves_nothing_in_the_temporary_folder(notebook, tmp_path):
    tmp = tmp_path / "tmp"
    _run(notebook, tmp)
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_a_tutorial_stopped_midway_leaves_nothing_either(tmp_path):
    """A cell that fails stops the run before the last cell: stopping the kernel removes the folder."""
    tmp = tmp_path / "tmp"
    _run(NOTEBOOKS / "01-quickstart.ipynb", tmp, first_cells=2)  # the folder is made and filled
    assert sorted(p.name for p in tmp.iterdir()) == []
