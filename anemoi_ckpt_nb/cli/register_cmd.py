"""``anemoi-ckpt register PATH... [--tag T] [--name N] [--run-folder] [--code-checkout DIR]``."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register checkpoint files (or whole run folders) in the catalogue",
        description="Upload checkpoints to the catalogue and record them with their lineage. Parents "
        "must be registered first or given in the same command (they are registered first). "
        "Registering the same file again changes nothing.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files, or run folders with --run-folder")
    add_catalogue_option(parser)
    parser.add_argument("--tag", action="append", default=[], metavar="TAG", help="tag to add (repeatable)")
    parser.add_argument("--name", metavar="NAME", help="a name for the checkpoint (a single file only)")
    parser.add_argument(
        "--run-folder", action="store_true", help="PATHs are run folders: register every checkpoint in them, in lineage order"
    )
    parser.add_argument("--no-upload", action="store_true", help="record only; leave the file where it is")
    parser.add_argument(
        "--allow-missing-parents", action="store_true", help="register even if a parent is not in the catalogue"
    )
    parser.add_argument(
        "--code-checkout", "--code-path", dest="code_checkout", metavar="DIR",
        help="git checkout of the training code: its commit and dirty state are recorded with the Python "
        "and package versions of this environment (always recorded)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anemoi_ckpt_nb.api import checkpoint_line
    from anemoi_ckpt_nb.errors import CatalogueError

    catalogue = open_catalogue(args, creates_default=True)
    options = dict(
        tags=args.tag,
        upload=not args.no_upload,
        allow_missing_parents=args.allow_missing_parents,
        code_checkout=args.code_checkout,
        progress=True,  # a byte bar on stderr when it is a terminal; nothing in batch logs
    )

    def show(registration) -> None:
        verb = "registered" if registration.created else "already registered"
        print(f"{verb}: {checkpoint_line(registration.record)}")

    if args.run_folder:
        catalogue.register_run(args.paths, on_registered=show, **options)
    elif args.name:
        if len(args.paths) != 1:
            raise CatalogueError("--name names a single checkpoint", hint="register the files one by one")
        catalogue.register(args.paths[0], name=args.name, on_registered=show, **options)
    else:
        folders = [p for p in args.paths if Path(p).is_dir()]
        if folders:
            raise CatalogueError(f"{folders[0]} is a folder", hint=f"use `anemoi-ckpt register --run-folder {folders[0]}`")
        catalogue.register_many(args.paths, on_registered=show, **options)
    return 0
