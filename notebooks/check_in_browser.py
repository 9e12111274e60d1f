"""See the quickstart as a user does: execute it, render it to HTML with its widgets, open it in
Debian's headless Chromium, take a screenshot and check the page for the checkpoint card, the
lineage SVG and the tag editor widget.

    python notebooks/check_in_browser.py --out /tmp/browser-check     # exit 0 when all three are there

The widgets are drawn by the Jupyter widgets HTML manager; this machine may have no internet
but reaches the npm registry, so the script fetches ``@jupyter-widgets/html-manager`` and
``requirejs`` with ``npm pack`` once into a cache folder and points the page at those files.

Needs: ``chromium`` (``apt-get install chromium``), ``npm`` (or a filled cache), nbconvert.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"
REQUIREJS = "requirejs@2.3.8"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    # Let the widget manager's scripts run before the DOM is dumped or the picture taken.
    "--virtual-time-budget=20000",
]

#: What must be in the rendered page: name -> pattern over the DOM after scripts ran.
CHECKS = {
    "checkpoint card": r"class=\"ackpt-wrap\"[^>]*>.*?ackpt-title",
    # Rendered widgets only: the same words also sit in the page's widget-state JSON.
    "tag editor widget": r"<button[^>]*widget-button[^>]*>(?:(?!</button>).)*Add</button>.*?widget-checkbox.*?I mean to change a protected tag",
}


def find_chromium() -> str | None:
    """The Chromium program: ``$CHROMIUM``, else ``chromium`` or ``chromium-browser`` on PATH."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def widget_scripts(cache: Path) -> tuple[Path, Path]:
    """``(embed-amd.js, require.js)``, fetched with ``npm pack`` into ``cache`` the first time.

    Raises:
        RuntimeError: they are not cached and npm is missing or fails.
    """
    embed, require = cache / "html-manager" / "dist" / "embed-amd.js", cache / "requirejs" / "require.js"
    if embed.is_file() and require.is_file():
        return embed, require
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to fetch the Jupyter widgets HTML manager (apt-get install npm)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", HTML_MANAGER, REQUIREJS], cwd=tmp, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"npm pack failed: {done.stderr.strip().splitlines()[-1:]}")
        for archive, name in (("jupyter-widgets-html-manager-*.tgz", "html-manager"), ("requirejs-*.tgz", "requirejs")):
            (path,) = Path(tmp).glob(archive)
            with tarfile.open(path) as tar:
                tar.extractall(Path(tmp) / name, filter="data")
            shutil.rmtree(cache / name, ignore_errors=True)
            shutil.move(str(Path(tmp) / name / "package"), cache / name)
    return embed, require


def execute(notebook: Path) -> object:
    """The notebook executed in its own folder, widget state kept (as the Jupyter UI saves it)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", store_widget_state=True, resources={"metadata": {"path": str(notebook.parent)}}
    ).execute()
    return nb


def to_html(nb: object, embed: Path, require: Path) -> str:
    """The executed notebook as a standalone HTML page whose widgets load from local files."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.widget_renderer_url = embed.as_uri()
    exporter.require_js_url = require.as_uri()
    body, _ = exporter.from_notebook_node(nb)
    return body


def chromium(program: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [program, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def lineage_svgs(dom: str) -> list[str]:
    """The lineage drawings in the page: inline ``<svg>`` or, as nbconvert's lab template embeds
    SVG outputs, ``<img src="data:image/svg+xml;base64,...">``."""
    found = re.findall(r"<svg[^>]*>.*?</svg>", dom, flags=re.S)
    for encoded in re.findall(r"src=\"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\"", dom):
        found.append(base64.b64decode(encoded).decode("utf-8", "replace"))
    return [svg for svg in found if "<title>lineage</title>" in svg]


def check_page(dom: str) -> dict[str, bool]:
    """Which of :data:`CHECKS` the DOM passes, and whether it shows a lineage SVG."""
    results = {name: re.search(pattern, dom, flags=re.S) is not None for name, pattern in CHECKS.items()}
    results["lineage SVG"] = bool(lineage_svgs(dom))
    return results


def default_cache() -> Path:
    """Where the widget scripts are kept: ``$XDG_CACHE_HOME`` (else ``~/.cache``)/anemoi-ckpt-nb/widget-js."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anemoi-ckpt-nb" / "widget-js"


def run(
    notebook: Path, out: Path, *, cache: Path | None = None, width: int = 1280, height: int = 6000
) -> dict[str, bool]:
    """Execute, render, screenshot and check; files go to ``out``.

    Args:
        notebook: The notebook to execute and show.
        out: Folder for the page, the DOM and the screenshot.
        cache: Folder for the widget scripts (default :func:`default_cache`).
        width, height: Screenshot size in pixels.

    Returns:
        Check name -> passed. ``out`` holds ``page.html``, ``dom.html`` and ``screenshot.png``.

    Raises:
        RuntimeError: Chromium is missing or fails, or the widget scripts cannot be fetched.
    """
    program = find_chromium()
    if program is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    embed, require = widget_scripts(cache or default_cache())
    out.mkdir(parents=True, exist_ok=True)
    page = out / "page.html"
    page.write_text(to_html(execute(notebook), embed, require), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        dumped = chromium(program, page, Path(profile), "--dump-dom")
        if dumped.returncode != 0 or not dumped.stdout:
            raise RuntimeError(f"chromium --dump-dom failed: {dumped.stderr.strip()[-500:]}")
        (out / "dom.html").write_text(dumped.stdout, encoding="utf-8")
        shot = chromium(program, page, Path(profile), f"--screenshot={out / 'screenshot.png'}", f"--window-size={width},{height}")
        if shot.returncode != 0 or not (out / "screenshot.png").is_file():
            raise RuntimeError(f"chromium --screenshot failed: {shot.stderr.strip()[-500:]}")
    return check_page(dumped.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", type=Path, default=HERE / "01-quickstart.ipynb")
    parser.add_argument("--out", type=Path, default=None, help="folder for page.html, dom.html, screenshot.png (default: a new temporary folder)")
    parser.add_argument("--height", type=int, default=6000, help="screenshot height in pixels")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="anemoi-browser-check-"))
    try:
        results = run(args.notebook.resolve(), out, height=args.height)
    except RuntimeError as error:
        print(f"check_in_browser: {error}", file=sys.stderr)
        return 2
    for name, passed in results.items():
        print(f"{'ok  ' if passed else 'MISSING'}  {name}")
    print(f"screenshot: {out / 'screenshot.png'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
