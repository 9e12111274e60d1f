"""The quickstart seen in a browser: executed, rendered with its widgets, checked in headless Chromium.

Runs ``notebooks/check_in_browser.py``; skipped where Debian's chromium is not installed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def load_checker():
    spec = importlib.util.spec_from_file_location("check_in_browser", NOTEBOOKS / "check_in_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_page_checks_need_rendered_widgets_not_their_saved_state():
    checker = load_checker()
    # The widget-state JSON names the same labels: it must not count as a rendered editor.
    state_only = '<script type="application/vnd.jupyter.widget-state+json">{"description": "Add", ' \
                 '"I mean to change a protected tag": 1, "widget-checkbox": 1}</script>'
    assert checker.check_page(state_only)["tag editor widget"] is False
    rendered = ('<button class="jupyter-widgets widget-button" title="add the tag"><i class="fa fa-plus"></i>Add</button>'
                '<div class="widget-checkbox"><input type="checkbox"><span>I mean to change a protected tag (x)</span></div>')
    assert checker.check_page(rendered)["tag editor widget"] is True
    import base64
    svg = base64.b64encode(b"<svg><title>lineage</title></svg>").decode()
    assert checker.check_page(f'<img src="data:image/svg+xml;base64,{svg}">')["lineage SVG"] is True
    assert checker.check_page("<svg><title>other</title></svg>")["lineage SVG"] is False


@pytest.mark.browser
@pytest.mark.skipif(load_checker().find_chromium() is None, reason="needs chromium (apt-get install chromium)")
def test_quickstart_shows_card_lineage_and_tag_editor_in_chromium(tmp_path):
    checker = load_checker()
    # The user's cache, not the test's isolated one: the scripts are fetched once per machine.
    cache = Path.home() / ".cache" / "anemoi-ckpt-nb" / "widget-js"
    if shutil.which("npm") is None and not (cache / "html-manager").is_dir():
        pytest.skip("needs npm once to fetch the Jupyter widgets HTML manager")
    results = checker.run(NOTEBOOKS / "01-quickstart.ipynb", tmp_path, cache=cache, height=2000)
    assert results == {"checkpoint card": True, "tag editor widget": True, "lineage SVG": True}
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
