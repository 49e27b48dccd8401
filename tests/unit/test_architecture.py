"""The package's dependencies point one way: no import cycle among `runtime/`
modules, counting every import the source holds (top-level, inside functions and
under `TYPE_CHECKING`), since a lazy or type-only back-edge still ties the two
modules together for whoever reads, moves or tests them."""

from __future__ import annotations

import ast
from pathlib import Path

import voice_runtime

PACKAGE = "voice_runtime"
ROOT = Path(voice_runtime.__file__).parent  # PYTHONPATH picks the worktree being tested


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package, found by walking its folder (new subpackages included)."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node)
            # `from . import stdio_lines` imports a module; `from .x import name` imports x
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        else:
            continue
        for target in targets:
            # `import voice_runtime.mcp.pool` and `from .spec.models import X` name a module (or a package)
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != module:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = package_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component (Tarjan), each as a path that
    starts and ends with the same module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    came_from: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # a component of two or more always has one


def test_no_import_cycle_among_runtime_modules_including_lazy_and_type_only_imports() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among runtime/ modules:\n" + "\n".join(_describe(c, graph) for c in cycles)


def _describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    """The cycle, and the other modules tied into the same knot (fixing one edge may leave another cycle)."""
    tied = sorted(m for m in graph if m not in cycle and _reaches(graph, cycle[0], m) and _reaches(graph, m, cycle[0]))
    return " -> ".join(cycle) + (f" (also tied in: {', '.join(tied)})" if tied else "")


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_the_cycle_finder_names_a_cycle_hidden_in_a_function_or_type_checking_block(tmp_path: Path) -> None:
    # the checker itself must see the back-edges this test exists for
    source = tmp_path / "pkg"
    (source / "sub").mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "sub" / "__init__.py").write_text("")
    (source / "a.py").write_text("from .sub import b\n")
    (source / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (source / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (source / "d.py").write_text("import os\nfrom .a import y\n")
    assert find_cycles(import_graph(source)) == [[f"{PACKAGE}.a", f"{PACKAGE}.sub.b", f"{PACKAGE}.c", f"{PACKAGE}.a"]]

