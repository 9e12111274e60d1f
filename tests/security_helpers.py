"""Helpers of the issue-18 security tests (tests/test_security_*.py): public entry points only."""

from __future__ import annotations

from anemoi_ckpt_nb.cli import main as cli_main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``anemoi-ckpt ARGS`` in this process: ``(exit status, stdout, stderr)``."""
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def is_ckpt_error(error: BaseException) -> bool:
    """Our typed errors (exit 2 at the CLI), whatever module they live in."""
    return any(cls.__name__ == "CkptError" for cls in type(error).__mro__)
