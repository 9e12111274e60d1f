"""ipywidgets for notebooks: a tag editor, a convert button, a catalogue browser.

Each widget is an ``ipywidgets.VBox`` whose parts are attributes, so that code
(and the tests) can drive it as a user would: set ``editor.new_tag.value`` and
call ``editor.add_button.click()``. Every change goes through the public API
(:class:`~anemoi_ckpt_nb.api.Checkpoint`, :class:`~anemoi_ckpt_nb.api.Catalogue`), handed in by the
caller and known here only by their shape (:mod:`.handed`); every message shown is escaped.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from anemoi_ckpt_nb.errors import CkptError
from anemoi_ckpt_nb.notebook import html as _html
from anemoi_ckpt_nb.notebook import text as _text
from anemoi_ckpt_nb.notebook.handed import HandedCatalogue, HandedCheckpoint

ANY = "(any)"
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


def _error_text(error: BaseException) -> str:
    # Our errors are already one sentence with a hint; others get their type name and,
    # as messages of other libraries may span lines, are joined onto one.
    return str(error) if isinstance(error, CkptError) else f"{type(error).__name__}: {' '.join(str(error).split())}"


class TagEditor(widgets.VBox):
    """Shows a checkpoint's tags and adds or removes them, writing through to the catalogue.

    Before each change it re-reads the tags: if someone else changed them since they
    were shown, it shows the new state and a conflict message, and changes nothing.
    Adding or removing a protected tag (the catalogue's ``protected_tags``) needs the
    confirmation box ticked; the box clears after each change.

    Attributes:
        checkpoint: The :class:`~anemoi_ckpt_nb.api.Checkpoint` edited.
        new_tag: Text box for a tag to add; ``add_button`` adds it.
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
        if tag in self.protected and not self.confirm.value:
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


class ConvertPanel(widgets.VBox):
    """A "Convert" button with a progress bar: writes the inference checkpoint of a training
    checkpoint, registers it (``converted-from``) and shows its card.

    Attributes:
        button: Starts the conversion.
        progress: Fraction of tensor bytes copied (0 to 1).
        status: The last message.
        result: HTML of the new checkpoint's card once converted.
        converted: The new :class:`~anemoi_ckpt_nb.api.Checkpoint`, or None.
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

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / total if total else 1.0

    def convert(self) -> HandedCheckpoint | None:
        """Convert now (what the button does). Returns the new checkpoint, or None on failure.

        Any failure, expected or not, is shown as one sentence in the panel (a button
        callback has nowhere else to report it), and the button is usable again.
        """
        self.button.disabled = True
        try:
            self.progress.value, self.progress.bar_style = 0.0, "info"
            self.status.value = _message("info", f"converting into {self.dest_dir} ...")
            try:
                new = self.checkpoint.convert(self.dest_dir, format=self.format, tags=self.tags, progress=self._on_progress)
            except Exception as error:  # noqa: BLE001 - shown to the user; a click handler must not fail silently
                self.progress.bar_style = "danger"
                self.status.value = _message("error", f"conversion failed: {_error_text(error)}")
                return None
            self.converted = new
            self.progress.value, self.progress.bar_style = 1.0, "success"
            self.status.value = _message("ok", f"converted: {new.filename} ({_text.format_bytes(new.size)}), uuid {new.uuid}")
            try:
                self.result.value = _html.checkpoint_card(
                    new.record, tags=new.tags, protected_tags=self.checkpoint.catalogue.protected_tags
                )
            except Exception as error:  # noqa: BLE001 - converted and registered; only the card is missing
                self.result.value = _message("error", f"could not show the card of {new.uuid}: {_error_text(error)}")
            return new
        finally:
            self.button.disabled = False


class CatalogueBrowser(widgets.VBox):
    """Browse a catalogue: filter by tag, kind and run; selecting a row shows its card and lineage.

    Attributes:
        tag, kind: Dropdowns (``"(any)"`` for no filter).
        run: Text box: a run id or its first characters.
        rows: The matching checkpoints (``rows.value`` is the selected uuid).
        detail: HTML of the selected checkpoint's card and lineage graph.
    """

    def __init__(self, catalogue: HandedCatalogue, *, renderer: str | None = None) -> None:
        self.catalogue = catalogue
        self.renderer = renderer
        self.tag = widgets.Dropdown(description="tag", options=[ANY], value=ANY)
        self.kind = widgets.Dropdown(description="kind", options=[ANY, "training", "inference"], value=ANY)
        self.run = widgets.Text(description="run", placeholder="run id or prefix")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.count = widgets.HTML("")
        self.rows = widgets.Select(options=[], rows=10, layout=widgets.Layout(width="100%"))
        self.rows.add_class("ackpt-rows")  # monospace, so that the labels' columns line up
        self.detail = widgets.HTML("")
        for control in (self.tag, self.kind, self.run):
            control.observe(lambda _: self.update(), names="value")
        self.refresh_button.on_click(lambda _: self.update(reload_tags=True))
        self.rows.observe(lambda change: self.select(change["new"]), names="value")
        super().__init__(
            [
                widgets.HTML(f"<span style='font-family:{_FONT}'><b>Catalogue</b> <code>{html.escape(catalogue.url)}</code></span>"),
                widgets.HBox([self.tag, self.kind, self.run, self.refresh_button]),
                self.count,
                self.rows,
                self.detail,
                _styles(),
            ]
        )
        self.update(reload_tags=True)

    def update(self, *, reload_tags: bool = False) -> None:
        """Re-run the search with the current filters."""
        if reload_tags:
            tags = sorted({t for entry in self.catalogue.entries() for t in entry.get("tags", ())})
            current = self.tag.value
            self.tag.options = [ANY, *tags]
            self.tag.value = current if current in tags else ANY
        filters: dict[str, Any] = {}
        if self.tag.value != ANY:
            filters["tags"] = [self.tag.value]
        if self.kind.value != ANY:
            filters["kind"] = self.kind.value
        if self.run.value.strip():
            filters["run_id"] = self.run.value.strip()
        entries = self.catalogue.entries(**filters)
        self.count.value = f"{len(entries)} checkpoint{'s' if len(entries) != 1 else ''}"
        self.rows.options = [(self._label(entry), entry["uuid"]) for entry in entries]

    @staticmethod
    def _label(entry: dict[str, Any]) -> str:
        parts = [_text.short_uuid(entry["uuid"]), entry.get("kind", "?"), entry.get("name") or entry.get("filename", "")]
        if entry.get("global_step") is not None:
            parts.append(f"step {entry['global_step']}")
        if entry.get("tags"):
            parts.append("[" + ", ".join(entry["tags"]) + "]")
        return "  ".join(str(p) for p in parts if p)

    def select(self, uuid: str | None) -> None:
        """Show the card and lineage of ``uuid`` (what selecting a row does)."""
        if not uuid:
            self.detail.value = ""
            return
        try:
            checkpoint = self.catalogue.get(uuid)
            card = _html.checkpoint_card(
                checkpoint.record, tags=checkpoint.tags, protected_tags=self.catalogue.protected_tags
            )
            graph = checkpoint.lineage(renderer=self.renderer)
            self.detail.value = card + f"<div class='ackpt-lineage-view'>{graph.svg()}</div>"
        except (CkptError, OSError) as error:
            self.detail.value = _message("error", _error_text(error))
