"""Turn lineage DOT source into SVG with whatever works on this machine.

In order of preference (``renderer=None`` or ``"auto"``):

1. ``dot``: Graphviz's own program, found on ``PATH`` (Debian's ``graphviz`` package,
   conda, a site module), run through the ``graphviz`` Python package.
2. ``graphviz-pure``: a self-contained port of ``dot`` installed by ``pip install graphviz-pure``
   (no root, no system libraries), found on ``PATH`` or next to the running Python, because a
   JupyterHub kernel often runs a venv whose ``bin/`` is not on ``PATH``.
3. ``builtin``: :mod:`anemoi_ckpt_nb.notebook.layout`, pure Python, always there.

``ANEMOI_CKPT_GRAPH_RENDERER`` overrides the choice (one of the three names).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from anemoi_ckpt_nb.errors import RenderError

if TYPE_CHECKING:
    from anemoi_ckpt_nb.notebook.model import LineageModel

RENDERERS: tuple[str, ...] = ("dot", "graphviz-pure", "builtin")
ENV_VAR = "ANEMOI_CKPT_GRAPH_RENDERER"
#: A lineage graph is small; a renderer still busy after this is stuck.
TIMEOUT_SECONDS = 60
INSTALL_HINT = "pip install graphviz-pure, or install Graphviz (apt-get install graphviz)"


def find_program(name: str) -> str | None:
    """Path of the program ``name`` on ``PATH`` or in the running Python's scripts folder.

    Args:
        name: ``"dot"`` or ``"graphviz-pure"``.

    Returns:
        The path, or None when it is nowhere.
    """
    found = shutil.which(name)
    if found:
        return found
    for folder in {sysconfig.get_path("scripts"), str(Path(sys.executable).parent)}:
        candidate = shutil.which(name, path=folder)
        if candidate:
            return candidate
    return None


def available_renderers() -> list[str]:
    """The renderers that can run here, most preferred first (``builtin`` is always last)."""
    return [name for name in RENDERERS if name == "builtin" or find_program(name)]


def _svg_only(svg: str) -> str:
    # Drop the XML prolog and DOCTYPE, which have no place inside an HTML page or a
    # notebook; keep the generator comment, which says which program drew it.
    return re.sub(r"^\s*<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", "", svg)


@functools.lru_cache(maxsize=None)
def _lineage_css() -> str:
    from importlib.resources import files

    css = (files("anemoi_ckpt_nb.notebook") / "static" / "lineage.css").read_text(encoding="utf-8")
    # Inside an SVG image the style is XML text: no comments, nothing that could read as markup.
    return " ".join(re.sub(r"/\*.*?\*/", "", css, flags=re.S).split())


def themed(svg: str) -> str:
    """``svg`` with the class and the stylesheet that make it follow the page's theme.

    Whichever program drew it, the root ``<svg>`` gets ``class="ackpt-lineage"`` and a ``<style>``
    that repaints the token colours of :mod:`~anemoi_ckpt_nb.notebook.model` from the theme.
    """
    match = re.search(r"<svg\b[^>]*>", svg)
    if match is None:
        raise RenderError("svg", "the renderer wrote no <svg> element")
    tag = match.group(0)
    if re.search(r"\sclass=", tag):
        tag = re.sub(r'\sclass="([^"]*)"', r' class="\1 ackpt-lineage"', tag, count=1)
    else:
        tag = tag[:4] + ' class="ackpt-lineage"' + tag[4:]
    return svg[: match.start()] + tag + f"<style>{_lineage_css()}</style>" + svg[match.end() :]


def _run_program(name: str, source: str) -> str:
    program = find_program(name)
    if program is None:
        raise RenderError(name, "program not found", hint=INSTALL_HINT)
    if name == "dot":
        try:
            import graphviz
        except ImportError:
            graphviz = None
        if graphviz is not None and Path(program) == Path(shutil.which("dot") or ""):
            try:
                return graphviz.Source(source).pipe(format="svg", encoding="utf-8", quiet=True)
            except (graphviz.ExecutableNotFound, graphviz.CalledProcessError) as error:
                raise RenderError(name, str(error).strip().splitlines()[-1], hint=INSTALL_HINT) from error
    try:
        done = subprocess.run(
            [program, "-Tsvg"],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RenderError(name, f"{program} could not run: {error}", hint=INSTALL_HINT) from error
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderError(name, f"{program} failed: {message[-1] if message else done.returncode}")
    return done.stdout.decode("utf-8")


def render_svg(source: str, *, model: LineageModel | None = None, renderer: str | None = None) -> str:
    """Render DOT ``source`` to SVG.

    Args:
        source: DOT text.
        model: The model ``source`` was made from; needed by the ``builtin`` renderer only.
        renderer: ``"dot"``, ``"graphviz-pure"``, ``"builtin"``, or None/``"auto"`` for the first
            that works (``ANEMOI_CKPT_GRAPH_RENDERER`` when set).

    Returns:
        An ``<svg>`` element as text.

    Raises:
        RenderError: The renderer is unknown, missing, or failed; or nothing can draw without a model.
    """
    choice = renderer or os.environ.get(ENV_VAR) or "auto"
    if choice not in (*RENDERERS, "auto"):
        raise RenderError(choice, f"unknown renderer; use one of {', '.join(RENDERERS)} or auto")
    names = [name for name in RENDERERS if name == choice or choice == "auto"]
    errors = []
    for name in names:
        if name == "builtin":
            if model is None:
                errors.append(RenderError(name, "needs the graph model, not only DOT text"))
                continue
            from anemoi_ckpt_nb.notebook.layout import layout_svg

            return themed(layout_svg(model))
        if choice == "auto" and find_program(name) is None:
            continue
        try:
            return themed(_svg_only(_run_program(name, source)))
        except RenderError as error:
            if choice != "auto":
                raise
            errors.append(error)  # fall back to the next renderer
    if len(errors) == 1:
        raise errors[0]
    raise RenderError(choice, "; ".join(str(error) for error in errors) or "no renderer available", hint=INSTALL_HINT)
