"""``anemoi-ckpt validate PATH|ID [--json] [--strict]``: can this checkpoint be converted and run here?"""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue

#: Statuses besides those every command returns (listed in the command reference).
EXIT_STATUS = {
    0: "compatible",
    1: "compatible with warnings (older metadata layout, pending migrations; with --environment also a "
    "package missing here or newer than in training)",
    2: "incompatible (unreadable file, no metadata, missing keys; with --environment also an installed "
    "package older than in training), with --strict also on warnings; or an error explained on stderr",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a checkpoint's format, metadata version and environment; exit 0/1/2",
        description="Report the format and metadata version of a checkpoint, the migrations that would run, "
        "unknown or missing keys, classes that could not be mapped, and how the installed packages compare "
        "with the training ones. Exit 0 compatible, 1 compatible with warnings, 2 incompatible: the file's "
        "verdict; findings about this environment (packages, Python) are shown apart and count with --environment. "
        "A registered checkpoint (ID) is checked from the catalogue's copy of its metadata.",
    )
    parser.add_argument("target", metavar="PATH|ID", help="a checkpoint file, or the uuid or name of a registered one")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--strict", action="store_true", help="treat warnings as incompatible (exit 2)")
    parser.add_argument("--environment", action="store_true",
                        help="count the findings about this environment (packages missing, older or newer than in "
                        "training; another Python) in the verdict and exit status, not only the file's")
    parser.add_argument("--all-packages", action="store_true", help="compare every recorded package, not only anemoi ones")
    add_catalogue_option(parser)


def run(args: argparse.Namespace) -> int:
    import json

    from anemoi_ckpt_nb.compat.validate import looks_like_path, render_text, validate_checkpoint

    if looks_like_path(args.target):
        report = validate_checkpoint(args.target, all_packages=args.all_packages)
    else:
        report = open_catalogue(args).get(args.target).validate(all_packages=args.all_packages)
    if args.json:
        print(json.dumps(report.to_dict(strict=args.strict, environment=args.environment), indent=2))
    else:
        print(render_text(report, strict=args.strict, environment=args.environment))
    return report.exit_code(strict=args.strict, environment=args.environment)
