"""Issue 13: one node-process harness (shoal.cli.swarm) for the demo, the tests and the benchmarks.

A second copy of "spawn `shoal node start`, wait for its api file, stop it"
drifts from the first (the three copies had different readiness checks,
timeouts and clean-up). This checks the source: the only module that spawns
a long-running `node start` process (Popen) is shoal.cli.swarm, and the tests'
and benchmarks' layers build on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "cli" / "swarm.py"


def _is_popen(n: ast.AST) -> bool:
    return isinstance(n, ast.Call) and str(getattr(n.func, "attr", None) or getattr(n.func, "id", "")).lower() == "popen"


def _says_node_start(n: ast.AST) -> bool:
    """A list, tuple or call arguments holding the words "node", "start" one after the other."""
    items = n.elts if isinstance(n, (ast.List, ast.Tuple)) else n.args if isinstance(n, ast.Call) else []
    words = [e.value if isinstance(e, ast.Constant) else None for e in items]
    return any(a == "node" and b == "start" for a, b in zip(words, words[1:]))


def _node_spawners(tree: ast.Module) -> list[str]:
    """Top-level functions and classes that start a process with Popen and build a `node start` command."""
    return [d.name for d in tree.body if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and any(_is_popen(n) for n in ast.walk(d)) and any(_says_node_start(n) for n in ast.walk(d))]


def test_only_the_harness_spawns_node_processes() -> None:
    sources = [p for d in ("cli", "p2p", "store", "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    assert HARNESS in sources
    spawners = sorted(f"{p.relative_to(ROOT)}:{name}" for p in sources for name in _node_spawners(ast.parse(p.read_text())))
    assert spawners == ["cli/swarm.py:NodeProcess"], spawners


def test_the_tests_and_benchmarks_build_on_the_harness() -> None:
    from shoal.cli.swarm import LocalSwarm, NodeProcess
    from tests.integration.swarm import NodeProc, Swarm

    assert issubclass(NodeProc, NodeProcess) and issubclass(Swarm, LocalSwarm)
    bench = ast.parse((ROOT / "bench" / "transfer.py").read_text())
    imported = {n.module for n in ast.walk(bench) if isinstance(n, ast.ImportFrom)}
    assert "shoal.cli.swarm" in imported
