"""Options and printing shared by ``fork``, ``resume``, ``plan``, ``prefetch`` and ``verify-cache``.

The catalogue is opened with :func:`anemoi_ckpt_nb.cli._catalogue.open_catalogue`, as by every other
command, so that ``anemoi-ckpt --catalogue URL fork ...`` works the same as ``fork ... --catalogue URL``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option


def add_cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="cache folder on a file system the compute nodes see "
        "(default: $ANEMOI_CKPT_CACHE or ~/.cache/anemoi-ckpt-nb/checkpoints)",
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of a fork or resume plan."""
    add_catalogue_option(parser)
    add_cache_option(parser)
    add = parser.add_argument
    add("--code-path", metavar="DIR",
        help="git checkout of the training code: its commit and dirty state are recorded and checked")
    add("--allow-drift", action="store_true",
        help="go ahead despite code-version differences that matter; the manifest records them")
    add("--require-clean", action="store_true", default=None,
        help="refuse when --code-path has uncommitted changes (default: the catalogue's policy)")
    add("--layout", choices=("system", "hardware"),
        help="anemoi-training config layout: system (>= 0.8) or hardware (< 0.8); "
        "default from the installed anemoi-training")
    add("--checkpoints-dir", metavar="DIR",
        help="hardware layout only: hardware.paths.checkpoints, where the cached file is linked")
    add("--run-id", metavar="ID", help="fork only: the new run id (default: a fresh uuid)")
    add("--full-state", action="store_true",
        help="fork only: load optimizer and scheduler state too (training.load_weights_only=false)")


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for :func:`anemoi_ckpt_nb.runs.plans.plan_run` from the parsed options."""
    options: dict[str, Any] = {
        "code_path": args.code_path,
        "allow_drift": args.allow_drift,
        "layout": args.layout,
        "checkpoints_dir": args.checkpoints_dir,
        "run_id": args.run_id,
    }
    if args.full_state:
        options["load_weights_only"] = False
    return options


def progress_bar(total: int, *, label: str, show: bool = True):
    """A byte bar on stderr, only when it is a terminal (batch logs stay clean).

    Returns:
        A context manager yielding the progress callback (see :func:`anemoi_ckpt_nb.storage.progress.progress_bar`).
    """
    from anemoi_ckpt_nb.storage.progress import progress_bar as byte_bar

    return byte_bar(total, desc=label, disable=not (show and sys.stderr.isatty()))


def print_differences(differences) -> None:
    """Differences on stderr (stdout keeps what scripts read); packages not installed on one line."""
    missing = [d.name for d in differences if d.what == "package" and d.environment is None]
    for d in differences:
        if d.what == "package" and d.environment is None:
            continue
        print(f"anemoi-ckpt: {d.severity}: {d.name}: checkpoint {d.checkpoint or '-'}, "
              f"environment {d.environment or '-'}: {d.reason}", file=sys.stderr)
    if missing:
        print(f"anemoi-ckpt: warning: not installed here, versions not checked: {', '.join(missing)}", file=sys.stderr)


def print_drift(manifest) -> None:
    """Each recorded difference of a manifest on stderr."""
    print_differences(manifest.drift)
    if manifest.drift_allowed and any(d.severity == "blocking" for d in manifest.drift):
        print("anemoi-ckpt: blocking differences allowed with --allow-drift; recorded in the manifest", file=sys.stderr)
