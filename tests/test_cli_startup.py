"""What ``anemoi-ckpt inspect`` imports to start: its own command, the reader, and nothing heavy (issue 16).

Start-up is most of what ``inspect`` costs on a small file: the modules of the other 23
commands (imported only to build ``--help``), the old-path finder's ``importlib.abc``
(which imports ``importlib.resources``, ``tempfile`` and ``random``) and the heavy libraries
are kept off its path. The test runs the command in a fresh interpreter and lists
``sys.modules`` at its end.
"""

from __future__ import annotations

import os
import subprocess
import sys

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.cli import COMMANDS, build_parser
from test_arrayrefs import RUNNER
from test_arrayrefs import _modules_imported_by as _modules

#: Never on the path of inspect: the heavy libraries, and what only other commands need.
HEAVY = {"torch", "numpy", "safetensors", "pydantic", "pandas", "boto3", "botocore", "ipywidgets", "graphviz", "IPython"}
NOT_NEEDED = {"tempfile", "random", "importlib.resources", "importlib.abc", "shlex"}


def test_inspect_imports_its_command_the_reader_and_nothing_heavy(tmp_path):
    source = examples.write_training_checkpoint(tmp_path / "train.ckpt", weights_bytes=100_000)
    for args in (["inspect", "--json", source.path], ["--catalogue", tmp_path / "nowhere", "inspect", source.path]):
        modules, stdout = _modules(tmp_path, *args)
        assert source.uuid in stdout
        assert not {name.split(".")[0] for name in modules} & HEAVY, sorted(modules)
        assert not modules & NOT_NEEDED, sorted(modules & NOT_NEEDED)
        commands = {name for name in modules if name.startswith("anemoi_ckpt_nb.cli.") and name.endswith("_cmd")}
        assert commands == {"anemoi_ckpt_nb.cli.inspect_cmd"}
        ours = {name.split(".")[1] for name in modules if name.startswith("anemoi_ckpt_nb.")}
        assert ours <= {"_moved", "_version", "cli", "errors", "read"}, sorted(ours)


def test_help_still_lists_every_command():
    done = subprocess.run([sys.executable, "-c", "from anemoi_ckpt_nb.cli import main; main(['--help'])"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and all(name in done.stdout for name in COMMANDS)
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)


def test_a_command_not_known_is_told_with_every_choice(tmp_path):
    done = subprocess.run([sys.executable, "-c", RUNNER, "inpsect", "x"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MODULES_OUT=str(tmp_path / "m.json")))
    assert done.returncode == 2 and "invalid choice: 'inpsect'" in done.stderr and "'register'" in done.stderr
