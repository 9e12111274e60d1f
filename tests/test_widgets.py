"""The notebook widgets, driven headless as a user would: set values, click buttons.

They run against a real local catalogue with real example checkpoints.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from anemoi_ckpt_nb.api import Catalogue  # noqa: E402
from anemoi_ckpt_nb.notebook.widgets import ANY, CatalogueBrowser, ConvertPanel, TagEditor  # noqa: E402


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


def test_convert_button_reports_failure_and_is_disabled_for_inference(tmp_path, training_checkpoint):
    catalogue = Catalogue.create(tmp_path / "catalogue")
    checkpoint = catalogue.register(training_checkpoint.path)
    panel = checkpoint.convert_button(tmp_path / "out")
    panel.button.click()
    # The same output again: refused (no overwrite), shown as one sentence, button usable again.
    again = checkpoint.convert_button(tmp_path / "out")
    again.button.click()
    assert again.converted is None
    assert "conversion failed" in status(again) and again.progress.bar_style == "danger"
    assert not again.button.disabled
    inference = panel.converted.convert_button(tmp_path / "x")
    assert inference.button.disabled and "only training checkpoints convert" in status(inference)


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
