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


def test_swarm_close_kills_a_node_that_ignores_sigterm_and_never_raises(tmp_path: Path) -> None:
    """LocalSwarm.close promises to stop every node and never raise. A node
    that ignores SIGTERM is escalated to SIGKILL even when the harness cannot
    write the note about it to the log (its folder gone): the note used to
    raise from inside the escalation, so close() raised and the process lived on."""
    import subprocess
    import sys

    from shoal.cli.swarm import LocalSwarm, NodeProcess

    stubborn = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"  # SIGTERM now ignored
        swarm = LocalSwarm(tmp_path)
        node = NodeProcess("stubborn", tmp_path / "repo", tmp_path / "gone" / "stubborn.log", proc=proc)
        swarm.nodes.append(node)
        swarm.close(timeout=0.5)
        assert proc.poll() is not None  # killed, not left running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_node_stop_kills_before_it_writes_the_note(tmp_path: Path) -> None:
    """NodeProcess.stop escalates to SIGKILL even if its log cannot be written."""
    import subprocess
    import sys

    import pytest

    from shoal.cli.swarm import NodeProcess

    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        node = NodeProcess("stubborn", tmp_path / "repo", tmp_path / "gone" / "stubborn.log", proc=proc)
        with pytest.raises(OSError):  # the note about the SIGKILL cannot be written
            node.stop(timeout=0.5)
        assert proc.poll() is not None  # but the node was killed first
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
