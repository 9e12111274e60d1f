"""The notebook face in a live JupyterLab, in light and dark themes, driven by Debian's Chromium.

A JupyterLab server (127.0.0.1, a free port, a token) serves a notebook that shows a card, the
``%ckpt ls`` table, the tag editor, a convert button, the catalogue browser and a lineage graph of
a local catalogue of example checkpoints. playwright drives the system Chromium
(``executable_path``; playwright's own browser download is never used): it runs the cells, types
and clicks in the widgets, switches theme and opens the file browser, and the tests assert what
the page shows: rendered widgets, tags and conversions written through to the catalogue, the WCAG
contrast of our colours computed from the page, widths measured from the page, and no error in
the browser console. Screenshots go to ``test-artifacts/jupyterlab-live/`` (gitignored).

Skipped where chromium or playwright is missing ("needs ..."); in CI (``CI`` set) such a skip fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from live_lab import (
    ALL_RUN_JS,
    CARD_LAYOUT_JS,
    CONTRAST_JS,
    LINE_LENGTHS_JS,
    MONOSPACE_JS,
    OUTPUT_WIDTHS_JS,
    ROW_JS,
    RUN_ALL_JS,
    JupyterLab,
    find_chromium,
    open_browser,
)

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "jupyterlab-live"
AA_TEXT = 4.5
#: Failure limits for a loaded machine (2 cores shared): never a measure of speed.
SLOW = 240_000

#: The cells of the notebook, in order; the tests find each output by its cell's index.
CELLS = {
    "setup": "from anemoi_ckpt_nb import Catalogue\ncat = Catalogue('catalogue')\n"
    "base = cat.get('{base}')\nforked = cat.get('{forked}')",
    "card": "base",
    "ls": "%load_ext anemoi_ckpt_nb\n%ckpt ls",
    "editor": "editor = base.tag_editor()\neditor",
    "convert": "panel = forked.convert_button('inference')\npanel",
    "browser": "browser = cat.browser()\nbrowser",
    "lineage": "base.lineage()",
}
INDEX = {name: i for i, name in enumerate(CELLS)}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder with example runs, a catalogue holding them (tagged, one copy at a second site
    with a long path) and the notebook; ``(root, {name: uuid})``."""
    from anemoi_ckpt_nb import Catalogue, examples

    root = tmp_path_factory.mktemp("lab")
    runs = examples.write_example_project(root / "example", weights_bytes=20_000)
    cat = Catalogue.create(root / "catalogue")
    cat.register_run([root / "example"])
    base = max(cat.search(run_id=runs["base"][0].run_id), key=lambda c: c.global_step)
    forked = max(cat.search(run_id=runs["forked"][0].run_id), key=lambda c: c.global_step)
    # Tags as people write them: several per checkpoint, some long, so the listing's tag
    # column and the browser's labels have something to fit.
    for checkpoint in cat.search():
        checkpoint.tag("candidate", "evaluated-against-era5-2023", f"step-{checkpoint.global_step}")
    base.tag("reference-for-the-o96-intercomparison")
    base.convert(root / "inference")  # an inference row in the lists, whose kind is a letter longer
    scratch = root / "scratch" / "project_with_a_rather_long_name" / "anemoi-checkpoint-replicas"
    cat.add_site("hpc-scratch-site", path=str(scratch))
    base.replicate("hpc-scratch-site")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code.format(base=base.uuid, forked=forked.uuid)) for code in CELLS.values()]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, root / "live.ipynb")
    return root, {"base": base.uuid, "forked": forked.uuid}


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip("needs chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def page(chromium, project, tmp_path_factory):
    """The notebook open in Chromium with every cell run, in JupyterLab Light, sidebar closed.

    ``page.console_errors`` collects the console's errors and the page's uncaught exceptions."""
    from playwright.sync_api import sync_playwright

    root, _ = project
    state = tmp_path_factory.mktemp("lab-state")
    env = {"ANEMOI_CKPT_CATALOGUE": str(root / "catalogue"), "XDG_DATA_HOME": str(state / "xdg-data"),
           "XDG_CACHE_HOME": str(state / "xdg-cache"), "ANEMOI_CKPT_GRAPH_RENDERER": "builtin"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with JupyterLab(root, state, env) as lab, sync_playwright() as playwright:
        context = open_browser(playwright, chromium, state / "chromium-profile")
        context.set_default_timeout(SLOW)
        browser_page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        browser_page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        browser_page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        browser_page.console_errors = errors
        browser_page.goto(f"{lab.url}/lab/tree/live.ipynb?token={lab.token}")
        browser_page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                       "&& window.jupyterapp.shell.currentWidget.sessionContext")
        browser_page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        browser_page.evaluate(RUN_ALL_JS)
        browser_page.wait_for_function(ALL_RUN_JS, polling=500)
        cell(browser_page, "browser").locator(".ackpt-rows select").wait_for()
        try:
            yield browser_page
        finally:
            context.close()


def cell(page, name: str):
    return page.locator(".jp-Notebook .jp-Cell").nth(INDEX[name])


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def set_theme(page, theme: str) -> None:
    page.evaluate("(theme) => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme)
    light = "true" if "Light" in theme else "false"
    page.wait_for_function(f"() => document.body.dataset.jpThemeName === {theme!r} && document.body.dataset.jpThemeLight === '{light}'")
    page.wait_for_timeout(500)  # the theme's stylesheet applies on the next frames


def contrasts(page, selector: str) -> list[tuple[str, float | None]]:
    """``(text, contrast)`` of each visible element matching ``selector`` in the notebook."""
    found = []
    for element in page.locator(f".jp-Notebook {selector}").all():
        if element.is_visible() and element.inner_text().strip():
            found.append((element.inner_text().strip()[:60], element.evaluate(CONTRAST_JS)))
    return found


# --- the tests ----------------------------------------------------------------------------------


def test_cells_render_cards_tables_widgets_and_graphs(page):
    assert cell(page, "card").locator(".ackpt-wrap .ackpt-title").is_visible()
    assert cell(page, "card").locator("text=Locations").is_visible()
    assert cell(page, "ls").locator("table.ackpt-table").is_visible()
    assert cell(page, "editor").get_by_role("button", name="Add").is_visible()
    assert cell(page, "convert").get_by_role("button", name="Convert to inference").is_visible()
    assert cell(page, "browser").locator(".ackpt-rows select option").count() >= 7
    assert cell(page, "lineage").locator(".ackpt-lineage-view svg, img").first.is_visible()
    shot(page, "light-rendered")
    assert page.console_errors == []


def test_tag_editor_writes_through_to_the_catalogue(page, project):
    from anemoi_ckpt_nb import Catalogue

    root, uuids = project
    editor = cell(page, "editor")
    editor.locator(".widget-text input").fill("live-tag")
    editor.get_by_role("button", name="Add").click()
    editor.locator(".ackpt-status.ackpt-ok").wait_for()
    assert "live-tag" in Catalogue(root / "catalogue").get(uuids["base"]).tags
    assert editor.get_by_role("button", name="live-tag").is_visible()
    assert page.console_errors == []


def test_convert_button_converts_and_shows_the_new_card(page, project):
    from anemoi_ckpt_nb import Catalogue

    root, uuids = project
    panel = cell(page, "convert")
    panel.get_by_role("button", name="Convert to inference").click()
    panel.locator(".ackpt-status.ackpt-ok").wait_for()
    assert panel.locator(".ackpt-wrap .ackpt-kind.ackpt-inference").is_visible()
    children = [c for c in Catalogue(root / "catalogue").search(kind="inference")
                if any(p.uuid == uuids["forked"] and p.relation == "converted-from" for p in c.parents)]
    assert len(children) == 1
    shot(page, "light-converted")
    assert page.console_errors == []


def test_browser_selection_shows_card_and_lineage(page, project):
    _, uuids = project
    browser = cell(page, "browser")
    rows = browser.locator(".ackpt-rows select")
    (label,) = [text for text in rows.locator("option").all_inner_texts() if text.startswith(uuids["base"][:8])]
    rows.select_option(label=label)
    browser.locator(".ackpt-wrap .ackpt-title").wait_for()
    assert browser.locator(".ackpt-lineage-view svg").first.is_visible()
    assert page.console_errors == []


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_status_colours_tags_and_badges_reach_aa_in_the_page(page, project, theme):
    from anemoi_ckpt_nb import Catalogue

    root, uuids = project
    set_theme(page, theme)
    editor = cell(page, "editor")
    editor.locator(".widget-text input").fill("")
    editor.get_by_role("button", name="Add").click()  # an error: no tag typed
    editor.locator(".ackpt-status.ackpt-error").wait_for()
    measured = {"error": contrasts(page, ".ackpt-status.ackpt-error")}
    editor.get_by_role("button", name="Refresh").click()
    editor.locator(".ackpt-status.ackpt-info").wait_for()
    measured["info"] = contrasts(page, ".ackpt-status.ackpt-info")
    # Someone else tags it meanwhile: the editor shows a conflict and changes nothing.
    Catalogue(root / "catalogue").get(uuids["base"]).tag(f"elsewhere-{theme.split()[-1].lower()}")
    editor.locator(".widget-text input").fill(f"mine-{theme.split()[-1].lower()}")
    editor.get_by_role("button", name="Add").click()
    editor.locator(".ackpt-status.ackpt-conflict").wait_for()
    measured["conflict"] = contrasts(page, ".ackpt-status.ackpt-conflict")
    editor.get_by_role("button", name="Add").click()
    editor.locator(".ackpt-status.ackpt-ok").wait_for()
    measured["ok"] = contrasts(page, ".ackpt-status.ackpt-ok")
    for name, selector in {"tag chips": ".ackpt-tag", "kind badges": ".ackpt-kind", "editor chips": ".ackpt-chip",
                           "labels": "dl.ackpt-fields dt", "table cells": "table.ackpt-table td",
                           # Every button, the convert panel's primary one included (the contrast of
                           # its colours: a disabled one is only faded by opacity, which is not read).
                           "buttons": ".jupyter-button"}.items():
        measured[name] = contrasts(page, selector)
    shot(page, f"{theme.split()[-1].lower()}-colours")
    lowest = {name: min((ratio for _, ratio in found if ratio is not None), default=None) for name, found in measured.items()}
    (ARTIFACTS / f"contrast-{theme.split()[-1].lower()}.json").write_text(json.dumps(lowest, indent=1), encoding="utf-8")
    assert all(measured.values()), f"nothing measured for {[k for k, v in measured.items() if not v]}"
    assert any(text.startswith("Convert") for text, _ in measured["buttons"]), measured["buttons"]
    low = {name: [(text, ratio) for text, ratio in found if ratio is None or ratio < AA_TEXT] for name, found in measured.items()}
    assert not any(low.values()), f"{theme}: below {AA_TEXT}:1 in the page: { {k: v for k, v in low.items() if v} }"
    assert page.console_errors == []


# --- widths -------------------------------------------------------------------------------------


def layout(page, *, width: int, height: int, file_browser: bool) -> None:
    """The window at ``width`` x ``height``, the file browser open or closed, every section of the
    card open, in JupyterLab Light."""
    set_theme(page, "JupyterLab Light")
    page.set_viewport_size({"width": width, "height": height})
    if file_browser:
        page.evaluate("() => window.jupyterapp.commands.execute('filebrowser:activate')")
        page.wait_for_function("() => !window.jupyterapp.shell.leftCollapsed")
    else:
        page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    card = cell(page, "card")
    for toggle in card.locator("input.ackpt-section-in").all():
        if not toggle.is_checked():
            toggle.evaluate("(box) => { box.checked = true; }")
    page.wait_for_timeout(500)  # relayout after the resize


def overflowing_outputs(page) -> list[str]:
    names = list(CELLS)
    return [f"{names[o['cell']]}: {o['scrollWidth']} px in {o['clientWidth']} px"
            for o in page.evaluate(OUTPUT_WIDTHS_JS) if o["scrollWidth"] > o["clientWidth"]]


def card_problems(page, name: str = "card") -> list[str]:
    wrap = cell(page, name).locator(".ackpt-wrap").first
    found = wrap.evaluate(CARD_LAYOUT_JS)
    problems = [f"label wraps: {label}" for label in found["wrapped_labels"]]
    problems += [f"label cut without a tooltip: {label}" for label in found["cut_labels"]]
    problems += [f"label narrower than its column: {label}" for label in found["squeezed_labels"]]
    problems += [f"value narrower than its column: {label}" for label in found["squeezed_values"]]
    if len(found["value_lefts"]) != 1:
        problems.append(f"values start at different x: {found['value_lefts']}")
    sha = wrap.locator("dd.ackpt-sha256, dd:right-of(dt:text-is('sha256'))").first
    lines = sha.evaluate(LINE_LENGTHS_JS)
    if len(lines) > 1 and min(lines) < 16:
        problems.append(f"sha256 wraps badly: characters per line {lines}")
    return problems


def test_widths_at_1400_px(page):
    layout(page, width=1400, height=900, file_browser=False)
    for name in CELLS:
        cell(page, name).screenshot(path=str(ARTIFACTS / f"1400-{name}.png"))
    problems = overflowing_outputs(page) + card_problems(page)
    assert not problems, problems
    # The listing and the card's Locations table fit whole at this width: nothing to scroll to.
    for name, selector in (("ls", "table.ackpt-table"), ("card", "table.ackpt-table")):
        output = cell(page, name).locator(".jp-OutputArea-output").first.bounding_box()
        table = cell(page, name).locator(selector).first.bounding_box()
        assert table["x"] + table["width"] <= output["x"] + output["width"], f"{name}: table wider than the output"
    rows = cell(page, "browser").locator(".ackpt-rows select")
    # The list stays inside the output (its long lines scroll inside it).
    output = cell(page, "browser").locator(".jp-OutputArea-output").first.bounding_box()
    box = rows.bounding_box()
    assert box["x"] + box["width"] <= output["x"] + output["width"], "the browser's list is wider than the output"
    assert rows.evaluate(MONOSPACE_JS), "the browser's list is not monospace"
    labels = [text.replace("\xa0", " ") for text in rows.locator("option").all_inner_texts()]  # ipywidgets keeps spaces as NBSP
    assert any("inference" in label for label in labels) and any("training" in label for label in labels)
    for column in ("step ", "["):  # the step and tags columns start at one character for every row
        starts = {label.index(column) for label in labels if column in label}
        assert len(starts) == 1, f"the {column!r} column does not line up: {labels}"
    page.set_viewport_size({"width": 1400, "height": 5000})  # the whole notebook in one picture
    page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer').forEach(e => { e.scrollTop = 0; })")
    page.wait_for_timeout(500)
    shot(page, "1400-whole-notebook")
    assert page.console_errors == []


def test_widths_at_1024_by_800_with_the_file_browser_open(page):
    layout(page, width=1024, height=800, file_browser=True)
    for name in CELLS:
        cell(page, name).screenshot(path=str(ARTIFACTS / f"1024-{name}.png"))
    shot(page, "1024-file-browser")
    problems = overflowing_outputs(page) + card_problems(page)
    assert not problems, problems
    row = cell(page, "browser").locator(".widget-hbox").first
    found = row.evaluate(ROW_JS)
    squeezed = [c for c in found["children"] if c["scrollWidth"] > c["clientWidth"] + 1 or c["width"] < 40]
    outside = [c for c in found["children"] if c["right"] > found["row"]["right"] + 0.5]
    assert not squeezed and not outside, f"filter row: squeezed {squeezed}, outside {outside}"
    assert page.console_errors == []

