"""What ``anemoi-ckpt inspect`` imports to start: its own command, the reader, and nothing heavy (issue 16).

Start-up is most of what ``inspect`` costs on a small file: the modules of the other 23
commands (imported only to build ``--help``), the old-path finder's ``importlib.abc``
(which imports ``importlib.resources``, ``tempfile`` and ``random``), ``dataclasses`` (with
``inspect``, ``ast`` and ``dis``), the allow-list's ``decimal``, ``fractions``, ``uuid`` and
``datetime`` (imported when a pickle names them) and the heavy libraries are kept off its path. The test runs the command in a fresh interpreter and lists
``sys.modules`` at its end.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.cli import COMMANDS, build_parser
from test_arrayrefs import RUNNER
from test_arrayrefs import _modules_imported_by as _modules

#: Never on the path of inspect: the heavy libraries, and what only other commands need.
HEAVY = {"torch", "numpy", "safetensors", "pydantic", "pandas", "boto3", "botocore", "ipywidgets", "graphviz", "IPython"}
NOT_NEEDED = {"tempfile", "random", "importlib.resources", "importlib.abc", "shlex",
              # dataclasses brings inspect, ast, dis and tokenize: the reader's records are plain classes.
              "dataclasses", "inspect", "ast", "dis", "tokenize",
              # The allow-list's standard data types are imported when a pickle names them (uuid brings platform).
              "decimal", "fractions", "uuid", "datetime", "platform",
              # The reader imports typing's names for the type checker only.
              "typing",
              # torch.save's archives are read by read.zipdir; argparse's formatter asks shutil for the
              # terminal's width only to format help; the reader's lock is _thread's. zipfile brought
              # shutil, bz2, lzma, threading and encodings.cp437, shutil bz2 and lzma again.
              "zipfile", "shutil", "bz2", "lzma", "threading", "encodings.cp437",
              # safetensors files are read by a module of their own.
              "anemoi_ckpt_nb.read.safetensors_file"}
#: Not imported by the console script where no translation of argparse's messages can exist
#: (gettext imports locale, for its aliases, on the first message it looks up).
NOT_NEEDED_BY_THE_SCRIPT = {"locale"}


def _started_by_python() -> set[str]:
    """What ``python -c pass`` has imported here (``site`` and ``.pth`` files may import some of the above)."""
    code = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_inspect_imports_its_command_the_reader_and_nothing_heavy(tmp_path):
    source = examples.write_training_checkpoint(tmp_path / "train.ckpt", weights_bytes=100_000)
    not_needed = NOT_NEEDED - _started_by_python()
    for args in (["inspect", "--json", source.path], ["--catalogue", tmp_path / "nowhere", "inspect", source.path]):
        modules, stdout = _modules(tmp_path, *args)
        assert source.uuid in stdout
        assert not {name.split(".")[0] for name in modules} & HEAVY, sorted(modules)
        assert not modules & not_needed, sorted(modules & not_needed)
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


#: In a fresh interpreter: a pickle naming the allow-list's standard data types imports them and gets them,
#: and the refusals that guard them (numbers that take minutes to make) hold before anything imported them.
LAZY_TYPES = r"""
import pickle, struct, sys
from anemoi_ckpt_nb.read.torchpickle import loads
from anemoi_ckpt_nb.errors import CorruptCheckpointError
lazy = ("decimal", "fractions", "uuid", "datetime")
assert not set(lazy) & set(sys.modules), sorted(set(lazy) & set(sys.modules))

def refused(data):
    try:
        loads(data)
    except CorruptCheckpointError as error:
        return "digits is refused" in str(error)
    return False

def call(module, name, arg):
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + arg + b"\x85R."

text = lambda s: b"X" + struct.pack("<I", len(s)) + s.encode()
assert refused(call("fractions", "Fraction", text("1e100000"))), "Fraction(1e100000)"
assert refused(b"\x80\x02cbuiltins\nint\n" + call("decimal", "Decimal", text("1e100000"))[2:-1] + b"\x85R.")
import datetime, decimal, fractions, uuid
value = {"d": decimal.Decimal("1.5"), "f": fractions.Fraction(3, 4), "u": uuid.UUID(int=7),
         "t": datetime.timedelta(hours=6), "w": datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)}
