"""A live JupyterLab driven by Debian's Chromium, for tests/test_jupyterlab_live.py.

``JupyterLab`` starts ``python -m jupyterlab`` on 127.0.0.1 (a free port, a token, its own
settings, workspaces and runtime folders, ``--allow-root`` as CI runs as root) and stops it;
``open_browser`` launches the system Chromium through playwright (never playwright's own browser
download) with a new profile; the ``*_JS`` functions measure the page as a user sees it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: Flags for Chromium on a headless CI machine: no sandbox (root), no GPU, no network of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: JupyterLab settings for a quiet, measurable page: every cell rendered (no windowing, which
#: leaves cells out of view undrawn), no news or update checks (they reach the internet).
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/themes.jupyterlab-settings": {"theme": "JupyterLab Light"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def find_chromium() -> str | None:
    """The system Chromium: ``$CHROMIUM``, else ``chromium`` or ``chromium-browser`` on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLab:
    """A JupyterLab server serving ``root``; a context manager that stops it and its kernels.

    Args:
        root: The folder the server shows (the notebooks of the test).
        state: A folder for its settings, workspaces, runtime files and log.
        env: Extra environment of the server and so of its kernels.
    """

    def __init__(self, root: Path, state: Path, env: dict[str, str]) -> None:
        self.root, self.state = root, state
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.env = env
        self.process: subprocess.Popen | None = None
        self.log = state / "jupyterlab.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 300) -> JupyterLab:
        settings = self.state / "settings"
        for name, values in SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values), encoding="utf-8")
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.state / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.state / "runtime"),
            "IPYTHONDIR": str(self.state / "ipython"),
            **self.env,
        }
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.state / 'workspaces'}",
            # window.jupyterapp: the test runs JupyterLab's own commands (run all, theme, sidebars).
            "--LabApp.expose_app_in_browser=True",
        ]
        self.process = subprocess.Popen(command, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyterlab exited ({self.process.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"jupyterlab did not answer within {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:  # the server shuts its kernels down with it
            request = urllib.request.Request(f"{self.url}/api/shutdown?token={self.token}", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def open_browser(playwright, chromium: str, profile: Path):
    """A Chromium context with a new profile (``profile``), launched from ``chromium``."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=chromium,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 900},
    )


# --- what the page is asked ------------------------------------------------------------------

#: Runs every cell and resolves when the kernel is idle again with every code cell numbered.
RUN_ALL_JS = """async () => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.sessionContext.ready;
  await app.commands.execute('notebook:run-all-cells');
}"""

ALL_RUN_JS = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel;
  return kernel && kernel.status === 'idle' && prompts.length > 0 && prompts.every(t => /\\[\\d+\\]/.test(t));
}"""

#: WCAG contrast of an element's text over what is painted behind it (ancestors' backgrounds,
#: composited); null when no opaque background is found.
CONTRAST_JS = """(el) => {
  const parse = c => {
    const m = c.match(/^rgba?\\(([^)]*)\\)$/);
    if (!m) throw new Error('colour not read: ' + c);
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const layers = [];
  let opaque = false;
  for (let e = el; e; e = e.parentElement) {
    const bg = parse(getComputedStyle(e).backgroundColor);
    if (bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) { opaque = true; break; } }
  }
  if (!opaque) return null;
  let base = layers.pop();
  for (const l of layers.reverse()) base = [0, 1, 2].map(k => l[3] * l[k] + (1 - l[3]) * base[k]);
  const fg = parse(getComputedStyle(el).color);
  const text = [0, 1, 2].map(k => fg[3] * fg[k] + (1 - fg[3]) * base[k]);
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const [a, b] = [lum(text), lum(base)];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""

#: Horizontal overflow of every output of the notebook: [{cell, scrollWidth, clientWidth}].
OUTPUT_WIDTHS_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].flatMap((cell, index) =>
  [...cell.querySelectorAll('.jp-OutputArea-output')].map(out => ({cell: index, scrollWidth: out.scrollWidth, clientWidth: out.clientWidth})))"""

#: Lines of an element's text: the number of characters on each rendered line.
LINE_LENGTHS_JS = """(el) => {
  const lines = new Map();
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i); range.setEnd(node, i + 1);
      const rect = range.getBoundingClientRect();
      if (rect.width === 0) continue;
      const top = Math.round(rect.top);
      lines.set(top, (lines.get(top) || 0) + 1);
    }
  }
  return [...lines.keys()].sort((a, b) => a - b).map(k => lines.get(k));
}"""

#: A card's layout: its labels' heights against one line, the x where its values start, the
#: lines of its sha256 (characters per line), for every field list of the card (sections too).
CARD_LAYOUT_JS = """(wrap) => {
  const visible = e => e.getClientRects().length > 0;
  const dts = [...wrap.querySelectorAll('dl.ackpt-fields dt')].filter(visible);
  const dds = [...wrap.querySelectorAll('dl.ackpt-fields dd')].filter(visible);
  const column = (el, k) => parseFloat(getComputedStyle(el.parentElement).gridTemplateColumns.split(' ')[k]);
  const lines = el => { const range = document.createRange(); range.selectNodeContents(el);
    return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size; };
  return {
    wrapped_labels: dts.filter(dt => lines(dt) > 1).map(dt => dt.textContent),
    cut_labels: dts.filter(dt => dt.scrollWidth > dt.clientWidth + 0.5 && !dt.title).map(dt => dt.textContent),
    // JupyterLab sizes every dt of an output at 20% and every dd at 80% (of the grid cell here).
    squeezed_labels: dts.filter(dt => dt.getBoundingClientRect().width < column(dt, 0) - 1).map(dt => dt.textContent),
    squeezed_values: dds.filter(dd => dd.getBoundingClientRect().width < column(dd, 1) - 1).map(dd => dd.previousElementSibling.textContent),
    value_lefts: [...new Set(dds.map(dd => Math.round(dd.getBoundingClientRect().left)))],
    labels: dts.map(dt => dt.textContent),
  };
}"""

#: Whether an element's text is drawn in a monospace font: "iiii" as wide as "MMMM".
MONOSPACE_JS = """(el) => {
  const style = getComputedStyle(el);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = `${style.fontSize} ${style.fontFamily}`;
  return Math.abs(ctx.measureText('iiii').width - ctx.measureText('MMMM').width) < 0.5;
}"""

#: Children of a row (the browser's filters) that stick out of it or are squeezed below their
#: content: [{text, left, right, width, scrollWidth}] with the row's own box.
ROW_JS = """(row) => {
  const box = row.getBoundingClientRect();
  return {row: {left: box.left, right: box.right}, children: [...row.children].map(c => {
    const r = c.getBoundingClientRect();
    return {text: c.textContent.trim() || c.querySelector('input,select')?.tagName || '', left: r.left, right: r.right,
            top: r.top, width: r.width, scrollWidth: c.scrollWidth, clientWidth: c.clientWidth};
  })};
}"""
