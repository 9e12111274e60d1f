"""Turn exceptions into one line on stderr and an exit status."""

from __future__ import annotations

import os
import sys

from anemoi_ckpt_nb.errors import CkptError, describe_error

#: Exit status for an error we raised on purpose, and for anything else.
EXIT_ERROR = 2
EXIT_BUG = 3


def describe(error: BaseException) -> str:
    """One sentence for a user: our typed errors as they are, others with their type."""
    return describe_error(error)


def report(error: BaseException) -> int:
    """Print ``error`` as one line; with ANEMOI_CKPT_DEBUG=1 re-raise for the traceback."""
    if os.environ.get("ANEMOI_CKPT_DEBUG"):
        raise error
    from anemoi_ckpt_nb.cli._terminal import printable

    # Fully escaped, carriage returns too: the message quotes names from files and catalogues.
    print(f"anemoi-ckpt: error: {printable(describe(error), keep='')}", file=sys.stderr)
    return EXIT_ERROR if isinstance(error, (CkptError, OSError)) else EXIT_BUG