assert loads(pickle.dumps(value, protocol=2)) == value
print("ok")
"""


def test_the_standard_data_types_are_imported_when_a_pickle_names_them():
    done = subprocess.run([sys.executable, "-c", LAZY_TYPES], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


#: The console script's way in: ``main()`` reads ``sys.argv``; ``main(argv)`` is a caller's that goes on.
CONSOLE = r"""
import gc, json, os, sys
from anemoi_ckpt_nb.cli import main
if os.environ["ARGV"] == "script":
    sys.argv = ["anemoi-ckpt", *sys.argv[1:]]
    status = main()
else:
    status = main(sys.argv[1:])
with open(os.environ["MODULES_OUT"], "w") as out:
    json.dump({"modules": sorted(sys.modules), "frozen": gc.get_freeze_count()}, out)
sys.exit(status)
"""


def _console(tmp_path, *args, argv: str = "script", env: dict | None = None) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / "console.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ if env is None else env, MODULES_OUT=str(out), ARGV=argv)
    done = subprocess.run([sys.executable, "-c", CONSOLE, *map(str, args)], capture_output=True, text=True, timeout=120, env=env)
    return (json.loads(out.read_text()) if out.exists() else {}), done  # none after a usage error (SystemExit)


def test_the_script_asks_gettext_nothing_without_catalogues_and_its_exit_collects_nothing(tmp_path):
    """The console script's ``inspect``: no ``locale`` (no catalogue folder here), everything frozen out of
    the exit's collection; a caller's ``main([...])`` and the other commands keep both as they were."""
    import gettext

    assert not os.path.isdir(gettext.bindtextdomain(gettext.textdomain())), "this Python has catalogues: the test needs none"
    source = examples.write_training_checkpoint(tmp_path / "train.ckpt", weights_bytes=100_000)
    not_needed = NOT_NEEDED_BY_THE_SCRIPT - _started_by_python()
    state, done = _console(tmp_path, "inspect", "--json", source.path)
    assert done.returncode == 0 and source.uuid in done.stdout, done.stderr
    assert not set(state["modules"]) & not_needed, sorted(set(state["modules"]) & not_needed)
    assert state["frozen"] > 0
    state, done = _console(tmp_path, "inspect", "--json", source.path, argv="list")
    assert done.returncode == 0 and source.uuid in done.stdout and state["frozen"] == 0, done.stderr
    state, done = _console(tmp_path, "--catalogue", tmp_path / "nowhere", "ls", "--json")
    assert state["frozen"] == 0, done.stderr
    state, done = _console(tmp_path, "inspect", "--jsn", source.path)  # argparse's own message, untranslated
    assert done.returncode == 2 and "error: unrecognized arguments: --jsn" in done.stderr, done.stderr


def _catalogue(messages: dict[str, str]) -> bytes:
    """A GNU gettext catalogue (``.mo``) of ``messages``, as msgfmt writes it (no hash table)."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(entries)
    originals = b"".join(key.encode() + b"\0" for key in keys)
    translations = b"".join(entries[key].encode() + b"\0" for key in keys)
    at = 28 + 16 * len(keys)
    table = []
    for strings in ([key.encode() for key in keys], [entries[key].encode() for key in keys]):
        for text in strings:
            table += [len(text), at]
            at += len(text) + 1
    head = struct.pack("<7I", 0x950412DE, 0, len(keys), 28, 28 + 8 * len(keys), 0, 0)
    return head + struct.pack(f"<{len(table)}I", *table) + originals + translations


def test_argparse_messages_are_still_translated_where_a_catalogue_exists(tmp_path):
    """Where the domain's folder exists, the script leaves argparse's gettext alone: its catalogue is used."""
    folder = tmp_path / "locale"
    (folder / "xx" / "LC_MESSAGES").mkdir(parents=True)
    (folder / "xx" / "LC_MESSAGES" / "messages.mo").write_bytes(_catalogue({"unrecognized arguments: %s": "argumenta ignota: %s"}))
    code = CONSOLE.replace("from anemoi_ckpt_nb.cli import main", f"import gettext; gettext.bindtextdomain('messages', {str(folder)!r})\nfrom anemoi_ckpt_nb.cli import main")
    env = dict(os.environ, LANGUAGE="xx", MODULES_OUT=str(tmp_path / "out.json"), ARGV="script")
    done = subprocess.run([sys.executable, "-c", code, "inspect", "--jsn", "x"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "argumenta ignota: --jsn" in done.stderr, done.stderr
