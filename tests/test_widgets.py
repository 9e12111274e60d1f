"""The notebook widgets, driven headless as a user would: set values, click buttons.

They run against a real local catalogue with real example checkpoints.
"""

from __future__ import annotations

import re
import warnings

import pytest

pytest.importorskip("ipywidgets")

from anemoi_ckpt_nb.api import Catalogue  # noqa: E402
from anemoi_ckpt_nb.notebook.browser import ANY, CatalogueBrowser  # noqa: E402
from anemoi_ckpt_nb.notebook.widgets import ConvertPanel, TagEditor  # noqa: E402


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, example_project) -> Catalogue:
    """The example project (base run, a resume, a fork) registered in a local catalogue."""
    folder = example_project["base"][0].path.parent.parent
    catalogue = Catalogue.create(tmp_path_factory.mktemp("widgets") / "catalogue")
    catalogue.register_run([folder])
    return catalogue


def newest(catalogue: Catalogue, run_id: str):
    return max(catalogue.search(run_id=run_id), key=lambda c: c.global_step)


def status(widget) -> str:
    return widget.status.value


# --- tag editor ----------------------------------------------------------------------------


def test_tag_editor_adds_and_removes_through_the_catalogue(catalogue, example_project):
    checkpoint = catalogue.get(example_project["base"][0].uuid)
    editor = checkpoint.tag_editor()
    assert isinstance(editor, TagEditor)
    assert editor.tags == [] and editor.remove_buttons == {}

    editor.new_tag.value = "candidate"
    editor.add_button.click()
    assert "added &#x27;candidate&#x27;" in status(editor)
    assert editor.new_tag.value == ""
    # Written through: a fresh read of the catalogue sees it, with who did it.
    assert catalogue.get(checkpoint.uuid).tags == ["candidate"]
    assert [(e.action, e.tag) for e in checkpoint.tag_history()] == [("add", "candidate")]
    assert list(editor.remove_buttons) == ["candidate"]

    editor.remove_buttons["candidate"].click()
    assert "removed &#x27;candidate&#x27;" in status(editor)
    assert catalogue.get(checkpoint.uuid).refresh().tags == []
    assert editor.tags == []


def _press_enter(text) -> None:
    """What the front end sends when Enter is pressed in a Text box (jupyter-widgets' TextView)."""
    text._handle_msg({"content": {"data": {"method": "custom", "content": {"event": "submit"}}}, "buffers": []})


def test_enter_in_the_tag_box_adds_the_tag(catalogue, example_project):
    checkpoint = catalogue.get(example_project["resumed"][1].uuid)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # not through the deprecated Text.on_submit
        editor = checkpoint.tag_editor()
    editor.new_tag.value = "entered"
    _press_enter(editor.new_tag)
    assert catalogue.get(checkpoint.uuid).tags == ["entered"]
    assert "added &#x27;entered&#x27;" in status(editor) and editor.new_tag.value == ""
    editor.remove_buttons["entered"].click()


def test_tag_editor_shows_a_conflict_and_changes_nothing(catalogue, example_project):
    checkpoint = catalogue.get(example_project["base"][1].uuid)
    editor = TagEditor(checkpoint)
    # Someone else, elsewhere, tags the same checkpoint after the editor showed its tags.
    catalogue.tag(checkpoint.uuid, "evaluated")

    editor.new_tag.value = "candidate"
    editor.add_button.click()
    message = status(editor)
    assert "someone else changed the tags meanwhile" in message
    assert "added &#x27;evaluated&#x27;" in message and "Nothing was changed" in message
    # The editor now shows the new state, and "candidate" was not written.
    assert editor.tags == ["evaluated"]
    assert list(editor.remove_buttons) == ["evaluated"]
    assert catalogue.get(checkpoint.uuid).tags == ["evaluated"]
    # Once the user has seen the new state, the same action goes through.
    editor.add_button.click()
    assert catalogue.get(checkpoint.uuid).tags == ["candidate", "evaluated"]


