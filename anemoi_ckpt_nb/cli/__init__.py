"""The faces that parse and print: the ``anemoi-ckpt`` command and the ``%ckpt`` magics (:mod:`.magics`). No logic lives here.

May import: everything below (``api``, ``notebook``, the decision packages); nothing imports it but ``__main__``.

Each subcommand is a small module of this package with two functions:
``add_parser(subparsers)`` and ``run(args) -> int``. Modules are imported
only when their command runs, except for building ``--help``, so that
``anemoi-ckpt --help`` stays fast and imports no torch, boto3 or pandas.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from anemoi_ckpt_nb._version import __version__

#: Subcommand name -> module under anemoi_ckpt_nb.cli (one line per command).
COMMANDS: dict[str, str] = {
    "info": "info_cmd",
    "inspect": "inspect_cmd",
    "convert": "convert_cmd",
    "prefetch": "prefetch_cmd",
    "plan": "plan_cmd",
    "fork": "fork_cmd",
    "resume": "resume_cmd",
    "verify-cache": "verify_cache_cmd",
    "init": "init_cmd",
    "register": "register_cmd",
    "sync": "sync_cmd",
    "ls": "ls_cmd",
    "show": "show_cmd",
    "tag": "tag_cmd",
    "download": "download_cmd",
    "lineage": "lineage_cmd",
    "clean": "clean_cmd",
    "demo": "demo_cmd",
    "validate": "validate_cmd",
    "upgrade": "upgrade_cmd",
    "site": "site_cmd",
    "replicate": "replicate_cmd",
    "locations": "locations_cmd",
    "reindex": "reindex_cmd",
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter, asking for the terminal's width only when help is formatted.

    argparse makes a formatter for every ``add_argument`` (to check its metavar), and the stock
    one asks ``shutil`` for the width: importing shutil, with bz2 and lzma, was about 2 ms of
    every command's start (issue 16). Formatting is deferred until :meth:`format_help`, where the
    width is set as ``HelpFormatter.__init__`` sets it when given none.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, width=80 if width is None else width)
        self._measure = (indent_increment, max_help_position) if width is None else None

    def format_help(self) -> str:
        if self._measure is not None:
            import shutil

            indent_increment, max_help_position = self._measure
            self._width = shutil.get_terminal_size().columns - 2
            self._max_help_position = min(max_help_position, max(self._width - 20, indent_increment * 2))
        return super().format_help()


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with :class:`_HelpFormatter` by default (the subcommands' parsers are of its type)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` the parser of that one command (what running it needs:
    the other 23 commands' modules are not imported, a tenth of ``inspect``'s start-up)."""
    parser = _Parser(
        prog="anemoi-ckpt",
        description="Manage Anemoi training checkpoints: inspect, convert, catalogue, lineage, fork and resume.",
    )
    parser.add_argument("--version", action="version", version=f"anemoi-ckpt {__version__}")
    # Read by the catalogue commands through cli._catalogue.catalogue_url (a subcommand's own --catalogue wins).
    parser.add_argument("--catalogue", dest="global_catalogue", metavar="URL", help="catalogue URL or folder for any command")
    # prog given, as argparse would work it out: otherwise it formats the usage to find it (issue 16).
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", prog=parser.prog)
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"anemoi_ckpt_nb.cli.{module}").add_parser(subparsers)
    return parser


def _command_named(argv: list[str]) -> str | None:
    """The command ``argv`` runs, when it plainly names one (after the global ``--catalogue URL``)."""
    words = iter(argv)
    for word in words:
        if word == "--catalogue":
            next(words, None)
        elif not word.startswith("--catalogue="):
            return word if word in COMMANDS else None
    return None


