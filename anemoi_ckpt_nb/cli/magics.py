"""``%load_ext anemoi_ckpt_nb`` then ``%ckpt COMMAND ...``: the ``anemoi-ckpt`` command in a notebook.

A router, no logic: each subcommand is parsed by the CLI's own parser (so the
words and options are the same), then one small function calls the API. Where a
notebook can show more than text, the function returns the object, which Jupyter
displays (a checkpoint card, a table, a lineage graph); otherwise it runs the
CLI's own printing. Errors become an IPython ``UsageError``: one sentence, no
traceback (set ``ANEMOI_CKPT_DEBUG=1`` for the traceback).

``%ckpt use URL`` makes URL the kernel's default catalogue (it sets
``$ANEMOI_CKPT_CATALOGUE``, which every command and ``Catalogue()`` read).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from anemoi_ckpt_nb.cli import COMMANDS
from anemoi_ckpt_nb.cli._catalogue import catalogue_url, open_catalogue
from anemoi_ckpt_nb.cli._errors import describe
from anemoi_ckpt_nb.errors import CkptError

class _HelpShown(Exception):
    """``--help`` printed its text; nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises ``UsageError`` instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message)
        raise _HelpShown


def _cli_module(command: str) -> Any:
    return importlib.import_module(f"anemoi_ckpt_nb.cli.{COMMANDS[command]}")


def _add_use_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("use", help="make CATALOGUE_URL the default catalogue of this kernel")
    parser.add_argument("url", nargs="?", metavar="CATALOGUE_URL", help="s3://bucket/prefix, a folder or memory://name")
    parser.add_argument("--create", action="store_true", help="create the catalogue if there is none")


def _subcommand_parser(command: str) -> tuple[_Parser, argparse._SubParsersAction]:
    """A ``%ckpt`` parser that knows only ``command`` (the CLI's own parser of it, or ``use``)."""
    root = _Parser(prog="%ckpt", add_help=False)
    subparsers = root.add_subparsers(dest="command", parser_class=_Parser)
    if command == "use":
        _add_use_parser(subparsers)
    else:
        _cli_module(command).add_parser(subparsers)
    return root, subparsers


def parse(command: str, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the CLI's parser of ``command`` (``%ckpt`` as the program name).

    Raises:
        UsageError: the arguments do not fit.
    """
    root, _ = _subcommand_parser(command)
    return root.parse_args([command, *argv])


def _cli_run(args: argparse.Namespace) -> None:
    """Print as the CLI does; its exit status is in what it printed."""
    _cli_module(args.command).run(args)


# --- one small function per subcommand -----------------------------------------------


def _ls(args: argparse.Namespace) -> Any:
    if args.json:
        return _cli_run(args)  # read-only; "[]" where there is no catalogue yet
    from anemoi_ckpt_nb import settings
    from anemoi_ckpt_nb.errors import CatalogueNotFoundError

    try:
        catalogue = open_catalogue(args)  # looking creates nothing
    except CatalogueNotFoundError as error:
        if catalogue_url(args):  # a catalogue named on the line must exist
            raise
        if settings.catalogue().is_default:
            print("no catalogue configured for this kernel: `%ckpt use URL` for an existing one "
                  "(s3://bucket/prefix or a folder), `%ckpt use URL --create` for a new one, or set "
                  f"${settings.ENV_CATALOGUE}; without one the first `%ckpt register` creates {error.url}")
        else:
            print(f"nothing registered yet: {error.url} (from ${settings.ENV_CATALOGUE}) does not exist; "
                  "the first `%ckpt register` creates it, `%ckpt use URL --create` makes an empty one")
        return None
    from anemoi_ckpt_nb.notebook.html import CatalogueTable

    frame = catalogue.to_pandas(tags=args.tag, kind=args.kind, run_id=args.run, text=args.text, site=args.site)
    return CatalogueTable(frame, title=catalogue.url, protected_tags=catalogue.protected_tags)


def _show(args: argparse.Namespace) -> Any:
    if args.json:
        return _cli_run(args)
    return open_catalogue(args).get(args.ref)


def _lineage(args: argparse.Namespace) -> Any:
    if args.json:
        return _cli_run(args)
    return open_catalogue(args).get(args.ref).lineage()


def _use(args: argparse.Namespace) -> Any:
    from anemoi_ckpt_nb.api import ENV_CATALOGUE, Catalogue, default_url

    if args.url is None:
        print(f"default catalogue: {default_url()}")
        return None
    catalogue = Catalogue.create(args.url, exist_ok=True) if args.create else Catalogue(args.url)
    os.environ[ENV_CATALOGUE] = args.url
    return catalogue


#: Subcommand -> its function. register, convert, tag, fork, resume and validate print as the CLI does.
ROUTES: dict[str, Callable[[argparse.Namespace], Any]] = {
    "ls": _ls,
    "show": _show,
    "register": _cli_run,
    "convert": _cli_run,
    "tag": _cli_run,
    "lineage": _lineage,
    "fork": _cli_run,
    "resume": _cli_run,
    "validate": _cli_run,
    "use": _use,
}


def notebook_hint(text: str) -> str:
    """A message's commands as a notebook user types them: ``anemoi-ckpt ls`` -> ``%ckpt ls``;
    a command ``%ckpt`` lacks stays a shell command (``!anemoi-ckpt info``)."""

    def words(match: re.Match[str]) -> str:
        command = match.group(1)
        return f"%ckpt {command}" if command in ROUTES else f"!anemoi-ckpt {command}"

    return re.sub(r"(?<![\w!-])anemoi-ckpt ([a-z][a-z-]*)", words, text)


def help_text() -> str:
    """What ``%ckpt`` alone prints: each subcommand and its one-line help."""
    lines = ["%ckpt COMMAND [options]   (COMMAND --help for its options)", ""]
    for command in ROUTES:
        _, subparsers = _subcommand_parser(command)
        lines.append(f"  {command:<9} {subparsers._choices_actions[0].help or ''}")
    return "\n".join(lines)


@magics_class
class CkptMagics(Magics):
    """The ``%ckpt`` line magic."""

    @line_magic
    def ckpt(self, line: str) -> Any:
        """Run an ``anemoi-ckpt`` command in the notebook: ``%ckpt ls --tag candidate``.

        ``%ckpt`` alone lists the commands; ``%ckpt COMMAND --help`` shows a command's options.
        """
        try:
            argv = shlex.split(line)
        except ValueError as error:
            raise UsageError(f"%ckpt: {error}") from None
        if not argv:
            print(help_text())
            return None
        command, rest = argv[0], argv[1:]
        if command not in ROUTES:
            raise UsageError(f"%ckpt: unknown command {command!r}; use one of {', '.join(ROUTES)}")
        try:
            args = parse(command, rest)
            return ROUTES[command](args)
        except _HelpShown:
            return None
        except UsageError:
            raise
        except (CkptError, OSError, LookupError, ValueError) as error:
            if os.environ.get("ANEMOI_CKPT_DEBUG"):
                raise
            raise UsageError(notebook_hint(describe(error))) from None


def load_ipython_extension(ipython) -> None:
    """Register the ``%ckpt`` magic (``%load_ext anemoi_ckpt_nb``)."""
    ipython.register_magics(CkptMagics)
