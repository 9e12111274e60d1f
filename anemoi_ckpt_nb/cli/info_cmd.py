"""``anemoi-ckpt info [--json]``: where things are, and where each setting came from."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, catalogue_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show the catalogue, cache, site and offline mode in effect, and where each came from",
        description="Print the catalogue, the checkpoint cache, this machine's site and offline mode that "
        "commands use, each with where it came from: an option, the environment (ANEMOI_CKPT_*), or the "
        "default. Nothing is created and nothing touches the network.",
    )
    add_catalogue_option(parser)
    parser.add_argument("--cache", metavar="DIR", help="a cache folder, as prefetch, fork and resume take it")
    parser.add_argument("--json", action="store_true", help="print the settings as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from anemoi_ckpt_nb import __version__, settings

    catalogue = settings.catalogue(catalogue_url(args))
    cache = settings.cache(args.cache)
    site, offline = settings.site(), settings.offline()
    exists = settings.local_catalogue_exists(catalogue.value)
    if args.json:
        document = {
            "catalogue": {"value": catalogue.value, "source": catalogue.source, "exists": exists},
            "cache": {"value": str(cache.value), "source": cache.source},
            "site": {"value": site.value, "source": site.source},
            "offline": {"value": offline.value, "source": offline.source},
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
        ("version", f"anemoi-ckpt-nb {__version__}", "installed"),
    ]
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name.ljust(width)}  {value}  ({source})")
    return 0
