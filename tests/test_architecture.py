"""The layer rule of docs/architecture.md, checked against every import in `stack/`.

Layers are read from the doc's `layers` block, top first; a module may import only from layers
below its own. Inside the core, imports have no cycle and only the host imports the host.
Imports under `if TYPE_CHECKING:` are type annotations, not dependencies at run time: they count
for the host rule, not for cycles.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stack"
DOC = ROOT / "docs" / "architecture.md"


def _layers() -> list[str]:
    block = re.search(r"```layers\n(.*?)```", DOC.read_text(), flags=re.S)
    assert block, "docs/architecture.md has no ```layers block"
    return [line.split()[0].removeprefix("stack/") for line in block.group(1).splitlines() if line.strip()]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, only for type checking) for every `stack.` import in a file."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(n, id(node) in typing_only) for n in names if n.startswith("stack.")]
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _top(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def test_every_package_is_in_the_layer_list() -> None:
    layers = _layers()
    tops = {_top(m) for m in MODULES if m.count(".")} - {"__main__", "_native"}
    assert tops <= set(layers), f"packages missing from docs/architecture.md: {sorted(tops - set(layers))}"


def test_imports_point_down_the_layer_list() -> None:
    rank = {name: i for i, name in enumerate(_layers())}
    wrong = []
    for module, path in MODULES.items():
        own = rank.get(_top(module))
        if own is None:
            continue
        for imported, _ in _imports(path):
            other = rank.get(_top(imported))
            if other is not None and other < own:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "imports that point up the layer list:\n" + "\n".join(sorted(set(wrong)))


def test_only_the_host_imports_the_host() -> None:
    offenders = [m for m, p in MODULES.items() if m.startswith("stack.tcp") and m != "stack.tcp.host"
                 and any(i == "stack.tcp.host" or i.startswith("stack.tcp.host.") for i, _ in _imports(p))]
    assert not offenders


def test_the_core_has_no_import_cycle() -> None:
    core = {m for m in MODULES if m.startswith("stack.tcp")}
    graph: dict[str, set[str]] = {}
    for module in core:
        deps = set()
        for imported, typing_only in _imports(MODULES[module]):
            if typing_only:
                continue
            # `from stack.tcp import x` names module stack.tcp.x; `from stack.tcp.y import z` names y.
            target = imported if imported in core else imported.rsplit(".", 1)[0]
            if target in core and target != module:
                deps.add(target)
        graph[module] = deps
    # A package imports its own submodules on purpose (`recovery/__init__` re-exports them).
    for module, deps in graph.items():
        graph[module] = {d for d in deps if not d.startswith(module + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
