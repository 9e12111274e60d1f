"""``anemoi-ckpt info [--json]``: where things are, where each setting came from, and what the spool holds."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, catalogue_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show the catalogue, cache, site, offline mode and spool in effect, and where each came from",
        description="Print the catalogue, the checkpoint cache, this machine's site and offline mode that "
        "commands use, and the training callback's spool, each with where it came from: an option, the "
        "environment (ANEMOI_CKPT_*), or the default; for a spool, what it holds: checkpoints captured and "
        "not registered yet (how many, their bytes, the oldest), failed ones and orphans. Nothing is created "
        "and nothing touches the network.",
    )
    add_catalogue_option(parser)
    parser.add_argument("--cache", metavar="DIR", help="a cache folder, as prefetch, fork and resume take it")
    parser.add_argument("--spool", metavar="DIR", help="a spool folder, as sync takes it (default: $ANEMOI_CKPT_SPOOL)")
    parser.add_argument("--json", action="store_true", help="print the settings as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from anemoi_ckpt_nb import __version__, settings

    catalogue = settings.catalogue(catalogue_url(args))
    cache = settings.cache(args.cache)
    site, offline = settings.site(), settings.offline()
    exists = settings.local_catalogue_exists(catalogue.value)
    spool = settings.spool(args.spool)
    held, problem = _spool_summary(spool.value)
    if args.json:
        document = {
            "catalogue": {"value": catalogue.value, "source": catalogue.source, "exists": exists},
            "cache": {"value": str(cache.value), "source": cache.source},
            "site": {"value": site.value, "source": site.source},
            "offline": {"value": offline.value, "source": offline.source},
            "spool": {"value": None if spool.value is None else str(spool.value), "source": spool.source,
                      **({"exists": held is not None} if spool.value is not None else {}),
                      **({"problem": problem} if problem else {}),
                      **({k: v for k, v in vars(held).items() if k != "path"} if held is not None else {})},
            "version": __version__,
        }
        print(json.dumps(document, indent=2))
        return 0
    state = {True: "", False: "; not created yet: the first register creates it" if catalogue.is_default
             else "; no catalogue there yet: create it with `anemoi-ckpt init`", None: ""}[exists]
    rows = [
        ("catalogue", catalogue.value, catalogue.source + state),
        ("cache", str(cache.value), cache.source),
        ("site", site.value or "none", site.source if site.value else f"default; set {settings.ENV_SITE} to name it"),
        ("offline", "yes" if offline.value else "no", offline.source),
        ("spool", str(spool.value or "none"), _spool_state(spool, held, problem)),
        ("version", f"anemoi-ckpt-nb {__version__}", "installed"),
    ]
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name.ljust(width)}  {value}  ({source})")
    return 0


def _spool_summary(path: str | None):
    """The spool's :class:`~anemoi_ckpt_nb.runs.spool.SpoolSummary` (None if there is none) and why not."""
    from anemoi_ckpt_nb.errors import SpoolError
    from anemoi_ckpt_nb.runs.spool import Spool

    if path is None:
        return None, None
    try:
        spool = Spool.open_if_exists(path)
        return (None if spool is None else spool.summary()), None
    except SpoolError as error:
        return None, str(error)


def _spool_state(spool, held, problem) -> str:
    from anemoi_ckpt_nb import settings
    from anemoi_ckpt_nb.cli._catalogue import format_size

    if spool.value is None:
        return (f"default; the training callback puts it beside the run's checkpoint/ folder; "
                f"set {settings.ENV_SPOOL} or pass --spool to see one")
    if problem:
        return f"{spool.source}; {problem}"
    if held is None:
        return f"{spool.source}; no spool there yet: the training callback creates it"
    if held.pending:
        state = (f"{held.pending} pending ({format_size(held.pending_bytes)}), oldest captured {held.oldest_pending}"
                 + (f", {held.failed} failed" if held.failed else ""))
    else:
        state = "nothing pending"
    state += f", {held.done} registered"
    if held.orphans:
        state += f", {held.orphans} orphan(s) ({format_size(held.orphan_bytes)})"
    if held.pending or held.orphans:
        state += f": run `anemoi-ckpt sync {spool.value}` where the catalogue can be reached"
    return f"{spool.source}; {state}"
