"""``anemoi-ckpt show ID [--json]``: one checkpoint's record, tags and history."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, format_size, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show", help="show a registered checkpoint", description="Show a checkpoint's record, tags and tag history."
    )
    parser.add_argument("ref", metavar="ID", help="uuid, uuid prefix (4+ characters), name or file name")
    add_catalogue_option(parser)
    parser.add_argument("--json", action="store_true", help="print the record (with tags and history) as JSON")
    parser.add_argument("--metadata", action="store_true", help="also print the Anemoi metadata (as JSON; inside the document with --json)")


def run(args: argparse.Namespace) -> int:
    import json

    checkpoint = open_catalogue(args).get(args.ref)
    record = checkpoint.record
    history = checkpoint.tag_history()
    if args.json:
        document = record.model_dump(mode="json")
        document["tags"] = checkpoint.tags
        document["tag_history"] = [event.model_dump(mode="json") for event in history]
        document["locations"] = [loc.model_dump(mode="json") for loc in checkpoint.locations()]
        if args.metadata:
            document["metadata"] = checkpoint.metadata()
        print(json.dumps(document, indent=2))
        return 0
    lines = [
        ("uuid", record.uuid),
        ("metadata uuid", record.metadata_uuid if record.metadata_uuid != record.uuid else None),
        ("name", record.name),
        ("kind", f"{record.kind} ({record.format})"),
        ("run", record.run_id),
        ("forked from run", record.fork_run_id),
        ("epoch / step", f"{record.epoch} / {record.global_step}"),
        ("tags", ", ".join(checkpoint.tags) or "-"),
        ("file", f"{record.filename}, {format_size(record.size)}, sha256 {record.sha256}"),
        ("stored as", record.blob or f"not uploaded (at {record.source.host}:{record.source.path})"),
        ("parameters", f"{record.sizes.parameter_count:,}"),
        ("weights / optimizer", f"{format_size(record.sizes.weights_bytes)} / {format_size(record.sizes.optimizer_bytes)}"),
        ("dataset", record.dataset),
        ("metadata version", record.metadata_version),
        ("code", ", ".join(f"{k} {v}" for k, v in record.code.modules.items() if k.startswith("anemoi")) or None),
        ("saved", record.saved_at),
        ("registered", f"{record.registered_at.isoformat(timespec='seconds')} by {record.registered_by}"),
        ("registered with", _registered_with(record.registered_with)),
    ]
    for link in record.parents:
        lines.append(("parent", f"{link.relation} {link.uuid}"))
    for loc in checkpoint.locations():  # copies at sites (anemoi_ckpt_nb.sites.locations)
        verified = loc.verified_at.isoformat(timespec="seconds") if loc.verified_at else "never"
        lines.append(("location", f"{loc.site} ({loc.kind}) {loc.url}, verified {verified}" + (f", {loc.problem}" if loc.problem else "")))
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        if value:
            print(f"{key.ljust(width)}  {value}")
    for event in history:
        sign = "+" if event.action == "add" else "-"
        print(f"{'tag history'.ljust(width)}  {event.at.isoformat(timespec='seconds')} {sign}{event.tag} by {event.by}")
    if args.metadata:
        print(f"\nmetadata\n{json.dumps(checkpoint.metadata(), indent=2)}")
    return 0


def _registered_with(environment) -> str | None:
    """One line: Python, the installed anemoi and torch versions, the code checkout's commit."""
    if environment is None:
        return None  # recorded only by newer releases
    parts = [f"python {environment.python}"]
    parts += [f"{name} {version}" for name, version in environment.packages.items()
              if version and (name.startswith("anemoi") or name == "torch")]
    git = environment.git
    if git is not None:
        parts.append(f"code {git.path} @ {git.commit[:12]} ({'dirty' if git.dirty else 'clean'})")
    return ", ".join(parts)
