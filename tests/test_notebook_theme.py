"""The notebook's colours in every theme: each text/background pair at WCAG AA (4.5:1) or better.

The pairs are resolved from the files themselves: ``notebook/static/style.css`` (our light and
dark sets) over the variables of JupyterLab's own theme stylesheets (light, dark, dark high
contrast) as installed with jupyterlab, and over no theme variables at all (classic notebook,
VS Code, exported HTML: our fallbacks). The live page is checked too, in tests/test_jupyterlab_live.py.
"""

from __future__ import annotations

import re
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from anemoi_ckpt_nb.notebook import model

STATIC = files("anemoi_ckpt_nb.notebook") / "static"
AA_TEXT, AA_GRAPHICS = 4.5, 3.0

#: Text on its background, as the stylesheet pairs them.
TEXT_PAIRS = [
    ("--ackpt-fg", "--ackpt-bg"),
    ("--ackpt-fg", "--ackpt-bg-alt"),  # table rows, kind badges
    ("--ackpt-fg-muted", "--ackpt-bg"),  # labels, section titles, footers
    ("--ackpt-tag-fg", "--ackpt-tag-bg"),
    ("--ackpt-protected-fg", "--ackpt-protected-bg"),
    ("--ackpt-training-fg", "--ackpt-training-bg"),
    ("--ackpt-inference-fg", "--ackpt-inference-bg"),
    ("--ackpt-ok", "--ackpt-bg"),
    ("--ackpt-error", "--ackpt-bg"),
    ("--ackpt-conflict", "--ackpt-bg"),
    ("--ackpt-info", "--ackpt-bg"),
    ("--ackpt-graph-ink", "--ackpt-graph-training"),
    ("--ackpt-graph-ink", "--ackpt-graph-inference"),
    ("--ackpt-graph-ink", "--ackpt-graph-focus"),
    ("--ackpt-graph-ink", "--ackpt-graph-other"),
    ("--ackpt-graph-label", "--ackpt-bg"),
]
#: Lines against the page (WCAG's 3:1 for graphical objects).
GRAPHIC_PAIRS = [("--ackpt-graph-line", "--ackpt-bg"), ("--ackpt-graph-focus-line", "--ackpt-bg")]


# --- a small CSS reader: custom properties, var() with fallbacks, colours ------------------