def test_tag_editor_refuses_protected_tags_without_confirmation(catalogue, example_project):
    checkpoint = catalogue.get(example_project["base"][2].uuid)
    assert "production-ready" in catalogue.protected_tags
    editor = checkpoint.tag_editor()
    editor.new_tag.value = "production-ready"
    editor.add_button.click()
    assert "protected tag: tick the confirmation box to add it" in status(editor)
    assert catalogue.get(checkpoint.uuid).tags == []

    editor.confirm.value = True
    editor.add_button.click()
    assert catalogue.get(checkpoint.uuid).tags == ["production-ready"]
    assert editor.confirm.value is False  # one confirmation, one change
    # A protected chip stands out through the stylesheet's theme colours, not ipywidgets' orange.
    assert {"ackpt-chip", "ackpt-protected"} <= set(editor.remove_buttons["production-ready"]._dom_classes)

    editor.remove_buttons["production-ready"].click()
    assert "tick the confirmation box to remove it" in status(editor)
    assert catalogue.get(checkpoint.uuid).tags == ["production-ready"]
    editor.confirm.value = True
    editor.remove_buttons["production-ready"].click()
    assert catalogue.get(checkpoint.uuid).tags == []


def test_tag_editor_reports_invalid_and_duplicate_tags(catalogue, example_project):
    checkpoint = catalogue.get(example_project["resumed"][0].uuid)
    editor = checkpoint.tag_editor()
    editor.new_tag.value = "<script>alert(1)</script>"
    editor.add_button.click()
    assert "could not add" in status(editor) and "invalid tag" in status(editor)
    assert "<script>" not in status(editor)
    assert editor.new_tag.value == "<script>alert(1)</script>"  # kept, to fix it
    editor.new_tag.value = ""
    editor.add_button.click()
    assert "type a tag first" in status(editor)
    assert editor.add("reviewed") is True
    assert editor.add("reviewed") is False
    assert "already tagged" in status(editor)
    editor.refresh_button.click()
    assert "tags re-read: reviewed" in status(editor)


def test_tag_editor_escapes_a_hostile_name(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path, name="<img src=x onerror=alert(1)>")
    editor = checkpoint.tag_editor()
    assert "<img" not in editor.title.value and "&lt;img src=x" in editor.title.value


def test_tag_editor_reads_tags_and_history_together(tmp_path, training_checkpoint, monkeypatch):
    # Tags and history from one read: two reads could disagree (a change in between) and cost twice.
    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path, tags=["candidate"])
    reads = []
    real = catalogue.store.read_tags
    monkeypatch.setattr(catalogue.store, "read_tags", lambda uuid: reads.append(uuid) or real(uuid))
    editor = checkpoint.tag_editor()
    assert len(reads) == 1 and editor.tags == ["candidate"]
    editor.refresh_button.click()
    assert len(reads) == 2
    assert editor.add("reviewed") is True
    assert len(reads) == 5  # the conflict check before, the change itself, the new state after
    assert editor.tags == ["candidate", "reviewed"] == checkpoint.tags


# --- convert button ---------------------------------------------------------------------------


def test_convert_button_converts_registers_and_shows_the_card(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path)
    panel = checkpoint.convert_button(tmp_path / "inference", tags=["candidate"])
    assert isinstance(panel, ConvertPanel) and not panel.button.disabled
    seen = []
    panel.progress.observe(lambda change: seen.append(change["new"]), names="value")

    panel.button.click()
    new = panel.converted
    assert new is not None and new.kind == "inference"
    assert [(p.uuid, p.relation) for p in new.parents] == [(checkpoint.uuid, "converted-from")]
    assert new.tags == ["candidate"]
    assert (tmp_path / "inference" / new.filename).is_file()
    # The bar moved through intermediate values to the end.
    assert panel.progress.value == 1.0 and panel.progress.bar_style == "success"
    assert any(0.0 < value < 1.0 for value in seen)
    assert new.uuid in panel.result.value and "inference" in panel.result.value
    assert "converted:" in status(panel)
    assert len(catalogue.search(kind="inference")) == 1


