"""``anemoi-ckpt fork ID``: start a new run from a registered checkpoint (see ``_run_start``)."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli import _run_start


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    _run_start.add_parser(subparsers, "fork")


def run(args: argparse.Namespace) -> int:
    return _run_start.run(args, "fork")
