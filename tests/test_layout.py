"""The package's layout rules: deployment code never imports simulation code, few top-level modules,
no module over 350 lines. Read from the source (AST), so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fedgrpo"
# What a deployed server or organisation runs; fedgrpo.simulation, the baselines (algorithms/), the
# suite and the CLI may import simulation code.
DEPLOYMENT = (
    "__init__.py",
    "accel",
    "client",
    "config",
    "console",
    "data",
    "flower",
    "method",
    "models",
    "presets",
    "protocol",
    "run",
    "selection",
    "server",
    "storage",
    "transport",
)
SIMULATION = "fedgrpo.simulation"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an import statement or ``importlib.import_module("...")`` names, with its line;
    imports under ``if TYPE_CHECKING:`` (types only, never run) are left out."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == (
            "import_module"
        ):
            found.extend((node.lineno, a.value) for a in node.args if isinstance(a, ast.Constant))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _simulation_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for line, name in _imported(tree)
        if name == SIMULATION or name.startswith(SIMULATION + ".")
    ]


def deployment_modules() -> list[Path]:
    paths = [PACKAGE / entry for entry in DEPLOYMENT]
    return sorted(p for entry in paths for p in ([entry] if entry.is_file() else entry.rglob("*.py")))


def test_deployment_code_never_imports_simulation_code() -> None:
    modules = deployment_modules()
    assert len(modules) > 50  # the packages above, not an empty walk
    offending = [hit for path in modules for hit in _simulation_imports(path)]
    assert offending == []


def test_the_check_sees_lazy_and_from_imports_and_allows_type_checking_ones() -> None:
    source = """
from typing import TYPE_CHECKING
from fedgrpo import simulation
if TYPE_CHECKING:
    from fedgrpo.simulation.audit import RoutingAudit
def f():
    import fedgrpo.simulation.clients
    importlib.import_module("fedgrpo.simulation.flower")
"""
    names = [name for _, name in _imported(ast.parse(source))]
    assert "fedgrpo.simulation" in names and "fedgrpo.simulation.clients" in names
    assert "fedgrpo.simulation.flower" in names and "fedgrpo.simulation.audit.RoutingAudit" not in names


def test_few_top_level_modules_and_none_over_350_lines() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 3, top
    lines = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {m: n for m, n in lines.items() if n > 350} == {}