def test_convert_button_converts_once_and_never_names_a_command_line_flag(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path)
    panel = checkpoint.convert_button(tmp_path / "out")
    panel.button.click()
    first = panel.converted
    # Done: the button is off (before: enabled, and a second click failed with "pass --overwrite").
    assert first is not None and panel.button.disabled and panel.button.description == "Converted"
    card = panel.result.value
    assert panel.convert() is first
    assert "already converted" in status(panel) and first.uuid in status(panel)
    assert panel.result.value == card and panel.progress.bar_style == "success"
    assert len(catalogue.search(kind="inference")) == 1

    # The cell run again: a new panel finds the registered conversion and shows its card.
    again = checkpoint.convert_button(tmp_path / "out")
    again.button.click()
    assert again.converted == first and again.button.disabled
    assert "already converted" in status(again) and first.uuid in again.result.value
    assert "conversion failed" not in status(again) and "overwrite" not in status(again)
    assert len(catalogue.search(kind="inference")) == 1

    # A file of that name that is not a registered conversion: said in the panel's own terms.
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / first.filename).write_bytes(b"someone else's file")
    stray = checkpoint.convert_button(tmp_path / "stray")
    stray.button.click()
    assert stray.converted is None and not stray.button.disabled and stray.progress.bar_style == "danger"
    assert "conversion failed" in status(stray) and "already exists" in status(stray)
    assert "--overwrite" not in status(stray) and "overwrite=True" not in status(stray)
    assert "convert_button(" in status(stray)

    inference = first.convert_button(tmp_path / "x")
    assert inference.button.disabled and "only training checkpoints convert" in status(inference)


def _same_card(html: str) -> str:
    # Each card's collapsible sections get page-unique ids; the rest is the same.
    return re.sub(r"ackpt-[a-z]+-[0-9a-f-]{36}", "ID", html)


def test_convert_panel_card_is_the_card_of_cat_get_with_locations(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path)
    panel = checkpoint.convert_button(tmp_path / "out")
    panel.button.click()
    shown = catalogue.get(panel.converted.uuid)._repr_html_()
    assert "Locations" in shown
    assert _same_card(panel.result.value) == _same_card(shown)  # before: no Locations section


class _ProgressDisplayBroke(Exception):
    """Not a CkptError, OSError nor ValueError: what the panel used to let escape."""


class _PanelWhoseProgressBreaks(ConvertPanel):
    # The real conversion calls this as it copies; failing here is an unexpected error mid-conversion.
    def _on_progress(self, done: int, total: int) -> None:
        raise _ProgressDisplayBroke("the bar\nbroke")


def test_convert_button_shows_an_unexpected_error_and_is_usable_again(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path)
    panel = _PanelWhoseProgressBreaks(checkpoint, dest_dir=tmp_path / "out")
    panel.button.click()  # before: the error escaped the click handler, the button stayed disabled
    assert panel.converted is None and not panel.button.disabled
    assert panel.progress.bar_style == "danger"
    assert "conversion failed: _ProgressDisplayBroke: the bar broke" in status(panel)
    assert catalogue.search(kind="inference") == []


# --- catalogue browser ---------------------------------------------------------------------------


def test_browser_filters_by_tag_kind_and_run_and_shows_card_and_lineage(catalogue, example_project):
    forked = example_project["forked"]
    catalogue.tag(forked[-1].uuid, "browse-me")
    browser = catalogue.browser(renderer="builtin")
    assert isinstance(browser, CatalogueBrowser)
    total = len(catalogue.entries())
    assert len(browser.rows.options) == total
    assert "browse-me" in browser.tag.options

    browser.tag.value = "browse-me"
    assert [uuid for _, uuid in browser.rows.options] == [forked[-1].uuid]
    browser.tag.value = ANY
    browser.run.value = forked[0].run_id[:8]
    assert {uuid for _, uuid in browser.rows.options} == {c.uuid for c in forked}
    browser.kind.value = "inference"
    assert browser.rows.options == () and browser.count.value == "0 checkpoints"
    browser.kind.value = ANY

    browser.rows.value = forked[0].uuid
    detail = browser.detail.value
    assert "ackpt-wrap" in detail and forked[0].uuid in detail
    assert "<svg" in detail and "forked-from" in detail
    browser.rows.value = None
    assert browser.detail.value == ""


