"""Tags: ``tags/<uuid>.json`` changed by compare-and-swap, with full history.

Each change reads the tag state and its etag, applies the additions and
removals, and writes back only if the etag is unchanged (S3 ``If-Match``;
create-only for the first tag). On a conflict another writer got there first:
re-read and re-apply, after a short random pause so that racing writers
spread out. No update is lost however many processes tag at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from anemoi_ckpt_nb.catalogue import events as _events
from anemoi_ckpt_nb.catalogue import layout
from anemoi_ckpt_nb.catalogue.schema import (
    TagEvent,
    TagState,
    Who,
    utcnow,
    validate_tag,
)
from anemoi_ckpt_nb.catalogue.store import CatalogueStore
from anemoi_ckpt_nb.errors import (
    CatalogueError,
    ConflictError,
    InvalidTagError,
    NotRegisteredError,
    ProtectedError,
)

#: Attempts before a tag change gives up (each conflict means someone else's write succeeded).
MAX_ATTEMPTS = 100


def refuse_unconfirmed_protected(
    add: Sequence[str], remove: Sequence[str], protected: Sequence[str], *, ref: str = "ID"
) -> None:
    """The one rule of protected tags for the faces a person types or clicks in (the tag
    editor, ``anemoi-ckpt tag``, ``%ckpt tag``): a change that names a protected tag, to add
    or to remove it, needs a confirmation; this refuses it, naming the tags (and ``ref``, the
    checkpoint, in the command of the hint).

    Raises:
        ProtectedError: ``add`` or ``remove`` names a tag of ``protected``.
    """
    for action, tags in (("add", add), ("remove", remove)):
        named = [tag for tag in dict.fromkeys(tags) if tag in protected]
        if named:
            one = len(named) == 1
            raise ProtectedError(
                f"{', '.join(repr(tag) for tag in named)} {'is a protected tag' if one else 'are protected tags'}: "
                f"confirm to {action} {'it' if one else 'them'}",
                hint=f"pass --confirm-protected: `anemoi-ckpt tag --confirm-protected {ref} {'+' if action == 'add' else '-'}{named[0]}`",
            )


def change_tags(
    store: CatalogueStore,
    uuid: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    by: Who | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    on_unchanged: Callable[[list[str]], None] | None = None,
    confirm_protected: bool = True,
) -> TagState:
    """Add and remove tags of a registered checkpoint, recording who did what and when.

    Adding a tag it already has, or removing one it has not, changes nothing
    and records nothing.

    Args:
        store: The catalogue.
        uuid: The checkpoint's uuid (exact).
        add: Tags to add.
        remove: Tags to remove.
        by: Who to record; default the current user and host.
        max_attempts: Compare-and-swap attempts before giving up.
        on_unchanged: Called, when some changes had nothing to do, with them as
            ``+tag`` (it had it already) and ``-tag`` (it did not have it).
        confirm_protected: False refuses, before reading or writing anything, a change that
            names a protected tag (:func:`refuse_unconfirmed_protected`); code that calls the
            API has confirmed by writing the call.

    Returns:
        The tag state after the change.

    Raises:
        NotRegisteredError: no record with this uuid.
        InvalidTagError: a tag name is invalid.
        ProtectedError: ``confirm_protected`` is False and a protected tag is named.
        CatalogueError: the state kept changing for ``max_attempts`` attempts.
    """
    # dict.fromkeys: a tag named twice is one change, in the order given.
    add = list(dict.fromkeys(validate_tag(t) for t in add))
    remove = list(dict.fromkeys(validate_tag(t) for t in remove))
    both = set(add) & set(remove)
    if both:
        raise InvalidTagError(sorted(both)[0], f"cannot both add and remove {', '.join(sorted(both))}")
    if not confirm_protected:
        refuse_unconfirmed_protected(add, remove, store.descriptor.protected_tags, ref=uuid[:8])
    record = store.read_record(uuid)
    if record is None:
        raise NotRegisteredError(uuid, hint="list the catalogue with `anemoi-ckpt ls`")
    generation = _events.generation_of(record)
    who = by or layout.whoami()
    for attempt in range(max_attempts):
        state, etag = store.read_tags(uuid)
        if state is None or state.generation != generation:
            # First tag, or tags left over from a cleaned earlier registration.
            new = TagState(uuid=uuid, generation=generation, revision=state.revision if state else 0)
        else:
            new = state.model_copy(deep=True)
        now = utcnow()
        events = [TagEvent(action="add", tag=tag, by=who, at=now) for tag in add if tag not in new.tags]
        events += [TagEvent(action="remove", tag=tag, by=who, at=now) for tag in remove if tag in new.tags]
        unchanged = [f"+{tag}" for tag in add if tag in new.tags] + [f"-{tag}" for tag in remove if tag not in new.tags]
        if not events:
            if unchanged and on_unchanged is not None:
                on_unchanged(unchanged)
            return new  # nothing to change, nothing to record
        for event in events:
            if event.action == "add":
                new.tags.append(event.tag)
            else:
                new.tags.remove(event.tag)
        new.history.extend(events)
        new.tags.sort()
        new.revision += 1
        try:
            if etag is None:
                store.storage.put(layout.tags_key(uuid), layout.dump(new), if_absent=True)
            else:
                store.storage.replace(layout.tags_key(uuid), layout.dump(new), etag=etag)
        except ConflictError:
            time.sleep(random.uniform(0.002, 0.02) * min(attempt + 1, 10))
            continue
        store.publish([_events.tags_event(new)])
        if unchanged and on_unchanged is not None:
            on_unchanged(unchanged)
        return new
    raise CatalogueError(
        f"{store.url}: tags of {uuid} kept changing; gave up after {max_attempts} attempts",
        hint="retry the tag command",
    )


def read_tags(store: CatalogueStore, uuid: str) -> TagState | None:
    """The tag state of ``uuid`` if it belongs to the current registration, else None."""
    record = store.read_record(uuid)
    if record is None:
        raise NotRegisteredError(uuid, hint="list the catalogue with `anemoi-ckpt ls`")
    state, _ = store.read_tags(uuid)
    if state is None or state.generation != _events.generation_of(record):
        return None
    return state
