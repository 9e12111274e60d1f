"""``cat.browser()``: filter a catalogue by tag, kind and run; a chosen row shows its card and lineage.

The list keeps the row the user chose while the filters change, as long as it is still listed
(ipywidgets resets a ``Select`` to its first row whenever its options change); a row that a
filter hides is unselected and its card goes, so the card shown is always one the user chose.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from anemoi_ckpt_nb.errors import CkptError
from anemoi_ckpt_nb.notebook import html as _html
from anemoi_ckpt_nb.notebook import text as _text
from anemoi_ckpt_nb.notebook.handed import HandedCatalogue
from anemoi_ckpt_nb.notebook.widgets import _FONT, Described, _error_text, _message, _styles

ANY = "(any)"


class CatalogueBrowser(Described, widgets.VBox):
    """Browse a catalogue: filter by tag, kind and run; selecting a row shows its card and lineage.

    Attributes:
        tag, kind: Dropdowns (``"(any)"`` for no filter).
        run: Text box: a run id or its first characters.
        rows: The matching checkpoints (``rows.value`` is the selected uuid, None for none).
        detail: HTML of the selected checkpoint's card (as ``cat.get(uuid)`` shows it) and lineage graph.
    """

    def __init__(self, catalogue: HandedCatalogue, *, renderer: str | None = None) -> None:
        self.catalogue = catalogue
        self.renderer = renderer
        self._replacing = False  # the list's options are being replaced: not a user's choice
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
        self.rows.observe(self._on_row, names="value")
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

    def describe(self) -> str:
        return f"Catalogue browser of {self.catalogue.url}: {self.count.value or 'no checkpoints'} listed"

    def _on_row(self, change: dict[str, Any]) -> None:
        if not self._replacing:
            self.select(change["new"])

    def update(self, *, reload_tags: bool = False) -> None:
        """Re-run the search with the current filters; the chosen row stays chosen if still listed."""
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
        chosen = self.rows.value
        listed = [entry["uuid"] for entry in entries]
        self._replacing = True
        try:
            with self.rows.hold_sync():
                self.rows.options = list(zip(_text.row_labels(entries), listed))
                self.rows.value = chosen if chosen in listed else None
        finally:
            self._replacing = False
        if chosen is not None and chosen not in listed:
            self.select(None)  # hidden by the filters: its card goes too

    def select(self, uuid: str | None) -> None:
        """Show the card and lineage of ``uuid`` (what selecting a row does); None clears them."""
        if not uuid:
            self.detail.value = ""
            return
        try:
            checkpoint = self.catalogue.get(uuid)
            graph = checkpoint.lineage(renderer=self.renderer)
            self.detail.value = _html.checkpoint_card_of(checkpoint) + f"<div class='ackpt-lineage-view'>{graph.svg()}</div>"
        except (CkptError, OSError) as error:
            self.detail.value = _message("error", _error_text(error))