def test_browser_keeps_the_chosen_row_while_the_filters_change(catalogue, example_project):
    forked = example_project["forked"]
    browser = CatalogueBrowser(catalogue, renderer="builtin")
    assert browser.rows.value is None and browser.detail.value == ""  # nothing chosen, no card
    chosen = forked[-1].uuid
    assert [uuid for _, uuid in browser.rows.options].index(chosen) > 0
    browser.rows.value = chosen
    card = browser.detail.value
    assert chosen in card and "Locations" in card  # the card cat.get(uuid) shows

    browser.kind.value = "training"  # still listed: still chosen (before: the first row and its card)
    assert browser.rows.value == chosen and browser.detail.value == card
    run_id = forked[0].run_id
    for typed in range(1, 9):  # typed one character at a time, each one a search
        browser.run.value = run_id[:typed]
        assert browser.rows.value == chosen and browser.detail.value == card
    other = next(c for c in example_project["base"] if not c.run_id.startswith(run_id[:8]))
    browser.run.value = other.run_id[:8]  # hidden by the filter: unselected, no card nobody chose
    assert chosen not in {uuid for _, uuid in browser.rows.options}
    assert browser.rows.value is None and browser.detail.value == ""
    browser.run.value = ""
    assert browser.rows.value is None and browser.detail.value == ""
    browser.kind.value = ANY


def test_browser_refresh_picks_up_new_tags(catalogue, example_project):
    browser = CatalogueBrowser(catalogue, renderer="builtin")
    catalogue.tag(example_project["resumed"][-1].uuid, "fresh-tag")
    assert "fresh-tag" not in browser.tag.options
    browser.refresh_button.click()
    assert "fresh-tag" in browser.tag.options


def test_widget_messages_and_chips_take_their_colours_from_the_theme(catalogue, example_project):
    checkpoint = catalogue.get(example_project["base"][0].uuid)
    editor = TagEditor(checkpoint)
    editor.add_button.click()  # nothing typed: an error message
    assert "ackpt-status ackpt-error" in status(editor) and "var(--ackpt-error" in status(editor)
    # The stylesheet that defines those colours per theme travels with the widget.
    assert any("body[data-jp-theme-light=\"false\"]" in str(getattr(child, "value", "")) for child in editor.children)
    editor.new_tag.value = "themed"
    editor.add_button.click()
    chip = editor.remove_buttons["themed"]
    assert chip.button_style == "" and "ackpt-chip" in chip._dom_classes
    editor.remove_buttons["themed"].click()


def test_widgets_say_what_they_are_in_plain_text(catalogue, example_project):
    # What a notebook saved without widget state shows until the cell runs again
    # (before: "ConvertPanel(children=(HBox(...").
    from IPython.core.interactiveshell import InteractiveShell

    formatter = InteractiveShell.instance().display_formatter
    try:
        checkpoint = catalogue.get(example_project["base"][0].uuid)
        shown = {
            "Tag editor of ": checkpoint.tag_editor(),
            "Convert panel of ": checkpoint.convert_button("inference"),
            f"Catalogue browser of {catalogue.url}": catalogue.browser(renderer="builtin"),
        }
        for start, widget in shown.items():
            data, _ = formatter.format(widget)
            text = data["text/plain"]
            assert text.startswith(start) and "run the cell to use it" in text, text
            assert "children=" not in text and "application/vnd.jupyter.widget-view+json" in data
            assert checkpoint.uuid[:8] in text or start.startswith("Catalogue")
            assert repr(widget) == f"<{widget.describe()}>"
        half_built = TagEditor.__new__(TagEditor)  # a repr asked for before __init__ ran must not raise
        assert repr(half_built) == "<TagEditor>"
    finally:
        InteractiveShell.clear_instance()
