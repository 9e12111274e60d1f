"""What the command prints never carries control characters from files or catalogues.

A run id, file name, tag or error message comes from other people's checkpoints and
catalogues; printed raw, an escape sequence in it can retitle the window, clear the screen,
rewrite earlier lines or hide text (docs/threat-model.md). :func:`escaped_output` wraps
standard output and error for the duration of a command, so every printer of the CLI goes
through :func:`printable` without having to remember it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

TYPE_CHECKING = False  # typing's flag without importing typing, which inspect does not need (issue 16)
if TYPE_CHECKING:
    from typing import Any, TextIO

# C0 controls (tab and newline are kept by the caller's choice), DEL, C1 controls (0x9b is an
# 8-bit CSI), and the Unicode bidirectional overrides that reorder what is shown.
_CONTROLS = (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
# A str.translate table, not a regular expression: compiling that one took 0.9 ms of every
# command's start (issue 16).
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROLS}
_TABLES: dict[str, dict[int, str]] = {}


def printable(text: str, *, keep: str = "\n\t") -> str:
    """``text`` with every control character except those in ``keep`` shown as ``\\xNN``."""
    table = _TABLES.get(keep)
    if table is None:
        table = _TABLES[keep] = {code: escape for code, escape in _ESCAPES.items() if chr(code) not in keep}
    return text.translate(table)


class EscapingWriter:
    """A text stream that passes everything written through :func:`printable`."""

    def __init__(self, stream: TextIO, *, keep: str) -> None:
        self._stream = stream
        self._keep = keep

    def write(self, text: str) -> int:
        self._stream.write(printable(text, keep=self._keep))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer...
        return getattr(self._stream, name)


@contextlib.contextmanager
def escaped_output() -> Iterator[None]:
    """Escape control characters on stdout (keeping newlines and tabs) and stderr (also keeping
    carriage returns, which progress bars redraw with) until the block ends."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = EscapingWriter(stdout, keep="\n\t")  # type: ignore[assignment]
    sys.stderr = EscapingWriter(stderr, keep="\n\t\r")  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
