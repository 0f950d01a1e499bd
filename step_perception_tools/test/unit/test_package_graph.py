"""The package split holds: tools depend on the node package, never the reverse, and no cycle.

Reads every module's imports with ``ast`` (function-level imports included, they are edges too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
NODE_PKG = REPO / "step_perception" / "step_perception"
TOOLS_PKG = REPO / "step_perception_tools" / "step_perception_tools"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph(root: Path) -> dict[str, set[str]]:
    return {_module_name(p, root): _imports(p) for p in sorted(root.rglob("*.py"))}


def test_the_node_package_never_imports_the_tools():
    offenders = {
        mod: sorted(i for i in imports if i.split(".")[0] == "step_perception_tools")
        for mod, imports in _graph(NODE_PKG).items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_tools_modules_import_each_other_without_a_cycle():
    graph = _graph(TOOLS_PKG)
    edges = {m: {i for i in imports if i in graph and i != m} for m, imports in graph.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(edges[mod]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, mod, dep]))
            if dep not in state:
                visit(dep, [*path, mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
    assert "step_perception_tools.cli" not in set().union(*edges.values())  # nothing imports cli


def test_the_shared_message_mapping_imports_no_message_classes():
    imports = _imports(NODE_PKG / "ros" / "messages.py")
    roots = {i.split(".")[0] for i in imports}
    assert roots <= {
        "__future__",
        "collections",
        "dataclasses",
        "math",
        "typing",
        "step_perception",
    }
    assert not any(i.startswith("step_perception.ros") for i in imports)
