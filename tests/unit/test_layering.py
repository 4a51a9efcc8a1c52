"""The layering is checked, not only described (docs/ARCHITECTURE.md).

- `shoal.store` is pure and synchronous: it imports neither `shoal.p2p`,
  `shoal.cli`, trio nor an HTTP stack.
- `shoal.p2p` never imports `shoal.cli`.
- No import cycle between Shoal's modules, counting imports inside
  functions too (only `if TYPE_CHECKING:` blocks are left out: they never run).
- Nothing imports the folders by their old top-level names (`store.x`), which
  would load a second copy of a module beside `shoal.store.x`.

The graph is read from the sources with `ast`, so the test needs nothing
installed and names the offending import when it fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("store", "p2p", "cli")
STORE_MUST_NOT_IMPORT = ("shoal.p2p", "shoal.cli", "trio", "hypercorn", "httpx")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "shoal." + ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported module, line) for every import that can run, relative ones resolved."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            # `from shoal.store.ipld import cid` imports the module shoal.store.ipld.cid
            found.extend((f"{target}.{alias.name}", node.lineno) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, list[tuple[str, int]]]:
    sources = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")
                     if "__pycache__" not in p.parts)
    modules = {_module_name(p): p for p in sources}
    graph: dict[str, list[tuple[str, int]]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py")
    return graph


GRAPH = _graph()


def _where(module: str, line: int) -> str:
    rel = module.removeprefix("shoal.").replace(".", "/")
    path = rel + ("/__init__.py" if (ROOT / rel).is_dir() else ".py")
    return f"{path}:{line}"


def test_the_graph_covers_every_module() -> None:
    assert len(GRAPH) > 90
    assert "shoal.store.persist.repo" in GRAPH and "shoal.p2p.net.node" in GRAPH


@pytest.mark.parametrize("layer, forbidden", [
    ("shoal.store", STORE_MUST_NOT_IMPORT),
    ("shoal.p2p", ("shoal.cli",)),
])
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    bad = [f"{_where(m, line)} imports {target}"
           for m, imports in GRAPH.items() if m == layer or m.startswith(layer + ".")
           for target, line in imports
           if any(target == f or target.startswith(f + ".") for f in forbidden)]
    assert bad == []


def test_no_module_uses_the_old_top_level_names() -> None:
    bad = [f"{_where(m, line)} imports {target}"
           for m, imports in GRAPH.items() for target, line in imports
           if target.split(".")[0] in FOLDERS]
    assert bad == []


def test_no_import_cycles() -> None:
    edges = {m: sorted({t for t, _ in imports if t in GRAPH and t != m}) for m, imports in GRAPH.items()}
    # A package's __init__ importing its own submodules is not a cycle of
    # design; the submodules importing the package back would be.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_a_layer_break(tmp_path: Path) -> None:
    """The checks above can fail: the helpers find what they are for."""
    tree = ast.parse("import trio\nfrom ..p2p.net import node\nif TYPE_CHECKING:\n    import shoal.cli.main\n")
    found = [t for t, _ in _imports(tree, "shoal.store.x", False)]
    assert "trio" in found and "shoal.p2p.net.node" in found
    assert "shoal.cli.main" not in found
