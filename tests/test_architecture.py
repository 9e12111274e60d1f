"""The house keeps its shape: arrows only point down, no module imports its way round in a circle,
modules stay small, each package says what it holds and may import, and old paths still import.

The layers and forbidden imports themselves are the ``[tool.importlinter]`` contracts of
pyproject.toml; this file runs ``lint-imports`` so that ``pytest`` enforces them.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "anemoi_ckpt_nb"

#: Lines a module may have; above it a module is doing more than one thing.
MAX_LINES = 400

#: Modules allowed over the bound, each with why (none today: keep it that way). A module that
#: shrinks below the bound must leave this table (the test says so), so it only ever gets shorter.
OVER_THE_BOUND: dict[str, str] = {}


def _lint_imports() -> str:
    """The ``lint-imports`` of this interpreter's environment (installed with the ``test`` extra)."""
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "lint-imports is missing: pip install -e '.[test]' (import-linter is in the test extra)"
    return found


def test_import_contracts_are_kept():
    result = subprocess.run([_lint_imports()], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_wrong_arrow_breaks_the_build(tmp_path):
    # The contracts must see the real imports: an arrow the api certainly has is reported broken.
    config = tmp_path / "contracts.toml"
    config.write_text(
        textwrap.dedent(
            """
            [tool.importlinter]
            root_package = "anemoi_ckpt_nb"

            [[tool.importlinter.contracts]]
            name = "the api must not use the catalogue (false on purpose)"
            type = "forbidden"
            source_modules = ["anemoi_ckpt_nb.api"]
            forbidden_modules = ["anemoi_ckpt_nb.catalogue"]
            """
        )
    )
    result = subprocess.run([_lint_imports(), "--config", str(config)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """Strongly connected sets of more than one module (Tarjan), imports under TYPE_CHECKING left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_its_way_round_in_a_circle():
    graph = grimp.build_graph("anemoi_ckpt_nb", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [{"p.a", "p.b"}]


def _modules() -> dict[str, int]:
    return {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_modules_stay_under_the_line_bound():
    lines = _modules()
    over = {path: n for path, n in lines.items() if n > MAX_LINES and path not in OVER_THE_BOUND}
    assert over == {}, f"split these modules (or list them in OVER_THE_BOUND with why): {over}"
    shrunk = [path for path in OVER_THE_BOUND if lines.get(path, 0) <= MAX_LINES]
    assert shrunk == [], f"these modules are back under {MAX_LINES} lines: remove them from OVER_THE_BOUND"


def _protocol_members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


@pytest.mark.parametrize(
    ("handed", "public"),
    [("HandedCheckpoint", "Checkpoint"), ("HandedCatalogue", "Catalogue")],
)
def test_the_notebook_is_handed_what_the_public_objects_are(handed, public):
    # The notebook names only the shape of what it displays (it never imports the api): the
    # public objects must keep that shape, every member and every keyword the widgets pass.
    import inspect

    import anemoi_ckpt_nb.api as api
    from anemoi_ckpt_nb.notebook import handed as handed_module

    protocol, cls = getattr(handed_module, handed), getattr(api, public)
    members = _protocol_members(protocol)
    assert members, f"{handed} lists no members"
    # Instance attributes (``Checkpoint.catalogue``) are declared as annotations.
    has_members = set(dir(cls)) | {name for klass in cls.__mro__ for name in vars(klass).get("__annotations__", {})}
    assert not members - has_members, f"{public} lacks {sorted(members - has_members)}"
    for name in members:
        wanted = getattr(protocol, name)
        if isinstance(wanted, property) or not callable(wanted):
            continue
        has = inspect.signature(getattr(cls, name)).parameters
        for parameter in inspect.signature(wanted).parameters.values():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                assert parameter.name in has, f"{public}.{name} takes no {parameter.name}="


def _package_docstrings() -> dict[str, str | None]:
    """Every package's ``__init__`` docstring, subpackages too; not ``core`` (the deprecated
    shim) nor ``schemas`` (data only), nor the root (the package's face, described in the README)."""
    found = {}
    for init in sorted(PACKAGE.rglob("__init__.py")):
        relative = init.parent.relative_to(PACKAGE)
        if init.parent == PACKAGE or relative.parts[0] in {"core", "schemas"}:
            continue
        found[str(relative)] = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    return found


def test_each_package_says_what_it_holds_and_what_it_may_import():
    # Two lines a newcomer reads first: what the package holds, then what it may import.
    docstrings = _package_docstrings()
    assert {"read", "compat/migrate", "examples"} <= set(docstrings)
    for package, docstring in docstrings.items():
        assert docstring, f"{package}/__init__.py has no docstring"
        paragraphs = docstring.split("\n\n")
        assert len(paragraphs) >= 2 and "\n" not in paragraphs[0], f"{package}: the first paragraph is one line, what it holds"
        assert paragraphs[1].startswith("May import:"), f"{package}: the second paragraph says what it may import"
        assert "\n" not in paragraphs[1], f"{package}: what it may import fits on one line"


OLD_PATHS = [
    # (old module, an attribute, the module that defines it now)
    ("anemoi_ckpt_nb.core.reader", "open_checkpoint", "anemoi_ckpt_nb.read.reader"),
    ("anemoi_ckpt_nb.core.reader", "format_bytes", "anemoi_ckpt_nb.read.summary"),
    ("anemoi_ckpt_nb.core.unpickler", "Placeholder", "anemoi_ckpt_nb.read.placeholders"),
    ("anemoi_ckpt_nb.core.unpickler", "loads", "anemoi_ckpt_nb.read.torchfile"),
    ("anemoi_ckpt_nb.core.convert", "convert_many", "anemoi_ckpt_nb.conversion.batch"),
    ("anemoi_ckpt_nb.core.errors", "CkptError", "anemoi_ckpt_nb.errors"),
    ("anemoi_ckpt_nb.core.catalogue.index", "rebuild", "anemoi_ckpt_nb.catalogue.reindex"),
    ("anemoi_ckpt_nb.core.catalogue.index", "put_event", "anemoi_ckpt_nb.catalogue.events"),
    ("anemoi_ckpt_nb.core.sites", "fetch", "anemoi_ckpt_nb.sites.fetch"),
    ("anemoi_ckpt_nb.core.migrate.modules", "resolve_class", "anemoi_ckpt_nb.read.renames"),
    ("anemoi_ckpt_nb.batch_convert", "convert_many", "anemoi_ckpt_nb.api.batch"),
    ("anemoi_ckpt_nb.notebook.magics", "load_ipython_extension", "anemoi_ckpt_nb.cli.magics"),
]


@pytest.mark.parametrize(("old", "name", "new"), OLD_PATHS)
def test_old_import_paths_still_work_with_a_deprecation_warning(old, name, new):
    # A fresh interpreter: the warning is given once, when the old path is first imported.
    code = textwrap.dedent(
        f"""
        import importlib, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = importlib.import_module({old!r})
            value = getattr(old, {name!r})
        new = importlib.import_module({new!r})
        assert value is getattr(new, {name!r}), (value, getattr(new, {name!r}))
        moved = [w for w in caught if issubclass(w.category, DeprecationWarning) and {old!r} in str(w.message)]
        assert moved, [str(w.message) for w in caught]
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_old_module_moved_whole_is_the_new_module_itself():
    code = (
        "import warnings; warnings.simplefilter('ignore');"
        "import anemoi_ckpt_nb.core.catalogue.store as old, anemoi_ckpt_nb.catalogue.store as new;"
        "assert old is new"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_unknown_old_name_is_an_attribute_error():
    code = (
        "import warnings; warnings.simplefilter('ignore');"
        "import anemoi_ckpt_nb.core.unpickler as old\n"
        "try:\n    old.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
        "else:\n    raise SystemExit('no AttributeError')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_new_paths_import_without_a_deprecation_warning():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning);"
        "import anemoi_ckpt_nb, anemoi_ckpt_nb.api, anemoi_ckpt_nb.cli, anemoi_ckpt_nb.runs.plans, anemoi_ckpt_nb.sites.transfer"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