def declarations(css: str) -> list[tuple[str, dict[str, str]]]:
    """``(selectors, {--name: value})`` of each rule that declares custom properties."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        props = dict(re.findall(r"(--[\w-]+)\s*:\s*([^;]+?)\s*(?:;|$)", body))
        if props:
            rules.append((" ".join(selectors.split()), props))
    return rules


def resolve(value: str, env: dict[str, str], depth: int = 0) -> str:
    """``value`` with every ``var(--x, fallback)`` replaced as a browser would."""
    assert depth < 20, f"variable cycle at {value}"
    start = value.find("var(")
    if start < 0:
        return value.strip()
    level, i = 0, start + 3
    for i in range(start + 3, len(value)):
        level += {"(": 1, ")": -1}.get(value[i], 0)
        if level == 0:
            break
    inner = value[start + 4 : i]
    name, _, fallback = inner.partition(",")
    name = name.strip()
    replaced = resolve(env[name], env, depth + 1) if name in env else resolve(fallback, env, depth + 1)
    return resolve(value[:start] + replaced + value[i + 1 :], env, depth + 1)


NAMED = {"white": "#ffffff", "black": "#000000"}


def rgba(colour: str) -> tuple[float, float, float, float]:
    colour = NAMED.get(colour.strip().lower(), colour.strip().lower())
    if colour.startswith("#"):
        digits = colour[1:]
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return (*(int(digits[k : k + 2], 16) for k in (0, 2, 4)), 1.0)
    match = re.fullmatch(r"rgba?\(([^)]*)\)", colour)
    assert match, f"not a colour this test reads: {colour!r}"
    parts = [float(p) for p in re.split(r"[,\s/]+", match.group(1).strip()) if p]
    return (*parts[:3], parts[3] if len(parts) > 3 else 1.0)


def over(top: tuple, bottom: tuple) -> tuple:
    """``top`` composited over an opaque ``bottom``."""
    alpha = top[3]
    return (*(alpha * t + (1 - alpha) * b for t, b in zip(top[:3], bottom[:3])), 1.0)


def luminance(colour: tuple) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in colour[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: tuple, bg: tuple) -> float:
    high, low = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def pair_contrast(env: dict[str, str], fg: str, bg: str) -> float:
    page = rgba(resolve("var(--ackpt-bg)", env))
    # A variable naming an undefined one without a fallback is invalid: a background is then
    # transparent, as in the browser (the page shows through).
    background = over(rgba(resolve(f"var({bg})", env) or "rgba(0,0,0,0)"), page)
    return contrast(over(rgba(resolve(f"var({fg})", env)), background), background)


# --- the environments: our two sets, with and without JupyterLab's variables ---------------


def our_sets() -> tuple[dict[str, str], dict[str, str]]:
    rules = declarations((STATIC / "style.css").read_text(encoding="utf-8"))
    light = next(props for selectors, props in rules if ":root" in selectors)
    dark = next(props for selectors, props in rules if 'data-jp-theme-light="false"' in selectors)
    assert set(light) == set(dark), "the dark set must redefine every variable of the light set"
    return light, dark


def jupyterlab_theme(name: str) -> dict[str, str]:
    """The custom properties of an installed JupyterLab theme (``light``, ``dark``, ``dark-high-contrast``)."""
    path = Path(sys.prefix) / "share/jupyter/lab/themes/@jupyterlab" / f"theme-{name}-extension" / "index.css"
    if not path.is_file():
        pytest.skip("needs jupyterlab (pip install -e '.[test]')")
    env: dict[str, str] = {}
    for _, props in declarations(path.read_text(encoding="utf-8")):
        env.update(props)
    return env


def environment(name: str) -> dict[str, str]:
    light, dark = our_sets()
    if name == "no theme variables, light":
        return dict(light)
    if name == "no theme variables, dark":
        return {**light, **dark}
    theme = {"JupyterLab Light": "light", "JupyterLab Dark": "dark", "JupyterLab Dark High Contrast": "dark-high-contrast"}[name]
    ours = light if theme == "light" else {**light, **dark}
    return {**jupyterlab_theme(theme), **ours}


ENVIRONMENTS = [
    "no theme variables, light",
    "no theme variables, dark",
    "JupyterLab Light",
    "JupyterLab Dark",
    "JupyterLab Dark High Contrast",
]


def contrast_table() -> list[tuple[str, str, str, float]]:
    """``(environment, fg, bg, ratio)`` of every pair: the figures the tests hold to."""
    return [
        (name, fg, bg, pair_contrast(environment(name), fg, bg))
        for name in ENVIRONMENTS
        for fg, bg in TEXT_PAIRS + GRAPHIC_PAIRS
    ]


# --- the tests ----------------------------------------------------------------------------


def test_reader_resolves_fallbacks_and_alpha():
    env = {"--a": "var(--b, #111)", "--c": "rgba(0,0,0,.54)", "--bg": "white"}
    assert resolve("var(--a)", env) == "#111"
    assert resolve("var(--x, var(--y, #123456))", env) == "#123456"
    assert round(contrast(over(rgba(env["--c"]), rgba("white")), rgba("white")), 2) == 4.59
    # The pair the issue measured on JupyterLab Dark: the old error red on #111111.
    assert round(contrast(rgba("#b71c1c"), rgba("#111111")), 2) == 2.87


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_every_text_pair_reaches_aa(name):
    env = environment(name)
    low = {f"{fg} on {bg}": round(pair_contrast(env, fg, bg), 2) for fg, bg in TEXT_PAIRS if pair_contrast(env, fg, bg) < AA_TEXT}
    assert not low, f"{name}: below {AA_TEXT}:1: {low}"
    low = {f"{fg} on {bg}": round(pair_contrast(env, fg, bg), 2) for fg, bg in GRAPHIC_PAIRS if pair_contrast(env, fg, bg) < AA_GRAPHICS}
    assert not low, f"{name}: lines below {AA_GRAPHICS}:1: {low}"


def test_dark_rules_match_what_jupyterlab_4_sets():
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    dark_selectors = next(s for s, _ in declarations(css) if "--ackpt-ok" in _ and "data-jp-theme-light" in s and "false" in s)
    for selector in ('body[data-jp-theme-light="false"]', "body.vscode-dark"):
        assert selector in dark_selectors


def test_lineage_tokens_are_all_repainted_and_readable_as_an_image():
    css = (STATIC / "lineage.css").read_text(encoding="utf-8")
    tokens = [*model.COLOURS.values(), model.INK, model.LINE, model.FOCUS_LINE, model.LABEL]
    for token in tokens:
        assert f'"{token}" i]' in css, f"lineage.css does not repaint {token}"
    # As an image (no page variables) the tokens themselves are the colours: dark ink on light
    # boxes, and edge labels on their white halo.
    for fill in model.COLOURS.values():
        assert contrast(rgba(model.INK), rgba(fill)) >= AA_TEXT
    assert contrast(rgba(model.LABEL), rgba("#ffffff")) >= AA_TEXT
    assert "<" not in re.sub(r"/\*.*?\*/", "", css, flags=re.S), "the SVG's style is XML text"


if __name__ == "__main__":  # python tests/test_notebook_theme.py: the figures
    for env_name, fg, bg, ratio in contrast_table():
        print(f"{env_name:32} {fg:24} on {bg:26} {ratio:6.2f}")
