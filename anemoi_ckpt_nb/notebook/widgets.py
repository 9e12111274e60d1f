"""ipywidgets for notebooks: a tag editor and a convert button (the catalogue browser is in :mod:`.browser`).

Each widget is an ``ipywidgets.VBox`` whose parts are attributes, so that code
(and the tests) can drive it as a user would: set ``editor.new_tag.value`` and
call ``editor.add_button.click()``. Every change goes through the public API
(:class:`~anemoi_ckpt_nb.api.Checkpoint`, :class:`~anemoi_ckpt_nb.api.Catalogue`), handed in by the
caller and known here only by their shape (:mod:`.handed`); every message shown is escaped.
"""

from __future__ import annotations

import html
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from anemoi_ckpt_nb.catalogue.tags import refuse_unconfirmed_protected
from anemoi_ckpt_nb.conversion.plan import OVERWRITE_PYTHON_HINT
from anemoi_ckpt_nb.errors import CkptError, ConvertError, ProtectedError
from anemoi_ckpt_nb.notebook import html as _html
from anemoi_ckpt_nb.notebook import text as _text
from anemoi_ckpt_nb.notebook.handed import HandedCatalogue, HandedCheckpoint

#: Widget HTML is not inside a card, so it names the notebook's font itself.
_FONT = "var(--jp-ui-font-family, -apple-system, Helvetica, Arial, sans-serif)"


def _message(kind: str, text: str) -> str:
    # Coloured by the stylesheet (:func:`_styles`), per theme; the inline colour is the light
    # theme's, for a front end where the stylesheet did not load.
    light = {"ok": "#1b5e20", "error": "#b71c1c", "conflict": "#b23c00", "info": "#37474f"}
    return (
        f"<span class='ackpt-status ackpt-{kind}' style='color:var(--ackpt-{kind}, {light[kind]}); font-family:{_FONT}'>"
        f"{html.escape(text)}</span>"
    )


def _styles() -> widgets.HTML:
    """The stylesheet (theme colours, chips) for a widget shown without any card on the page."""
    return widgets.HTML(_html.stylesheet(), layout=widgets.Layout(display="none"))


class Described:
    """A widget whose plain-text form says what it is: a notebook saved without widget state
    shows that text (not ``ConvertPanel(children=(HBox(...``) until its cell runs again."""

    def describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        try:
            return f"<{self.describe()}>"
        except Exception:  # noqa: BLE001 - a repr must not raise (e.g. asked for while being built)
            return f"<{type(self).__name__}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data["text/plain"] = f"{self.describe()} (an interactive widget: run the cell to use it)"
        return data


def _named(checkpoint: HandedCheckpoint) -> str:
    return f"{checkpoint.name or checkpoint.filename} ({_text.short_uuid(checkpoint.uuid)})"


def _error_text(error: BaseException) -> str:
    # Our errors are already one sentence with a hint; others get their type name and,
    # as messages of other libraries may span lines, are joined onto one.
    return str(error) if isinstance(error, CkptError) else f"{type(error).__name__}: {' '.join(str(error).split())}"


