"""``anemoi-ckpt tag ID +T -T``: add (+T or T) and remove (-T) tags."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tag",
        help="add or remove tags: tag ID +candidate -old",
        description="Add (+TAG or TAG) and remove (-TAG) tags of a checkpoint in one atomic change; "
        "who and when is recorded. Put --catalogue before ID. A protected tag (production-ready by "
        "default; `anemoi-ckpt init --protect`) is changed only with --confirm-protected, as the "
        "notebook's tag editor asks its confirmation box to be ticked.",
    )
    add_catalogue_option(parser)
    parser.add_argument(
        "--confirm-protected", action="store_true",
        help="confirm adding or removing a protected tag (also accepted after the tags)",
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix, name or file name")
    parser.add_argument("changes", nargs=argparse.REMAINDER, metavar="+TAG|-TAG", help="tags to add or remove")


def run(args: argparse.Namespace) -> int:
    import sys

    from anemoi_ckpt_nb.errors import CatalogueError

    add, remove = [], []
    confirmed = args.confirm_protected
    for change in args.changes:
        if change == "--confirm-protected":
            confirmed = True
        elif change.startswith("--"):
            raise CatalogueError(f"option {change} after the tags", hint="put options before ID: anemoi-ckpt tag --catalogue URL ID +T")
        elif change.startswith("-"):
            remove.append(change[1:])
        else:
            add.append(change[1:] if change.startswith("+") else change)
    if not add and not remove:
        raise CatalogueError("no tag changes given", hint="e.g. `anemoi-ckpt tag ID +candidate -old`")
    catalogue = open_catalogue(args)
    checkpoint = catalogue.get(args.ref)
    def say_unchanged(changes: list[str]) -> None:
        had = [c[1:] for c in changes if c.startswith("+")]
        had_not = [c[1:] for c in changes if c.startswith("-")]
        parts = ([f"already tagged {', '.join(had)}"] if had else []) + ([f"not tagged {', '.join(had_not)}"] if had_not else [])
        print(f"anemoi-ckpt: {checkpoint.uuid[:8]} was {' and '.join(parts)}: nothing to do for those", file=sys.stderr)

    tags = catalogue.retag(checkpoint.uuid, add=add, remove=remove, on_unchanged=say_unchanged, confirm_protected=confirmed)
    print(f"{checkpoint.uuid}: tags {', '.join(tags) or '(none)'}")
    return 0
