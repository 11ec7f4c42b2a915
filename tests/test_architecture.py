"""The import rules: one way down (import-linter's contracts) and no import cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
# Strawberry's lazy type references: types that refer to each other (a workflow's runs, a
# run's workflow) import each other under TYPE_CHECKING, and Strawberry resolves them late.
# A workspace's run list and audit trail take their filters (input types) the same way.
LAZY_TYPES = {
    "schema.audit.inputs",
    "schema.audit.types",
    "schema.runs.inputs",
    "schema.runs.types",
    "schema.schedules.types",
    "schema.workflows.types",
    "schema.workspaces.types",
}


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in graph.modules:
                continue
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

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_but_strawberrys_lazy_types() -> None:
    graph = grimp.build_graph("app", "schema")
    assert [cycle for cycle in _cycles(graph) if not cycle <= LAZY_TYPES] == []


def test_the_layer_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout
