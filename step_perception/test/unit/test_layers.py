"""The import layering of the step_perception packages, read from the source with ``ast``.

Layers, lowest first: ``core`` (pure: no rclpy, no ROS messages) < ``backends`` <
``ros``. A module may import its own layer and the ones below it. The tools
(the sibling package ``step_perception_tools``) may import everything, and
nothing in the node's package imports them. No module of these packages takes
part in an import cycle. Imports under ``if TYPE_CHECKING:`` count as well: an
interface core needs lives in core.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2]  # step_perception/ (the ament package folder)
REPO = SRC.parent
PACKAGE_DIRS = {
    "step_perception": SRC / "step_perception",
    "step_perception_tools": REPO / "step_perception_tools" / "step_perception_tools",
}
TOOLS = ("step_perception_tools",)
# Layer of each subpackage of the node package; what it may import from the packages.
LAYERS = ("core", "backends", "ros")
# Third-party roots only the ROS layer (and the tools) may import.
ROS_ONLY = (
    "rclpy",
    "rcl_interfaces",
    "sensor_msgs",
    "std_msgs",
    "std_srvs",
    "diagnostic_msgs",
    "visualization_msgs",
    "geometry_msgs",
    "builtin_interfaces",
    "step_perception_msgs",
    "launch",
    "launch_ros",
    "message_filters",
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (absolute; ``from a import b`` gives ``a.b`` if a module)
    line: int


def _module_name(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, root in PACKAGE_DIRS.items():
        if root.is_dir():
            for path in sorted(root.rglob("*.py")):
                out[_module_name(path, root, package)] = path
    return out


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports() -> Iterator[Import]:
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    yield Import(module, sub if sub in MODULES else base, node.lineno)


IMPORTS = tuple(_imports())


def _is_in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> int | None:
    """Index in LAYERS of a node-package module; None for the package root and the tools."""
    parts = module.split(".")
    if parts[0] != "step_perception" or len(parts) < 2 or _is_in(module, TOOLS):
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def test_the_walk_sees_the_packages() -> None:
    # Guards the test itself: a wrong root would make every check below pass vacuously.
    assert "step_perception.core.pipeline" in MODULES
    assert "step_perception.ros.node" in MODULES
    assert any(i.target == "step_perception.core.backend" for i in IMPORTS)


def test_no_module_imports_a_higher_layer() -> None:
    bad = []
    for imp in IMPORTS:
        src, dst = _layer(imp.module), _layer(imp.target)
        if src is not None and dst is not None and dst > src:
            bad.append(f"{imp.module}:{imp.line} imports {imp.target}")
    assert bad == []


def test_core_and_backends_import_no_ros() -> None:
    bad = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in IMPORTS
        if _layer(imp.module) in (0, 1) and _is_in(imp.target, ROS_ONLY)
    ]
    assert bad == []


def test_nothing_in_the_node_package_imports_the_tools() -> None:
    bad = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in IMPORTS
        if not _is_in(imp.module, TOOLS) and _is_in(imp.target, TOOLS)
    ]
    assert bad == []


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        target = imp.target
        while target and target not in MODULES:  # ``a.b.name`` -> the module ``a.b``
            target = target.rpartition(".")[0]
        # A package's __init__ is not an edge target: importing ``a.b`` from inside ``a``
        # runs ``a/__init__`` first anyway, so only real module-to-module arrows count.
        if target and target != imp.module and MODULES[target].name != "__init__.py":
            graph[imp.module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_in_the_node_package() -> None:
    graph = {
        m: {t for t in ts if not _is_in(t, TOOLS)}
        for m, ts in _graph().items()
        if not _is_in(m, TOOLS)
    }
    assert _cycles(graph) == []


def test_no_import_cycles_with_the_tools_package() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["core", "backends", "ros"])
def test_each_layer_names_its_public_modules(package: str) -> None:
    import importlib

    mod = importlib.import_module(f"step_perception.{package}")
    names = set(mod.__all__)
    on_disk = {
        m.rpartition(".")[2]
        for m in MODULES
        if m.startswith(f"step_perception.{package}.") and m.count(".") == 2
    }
    assert names <= on_disk  # every name is a real module
    assert on_disk == names  # and every module is named


def test_the_package_names_its_layers() -> None:
    import step_perception

    assert set(step_perception.__all__) == {"core", "backends", "ros"}
