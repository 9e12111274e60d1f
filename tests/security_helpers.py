"""Helpers of the issue-18 security tests (tests/test_security_*.py): public entry points only."""

from __future__ import annotations

from pathlib import Path

from anemoi_ckpt_nb import Catalogue, examples
from anemoi_ckpt_nb.cli import main as cli_main


def catalogue_with_one_checkpoint(
    url: str | Path, run: Path, *, weights_bytes: int = 20_000
) -> tuple[Catalogue, examples.ExampleCheckpoint]:
    """A new catalogue at ``url`` (a folder or ``s3://``) with ``run/a.ckpt`` registered in it."""
    catalogue = Catalogue.create(url)
    ck = examples.write_training_checkpoint(run / "a.ckpt", weights_bytes=weights_bytes)
    catalogue.register(ck.path)
    return catalogue, ck


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``anemoi-ckpt ARGS`` in this process: ``(exit status, stdout, stderr)``."""
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def is_ckpt_error(error: BaseException) -> bool:
    """Our typed errors (exit 2 at the CLI), whatever module they live in."""
    return any(cls.__name__ == "CkptError" for cls in type(error).__mro__)
