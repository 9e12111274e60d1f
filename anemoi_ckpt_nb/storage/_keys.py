"""Key rules shared by every backend, so a key valid on one is valid on all."""

from __future__ import annotations

from anemoi_ckpt_nb.errors import InvalidKeyError


def check_key(url: str, key: str) -> str:
    """Return ``key`` if every backend can store it, else raise.

    A key is ``/``-separated, relative, with no empty, ``.`` or ``..`` part.
    Parts may not start with a dot: the local backend keeps its temporary and
    lock files under dotted names, and listings skip them.

    Args:
        url: The storage URL, for the error message.
        key: The key to check.

    Returns:
        The key, unchanged.

    Raises:
        InvalidKeyError: the key breaks one of the rules.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(url, str(key), "a storage key must be a non-empty string")
    if "\\" in key or "\x00" in key:
        raise InvalidKeyError(url, key, "a storage key may not contain a backslash or NUL")
    for part in key.split("/"):
        if not part:
            raise InvalidKeyError(
                url, key, "a storage key may not start or end with '/' nor contain '//'"
            )
        if part.startswith("."):
            raise InvalidKeyError(
                url, key, f"key part {part!r} starts with a dot, which is reserved"
            )
    return key