class TagEditor(Described, widgets.VBox):
    """Shows a checkpoint's tags and adds or removes them, writing through to the catalogue.

    Before each change it re-reads the tags: if someone else changed them since they
    were shown, it shows the new state and a conflict message, and changes nothing.
    Adding or removing a protected tag (the catalogue's ``protected_tags``) needs the
    confirmation box ticked (the rule of ``anemoi-ckpt tag --confirm-protected``,
    :func:`~anemoi_ckpt_nb.catalogue.tags.refuse_unconfirmed_protected`); the box clears
    after each change.

    Attributes:
        checkpoint: The :class:`~anemoi_ckpt_nb.api.Checkpoint` edited.
        new_tag: Text box for a tag to add; Enter in it or ``add_button`` adds it.
        remove_buttons: Tag -> the button that removes it.
        confirm: Confirmation box for protected tags.
        refresh_button: Re-reads the tags.
        status: The last message (``status.value`` is HTML).
    """

    def __init__(self, checkpoint: HandedCheckpoint) -> None:
        self.checkpoint = checkpoint
        self.protected = list(checkpoint.catalogue.protected_tags)
        name = checkpoint.name or checkpoint.filename
        self.title = widgets.HTML(
            f"<span style='font-family:{_FONT}'><b>Tags of {html.escape(str(name))}</b> "
            f"<code>{html.escape(_text.short_uuid(checkpoint.uuid))}</code></span>"
        )
        self.chips = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.new_tag = widgets.Text(placeholder="new tag, e.g. candidate", layout=widgets.Layout(width="220px"))
        self.add_button = widgets.Button(description="Add", icon="plus", tooltip="add the tag")
        self.confirm = widgets.Checkbox(
            value=False,
            indent=False,
            description=f"I mean to change a protected tag ({', '.join(self.protected) or 'none'})",
            layout=widgets.Layout(width="auto"),
        )
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", tooltip="re-read the tags")
        self.status = widgets.HTML("")
        self.remove_buttons: dict[str, widgets.Button] = {}
        self.add_button.on_click(lambda _: self.add())
        # Enter in the box: the front end sends a "submit" message (Text.on_submit, its only
        # other door, is deprecated in ipywidgets 8; continuous_update=False would also add on blur).
        self.new_tag.on_msg(self._on_text_message)
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__(
            [
                self.title,
                self.chips,
                widgets.HBox([self.new_tag, self.add_button, self.refresh_button]),
                self.confirm,
                self.status,
                _styles(),
            ]
        )
        self._shown = self._read()
        self._show(self._shown[0])

    def describe(self) -> str:
        return f"Tag editor of {_named(self.checkpoint)}, tags: {', '.join(self._shown[0]) or 'none'}"

    def _on_text_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("event") == "submit":
            self.add()

    # --- state ------------------------------------------------------------------------

    def _read(self) -> tuple[tuple[str, ...], list[Any]]:
        """``(tags, history)`` as stored now, from one read so that they agree."""
        history = self.checkpoint.tag_history()
        return tuple(self.checkpoint.tags), history

    @property
    def tags(self) -> list[str]:
        """The tags as shown."""
        return list(self._shown[0])

    def _show(self, tags: Sequence[str]) -> None:
        self.remove_buttons = {}
        for tag in tags:
            # Chips coloured by the stylesheet: ipywidgets' "warning"/"info" styles put white text
            # on orange and teal (2.7:1, 3.5:1).
            button = widgets.Button(
                description=tag, icon="times", tooltip=f"remove {tag}", layout=widgets.Layout(width="auto")
            )
            button.add_class("ackpt-chip")
            if tag in self.protected:
                button.add_class("ackpt-protected")
            button.on_click(lambda _, tag=tag: self.remove(tag))
            self.remove_buttons[tag] = button
        self.chips.children = list(self.remove_buttons.values()) or [widgets.HTML("<i>no tags</i>")]

    def refresh(self) -> None:
        """Re-read the tags from the catalogue and show them."""
        self._shown = self._read()
        self._show(self._shown[0])
        self.status.value = _message("info", f"tags re-read: {', '.join(self._shown[0]) or 'none'}")

    # --- changes ------------------------------------------------------------------------

    def add(self, tag: str | None = None) -> bool:
        """Add ``tag`` (default: the text box's value). Returns True when the catalogue changed."""
        tag = (tag if tag is not None else self.new_tag.value).strip()
        if not tag:
            self.status.value = _message("error", "type a tag first")
            return False
        done = self._change(tag, add=True)
        if done:
            self.new_tag.value = ""
        return done

    def remove(self, tag: str) -> bool:
        """Remove ``tag``. Returns True when the catalogue changed."""
        return self._change(tag, add=False)

    def _change(self, tag: str, *, add: bool) -> bool:
        verb = "add" if add else "remove"
        try:
            if not self.confirm.value:
                refuse_unconfirmed_protected([tag] if add else [], [] if add else [tag], self.protected)
        except ProtectedError:
            self.status.value = _message(
                "error", f"'{tag}' is a protected tag: tick the confirmation box to {verb} it"
            )
            return False
        try:
            current = self._read()
            if current[0] != self._shown[0] or len(current[1]) != len(self._shown[1]):
                self._conflict(current)
                return False
            if (tag in current[0]) == add:
                self.status.value = _message("info", f"{'already tagged' if add else 'not tagged'} '{tag}'")
                return False
            if add:
                self.checkpoint.tag(tag)
            else:
                self.checkpoint.untag(tag)
            self._shown = self._read()
        except (CkptError, OSError, ValueError) as error:
            self.status.value = _message("error", f"could not {verb} '{tag}': {_error_text(error)}")
            return False
        self._show(self._shown[0])
        self.confirm.value = False  # a confirmation is for one change only
        self.status.value = _message("ok", f"{'added' if add else 'removed'} '{tag}'")
        return True

    def _conflict(self, current: tuple[tuple[str, ...], list[Any]]) -> None:
        news = current[1][len(self._shown[1]) :] if len(current[1]) > len(self._shown[1]) else []
        what = "; ".join(f"{e.by} {'added' if e.action == 'add' else 'removed'} '{e.tag}'" for e in news)
        self._shown = current
        self._show(current[0])
        self.status.value = _message(
            "conflict",
            "someone else changed the tags meanwhile"
            + (f" ({what})" if what else "")
            + f"; now: {', '.join(current[0]) or 'none'}. Nothing was changed: apply your change again if you still want it.",
        )


