"""The core's packages are layers: a package imports only itself and the layers below it.

Bottom to top: the base modules (``errors``, ``progress``), ``storage``, ``vm``, ``guest``,
``images``, ``contexts``, ``backup``, ``session``. The core never imports Qt; the GUI's views
never import the controller (it imports them), and no GUI modules import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sandbox_app"
CORE = PACKAGE / "core"
# "": errors, progress
LAYERS = ["", "storage", "vm", "guest", "images", "contexts", "backup", "session"]
# May import views; views never import these.
GUI_APP_SIDE = {"app", "controller", "transfers", "backups"}


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports (absolute dotted names), including inside functions and
    under TYPE_CHECKING: a type-only cycle is still a cycle in the design."""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append(module)
            out += [f"{module}.{a.name}" for a in node.names]
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != ["sandbox_app", "core"] or len(parts) < 3:
        return None
    return LAYERS.index(parts[2]) if parts[2] in LAYERS else 0


CORE_FILES = sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_imports_only_its_layer_and_below(path: Path) -> None:
    mine = _layer("sandbox_app.core." + ".".join(path.relative_to(CORE).with_suffix("").parts))
    assert mine is not None
    for module in _imports(path):
        assert not module.startswith(("PySide6", "qasync", "sandbox_app.gui", "sandbox_app.cli")), (
            f"{path.name} imports {module}: the core is GUI- and CLI-free"
        )
        theirs = _layer(module)
        if theirs is not None:
            assert theirs <= mine, (
                f"{path.relative_to(CORE)} (layer {LAYERS[mine] or 'base'}) imports {module} "
                f"(layer {LAYERS[theirs]}): lower layers never import higher ones"
            )


def test_every_core_module_is_in_a_known_layer() -> None:
    for path in CORE_FILES:
        rel = path.relative_to(CORE)
        if len(rel.parts) == 1:
            assert rel.stem in {"__init__", "errors", "progress"}, f"{rel}: put it in a layer"
        else:
            assert rel.parts[0] in LAYERS, f"{rel}: {rel.parts[0]} is not a known layer"


@pytest.mark.parametrize("path", sorted((PACKAGE / "gui").glob("*.py")), ids=lambda p: p.name)
def test_gui_views_never_import_the_app_side(path: Path) -> None:
    if path.stem in GUI_APP_SIDE:
        return
    for module in _imports(path):
        assert module.split(".")[:3] not in (
            ["sandbox_app", "gui", side] for side in GUI_APP_SIDE
        ), f"gui/{path.name} imports {module}: views only emit requests"


GUI_FILES = sorted((PACKAGE / "gui").glob("*.py"))


def _gui_graph() -> dict[str, set[str]]:
    """gui module → the gui modules it imports (``from . import x`` counts as importing x)."""
    names = {p.stem for p in GUI_FILES} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for path in GUI_FILES:
        parts = (m.split(".") for m in _imports(path))
        graph[path.stem] = {p[2] for p in parts
                            if p[:2] == ["sandbox_app", "gui"] and len(p) > 2 and p[2] in names
                            } - {path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (first module repeated at the end), or None."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node):], node]
        if node in done:
            return None
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt)
            if found:
                return found
        stack.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node)
        if found:
            return found
    return None


def test_cycle_finder_reports_the_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_gui_modules_import_each_other_without_cycles() -> None:
    cycle = _cycle(_gui_graph())
    assert cycle is None, "gui import cycle (TYPE_CHECKING imports count): " + " → ".join(
        f"gui/{m}.py" for m in cycle or [])


def test_no_private_helpers_cross_modules() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.relative_to(PACKAGE)} imports private {private}"