#: Commands that only read and print, in a process that runs nothing else: once they are done nothing
#: they made needs its finaliser run (no temporary file, thread, child process or output file), and
#: no other code binds gettext's domains. Run by the console script, they start and end lighter.
_ONLY_READ = frozenset({"inspect"})
#: Environment set, unless the user set it, in the console script's own process before a command
#: runs: never by main([...]) or the magics, whose process goes on (a notebook's kernel would keep
#: it, and every child it starts would inherit it). ``convert``: numpy, imported for the supporting
#: arrays and the model inputs while the output's hash catches up with the copy, loads OpenBLAS,
#: which starts a thread per core that spins a while for work; on two cores that took a core from
#: the hash and doubled numpy's import (about 0.08 s). A conversion does no linear algebra.
_SCRIPT_ENVIRONMENT = {"convert": {"OPENBLAS_NUM_THREADS": "1"}}


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names (``sys.argv[1:]`` when ``None``: the ``anemoi-ckpt`` script)."""
    # The console script's process ends with the command; main([...]) is called by processes that go on.
    command = _command_named(sys.argv[1:]) if argv is None else None
    for name, value in _SCRIPT_ENVIRONMENT.get(command, {}).items():  # type: ignore[arg-type]
        os.environ.setdefault(name, value)
    lighter = command in _ONLY_READ
    if lighter:
        _untranslated_when_no_catalogue()
    try:
        try:
            status = _run(argv, frozen=lighter)
        except SystemExit:  # argparse printed --help, --version or a usage message
            sys.stdout.flush()
            raise
        # With stdout buffered (PYTHONUNBUFFERED unset, a pipe) the output leaves here, not while the
        # command printed: flush now, where a reader that went away can be handled, not at exit.
        sys.stdout.flush()
        if lighter:
            _frozen()  # the process ends: its exit need not collect
        return status
    except BrokenPipeError:
        # The reader went away (`anemoi-ckpt ls | head`): stop quietly, as other commands do;
        # stdout goes to devnull so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


def _untranslated_when_no_catalogue() -> None:
    """argparse's messages given back as they are, without gettext looking each one up, where no
    translation of them can exist.

    argparse passes every message it makes through ``gettext.gettext`` and ``ngettext``, and each
    call looks for a catalogue of the current domain in the user's languages: the first imports
    ``locale`` (for its table of aliases), each stats a file and raises an error inside gettext.
    For ``inspect`` that was 4.9 million instructions of about 190 (issue 16). gettext looks for
    catalogues only under the domain's folder (``bindtextdomain``); where that folder does not exist
    (as in most Python installs) every message comes back unchanged, which is what argparse is given
    here. Where it exists, argparse keeps gettext's functions and its translations. Only for a
    command of :data:`_ONLY_READ` run by the console script (``main()``): other code run in the
    process (tests, notebooks, the libraries other commands use) could bind another folder later.
    """
    import gettext

    if os.path.isdir(gettext.bindtextdomain(gettext.textdomain())):
        return
    argparse._ = str  # type: ignore[attr-defined]  # str(message) is the message itself
    argparse.ngettext = _ngettext_untranslated  # type: ignore[attr-defined]


def _ngettext_untranslated(singular: str, plural: str, n: int) -> str:
    """``gettext.ngettext`` without a catalogue: the singular for 1, the plural otherwise."""
    return singular if n == 1 else plural


def _frozen() -> None:
    """``gc.freeze()``: the objects alive now are never traversed by the cyclic garbage collector again.

    Only for a command of :data:`_ONLY_READ` run by the console script (``main()``), whose process
    ends with it; never in a process that goes on (``main([...])``: tests, notebooks). Called before
    the command runs, so that the collections while files are read skip the modules imported (what
    each file read makes is still collected), and after it, so that the interpreter's exit, which
    collects over every object still alive, has nothing to traverse: together 15.8 million
    instructions of ``inspect``'s 206 million (issue 16).
    """
    import gc

    gc.freeze()


def _run(argv: list[str] | None, *, frozen: bool = False) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_named(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from anemoi_ckpt_nb.cli._errors import report
    from anemoi_ckpt_nb.cli._terminal import escaped_output

    module = importlib.import_module(f"anemoi_ckpt_nb.cli.{COMMANDS[args.command]}")
    if frozen:
        _frozen()  # the modules imported: no collection while the files are read need traverse them
    try:
        with escaped_output():  # names and messages come from other people's files and catalogues
            return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("anemoi-ckpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # handled by main, with the broken pipes of the final flush
    except Exception as error:  # formatted at the edge: one line, no traceback
        return report(error)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
