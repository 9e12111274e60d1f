"""Where things are: the catalogue, the cache, this machine's site, offline mode.

One place reads the ``ANEMOI_CKPT_*`` variables and the user's folders, and says where each value
came from: an option (``--catalogue``, ``--cache``), the environment, or the default.
``anemoi-ckpt info`` prints it; everything else asks here instead of reading the environment.
Only the standard library and platformdirs are imported, so any layer may use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The folder name under the user's data and cache directories (platformdirs).
APP_NAME = "anemoi-ckpt-nb"
ENV_CATALOGUE = "ANEMOI_CKPT_CATALOGUE"
ENV_CACHE = "ANEMOI_CKPT_CACHE"
ENV_SITE = "ANEMOI_CKPT_SITE"
ENV_OFFLINE = "ANEMOI_CKPT_OFFLINE"
ENV_SPOOL = "ANEMOI_CKPT_SPOOL"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Setting:
    """A value and where it came from: ``"option --catalogue"``,
    ``"environment ANEMOI_CKPT_CATALOGUE"`` or ``"default"``."""

    value: Any
    source: str

    @property
    def is_default(self) -> bool:
        return self.source == "default"


def _choose(option: Any, option_name: str, env: str, default: Any) -> Setting:
    if option not in (None, ""):
        return Setting(option, f"option {option_name}")
    if os.environ.get(env):
        return Setting(os.environ[env], f"environment {env}")
    return Setting(default, "default")


def default_catalogue_path() -> Path:
    """``<user data dir>/anemoi-ckpt-nb/catalogue``: ``~/.local/share/...`` on Linux (``XDG_DATA_HOME``)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME)) / "catalogue"


def user_cache_root() -> Path:
    """``<user cache dir>/anemoi-ckpt-nb``: ``~/.cache/...`` on Linux (``XDG_CACHE_HOME``); the one
    cache folder of the package (checkpoints, staging)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def catalogue(option: str | os.PathLike | None = None) -> Setting:
    """The catalogue URL: ``option``, else ``$ANEMOI_CKPT_CATALOGUE``, else the default folder."""
    return _choose(os.fspath(option) if option is not None else None, "--catalogue", ENV_CATALOGUE,
                   str(default_catalogue_path()))


def cache(option: str | os.PathLike | None = None) -> Setting:
    """The checkpoint cache of prefetch, fork, resume and local copies: ``option``, else
    ``$ANEMOI_CKPT_CACHE``, else ``<user cache dir>/anemoi-ckpt-nb/checkpoints``."""
    chosen = _choose(os.fspath(option) if option is not None else None, "--cache", ENV_CACHE,
                     str(user_cache_root() / "checkpoints"))
    return Setting(Path(chosen.value).expanduser(), chosen.source)


def spool(option: str | os.PathLike | None = None) -> Setting:
    """The spool of the training callback and ``anemoi-ckpt sync``: ``option``, else
    ``$ANEMOI_CKPT_SPOOL``, else None (the callback then puts it beside the run folders)."""
    chosen = _choose(os.fspath(option) if option is not None else None, "SPOOL", ENV_SPOOL, None)
    return chosen if chosen.value is None else Setting(Path(chosen.value).expanduser(), chosen.source)


def staging_dir() -> Path:
    """Where copies between two S3 endpoints are staged when no ``--staging`` is given."""
    return user_cache_root() / "staging"


def site() -> Setting:
    """This machine's site name (``$ANEMOI_CKPT_SITE``), or None."""
    name = os.environ.get(ENV_SITE, "").strip()
    return Setting(name, f"environment {ENV_SITE}") if name else Setting(None, "default")


def offline() -> Setting:
    """Offline mode: ``$ANEMOI_CKPT_OFFLINE`` set to 1, true, yes or on; nothing touches the network."""
    text = os.environ.get(ENV_OFFLINE, "").strip()
    if not text:
        return Setting(False, "default")
    return Setting(text.lower() in _TRUE, f"environment {ENV_OFFLINE}")


def is_offline() -> bool:
    return bool(offline().value)


def local_catalogue_exists(url: str) -> bool | None:
    """Whether the catalogue at a local ``url`` exists (has its ``catalogue.json``); None for a
    remote one, which is not looked at (that needs the network)."""
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    elif "://" in url:
        return None
    return (Path(url).expanduser() / "catalogue.json").is_file()
