"""The shape of the Python code: no import cycles, no two classes of one name,
arrows pointing down (server, harness, validate -> protocol core).

An AST walk over the three source trees, so it needs nothing installed and
counts every import, those under ``TYPE_CHECKING`` too (a type-only cycle
is still two modules that cannot be read apart).
Run it alone: ``python -m pytest protocol/tests/test_architecture.py``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREES = [REPO / "protocol", REPO / "reference_server", REPO / "conformance"]


def _modules() -> dict[str, Path]:
    found = {}
    for tree in TREES:
        for path in sorted((tree / "extjob").rglob("*.py")):
            parts = list(path.relative_to(tree).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path) -> set[str]:
    """The extjob modules ``name`` imports, relative imports resolved."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package(name, path).split(".")
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            # ``from . import checks`` depends on the module, not on the package.
            candidates = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        targets |= {c for c in candidates if c in MODULES and c != name}
    return targets


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return found


def _is_package_reexport(name: str, target: str) -> bool:
    """A package's ``__init__`` importing its own modules is not a cycle of design."""
    return MODULES[name].name == "__init__.py" and target.startswith(name + ".")


def test_no_import_cycle_among_the_python_modules() -> None:
    cycles = [
        c
        for c in _cycles()
        if not all(_is_package_reexport(a, b) for a in c for b in c if b in GRAPH[a])
    ]
    assert cycles == []


def test_no_two_classes_of_one_name() -> None:
    where = defaultdict(list)
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(name)
    assert {n: m for n, m in where.items() if len(m) > 1} == {}


def test_arrows_point_down_to_the_protocol_core() -> None:
    core = {n for n in MODULES if n.startswith("extjob.protocol")}
    tools = {"extjob.validate", "extjob.reporting"}
    for name in core:
        assert GRAPH[name] <= core, f"{name} imports {GRAPH[name] - core}"
    for name in tools:
        assert GRAPH[name] <= core | tools, f"{name} imports {GRAPH[name] - core - tools}"
    for name in MODULES:
        if name.startswith("extjob.conformance"):
            assert not any(t.startswith("extjob.server") for t in GRAPH[name]), name
