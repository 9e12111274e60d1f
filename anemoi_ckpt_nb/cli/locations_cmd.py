"""``anemoi-ckpt locations ID [--verify] [--json]``: where a checkpoint's copies are.

Also holds ``clean --drop-location SITE ID`` (wired into ``clean_cmd``).
"""

from __future__ import annotations

import argparse
import json

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, format_size, open_catalogue, short

#: Exit status when ``--verify`` found a copy missing, damaged or unreachable.
EXIT_PROBLEMS = 1
#: Statuses besides those every command returns (listed in the command reference).
EXIT_STATUS = {EXIT_PROBLEMS: "with --verify: a copy is missing, damaged or unreachable"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "locations",
        help="list the copies of a checkpoint at each site; --verify re-hashes them",
        description="List every recorded copy (site, kind, where, when verified). With --verify each copy is "
        "read as a stream and hashed; the outcome is recorded, and the exit status is 1 if a copy is missing, "
        "damaged or unreachable.",
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix, name or file name")
    parser.add_argument("--verify", action="store_true", help="re-hash every copy and record the result")
    parser.add_argument("--site", action="append", metavar="SITE", help="with --verify: only this site (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the locations as JSON")
    add_catalogue_option(parser)


def _when(moment) -> str:
    return moment.isoformat(timespec="seconds") if moment else "never"


def run(args: argparse.Namespace) -> int:
    checkpoint = open_catalogue(args).get(args.ref)
    results = checkpoint.verify_locations(sites=args.site) if args.verify else None
    locations = checkpoint.locations()
    if args.json:
        document = [loc.model_dump(mode="json") for loc in locations]
        if results is not None:
            status = {r.location.site: (r.status, r.detail) for r in results}
            for row in document:
                row["check"], row["check_detail"] = status.get(row["site"], (None, None))
        print(json.dumps(document, indent=2))
    else:
        print(f"{checkpoint.uuid}  {checkpoint.filename}  {format_size(checkpoint.size)}  sha256 {checkpoint.sha256}")
        if not locations:
            print("  no copy recorded anywhere")
        for loc in locations:
            state = "ok" if loc.ok else (loc.problem or "not verified")
            print(f"  {loc.site}  {loc.kind}  {loc.url}  verified {_when(loc.verified_at)}  {state}")
        for result in results or ():
            word = "ok" if result.ok else result.status.upper()
            print(f"verify {result.location.site}: {word}: {result.detail}")
    if results is not None and not all(r.ok for r in results):
        return EXIT_PROBLEMS
    return 0


# --- clean --drop-location SITE ID [ID ...] --------------------------------------------------------


def add_drop_options(parser: argparse.ArgumentParser) -> None:
    """The options ``clean`` gets for dropping one copy instead of whole checkpoints."""
    parser.add_argument(
        "--drop-location", metavar="SITE",
        help="instead of removing checkpoints, delete their copy at SITE (the IDs given), only while another "
        "verified copy remains and is confirmed present; the record and other copies stay",
    )
    parser.add_argument("--no-check", action="store_true", help="with --drop-location: do not confirm the other copy is present now")
    parser.add_argument("drop_refs", nargs="*", metavar="ID", help="with --drop-location: the checkpoints")


def run_drop(args: argparse.Namespace) -> int:
    """``clean --drop-location SITE ID ...``: a dry run unless ``--apply``."""
    from anemoi_ckpt_nb.errors import CatalogueError

    if not args.drop_location:
        raise CatalogueError(
            f"clean takes checkpoint IDs only with --drop-location ({' '.join(args.drop_refs)})",
            hint="anemoi-ckpt clean --drop-location SITE ID --apply; to remove whole checkpoints use --keep-last/--older-than",
        )
    if not args.drop_refs:
        raise CatalogueError("--drop-location needs the checkpoints whose copy to drop", hint="anemoi-ckpt clean --drop-location SITE ID [ID ...] --apply")
    catalogue = open_catalogue(args)
    for ref in args.drop_refs:
        checkpoint = catalogue.get(ref)
        result = checkpoint.drop_location(args.drop_location, dry_run=not args.apply, check=not args.no_check)
        kept = ", ".join(loc.site for loc in result.remaining)
        verb = "dropped" if result.applied else "would drop"
        print(f"{verb}: {short(checkpoint.uuid)} copy at {result.site} ({result.location.url}); verified copies remain at {kept}")
        if result.leftover:
            print(f"warning: {result.leftover}")
    if not args.apply:
        print("run again with --apply to delete")
    return 0
