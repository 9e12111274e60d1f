"""``anemoi-ckpt demo [--dir DIR]``: the catalogue in one command, on a small example project."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="make an example run, resume and fork, register, convert, tag, and show the lineage",
        description="Write a small example project (a training run, a resume and a fork), register it in a new "
        "local catalogue, convert the latest checkpoint, tag it candidate, and print the lineage tree and "
        "the catalogue listing. Takes a few seconds; nothing outside DIR is touched.",
    )
    parser.add_argument("--dir", metavar="DIR", help="folder for the example (default: a new temporary folder)")


def run(args: argparse.Namespace) -> int:
    from anemoi_ckpt_nb.cli._catalogue import entries_table
    from anemoi_ckpt_nb.demo import run_demo

    result = run_demo(args.dir, say=lambda line: print(f"- {line}"))
    print()
    print(f"lineage of {result.converted.uuid[:8]}:")
    print(result.converted.lineage_text())
    print()
    print(entries_table(result.catalogue.entries()))
    print()
    print(f"next: anemoi-ckpt --catalogue {result.folder / 'catalogue'} ls --tag candidate")
    return 0