class ConvertPanel(Described, widgets.VBox):
    """A "Convert" button with a progress bar: writes the inference checkpoint of a training
    checkpoint, registers it (``converted-from``) and shows its card, as ``cat.get(uuid)`` does.

    Once converted the button stays disabled: a panel converts once. If the output file is
    already there and registered as a conversion of this checkpoint (the cell ran before),
    the panel says so and shows that checkpoint's card instead of converting again.

    Attributes:
        button: Starts the conversion.
        progress: Fraction of tensor bytes copied (0 to 1).
        status: The last message.
        result: HTML of the new checkpoint's card once converted.
        converted: The inference :class:`~anemoi_ckpt_nb.api.Checkpoint` (converted now, or found
            registered), or None.
    """

    def __init__(
        self,
        checkpoint: HandedCheckpoint,
        *,
        dest_dir: str | os.PathLike | None = None,
        format: str = "anemoi",
        tags: Sequence[str] = (),
    ) -> None:
        self.checkpoint = checkpoint
        self.dest_dir = Path(dest_dir) if dest_dir is not None else Path.cwd() / "inference"
        self.format = format
        self.tags = list(tags)
        self.converted: HandedCheckpoint | None = None
        self.button = widgets.Button(
            description="Convert to inference", icon="cogs", button_style="primary", layout=widgets.Layout(width="auto")
        )
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="", bar_style="info")
        self.status = widgets.HTML("")
        self.result = widgets.HTML("")
        self.button.on_click(lambda _: self.convert())
        if checkpoint.kind != "training":
            self.button.disabled = True
            self.status.value = _message("info", f"only training checkpoints convert; this one is {checkpoint.kind}")
        super().__init__([widgets.HBox([self.button, self.progress]), self.status, self.result, _styles()])

    def describe(self) -> str:
        done = f"; converted: {_named(self.converted)}" if self.converted is not None else ""
        return f"Convert panel of {_named(self.checkpoint)} into {self.dest_dir}{done}"

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / total if total else 1.0

    def convert(self) -> HandedCheckpoint | None:
        """Convert now (what the button does). Returns the inference checkpoint, or None on failure.

        Any failure, expected or not, is shown as one sentence in the panel (a button
        callback has nowhere else to report it), and the button is usable again. A panel
        that has converted does not convert again: it says so and keeps the card.
        """
        if self.converted is not None:
            text = f"already converted: {self.converted.filename}, uuid {self.converted.uuid}; its card is below"
            self.status.value = _message("info", text)
            return self.converted
        self.button.disabled = True
        self.progress.value, self.progress.bar_style = 0.0, "info"
        self.status.value = _message("info", f"converting into {self.dest_dir} ...")
        try:
            new = self.checkpoint.convert(self.dest_dir, format=self.format, tags=self.tags, progress=self._on_progress)
        except Exception as error:  # noqa: BLE001 - shown to the user; a click handler must not fail silently
            return self._failed(error)
        self.converted = new
        self._done("ok", f"converted: {new.filename} ({_text.format_bytes(new.size)}), uuid {new.uuid}")
        return new

    def _done(self, kind: str, text: str) -> None:
        self.button.disabled, self.button.description, self.button.icon = True, "Converted", "check"
        self.progress.value, self.progress.bar_style = 1.0, "success"
        self.status.value = _message(kind, text)
        try:
            self.result.value = _html.checkpoint_card_of(self.converted)
        except Exception as error:  # noqa: BLE001 - converted and registered; only the card is missing
            self.result.value = _message("error", f"could not show the card of {self.converted.uuid}: {_error_text(error)}")

    def _failed(self, error: BaseException) -> None:
        exists = isinstance(error, ConvertError) and error.python_hint == OVERWRITE_PYTHON_HINT
        found = self._registered_conversion(Path(error.destination)) if exists else None
        if found is not None:
            self.converted = found
            self._done("info", f"already converted: {error.destination} is registered as {found.uuid}; its card is below")
            return None
        self.button.disabled = False
        self.progress.bar_style = "danger"
        if exists:
            # The converter's hint is the CLI's --overwrite or Python's overwrite=True: neither is in this panel.
            text = (f"{error.destination} already exists and is not a registered conversion of this checkpoint: "
                    "remove it, or make a panel for another folder, e.g. convert_button(\"inference-2/\")")
        else:
            text = _error_text(error)
        self.status.value = _message("error", f"conversion failed: {text}")
        return None

    def _registered_conversion(self, destination: Path) -> HandedCheckpoint | None:
        """The inference checkpoint converted from this one and registered from ``destination``
        on this host (the same size still), if any."""
        catalogue = self.checkpoint.catalogue
        try:
            where = (socket.gethostname(), str(destination.resolve()))
            size = destination.stat().st_size
            for entry in catalogue.entries(kind="inference"):
                parents = {(p.get("uuid"), p.get("relation")) for p in entry.get("parents", ())}
                if (self.checkpoint.uuid, "converted-from") not in parents or entry.get("filename") != destination.name:
                    continue
                found = catalogue.get(entry["uuid"])
                source = _text.field(found.record, "source")
                if (_text.field(source, "host"), _text.field(source, "path")) == where and found.size == size:
                    return found
        except (CkptError, OSError):  # the catalogue is unreachable: the failure is shown as it is
            return None
        return None
