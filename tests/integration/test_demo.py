"""`shoal demo`, the README's main job: real node processes, and nothing left behind.

Runs the real command (a small model file to keep it quick): it must put on
one peer, get on another with identical bytes, place three replicas, audit,
break a holder and repair it, print the energy report, exit 0, and remove
its temp directory and every node process. Then the same command is
interrupted with Ctrl-C (SIGINT) in the middle: it must still stop every
node and remove its temp directory.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import MANY_NODES, SHOAL, shoal_env

pytestmark = MANY_NODES

DEMO_TIMEOUT_S = 240


def _env(tmp: Path) -> dict[str, str]:
    env = shoal_env()
    env["TMPDIR"] = str(tmp)  # the demo's mkdtemp lands here, where the test can look
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _node_processes_under(root: Path) -> list[int]:
    """Pids of live processes whose command line mentions `root` (the demo's nodes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline and "node" in cmdline and "start" in cmdline:
            found.append(int(entry.name))
    return found


def test_demo_runs_the_whole_story_and_cleans_up(tmp_path: Path) -> None:
    proc = subprocess.run([*SHOAL, "demo", "--size", "6M"], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=DEMO_TIMEOUT_S)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:] + out[-3000:]
    for line in ("found alice through peer exchange", "bytes identical: yes", "3 copies held",
                 "proof ok", "FAILED, invalid proof (proven loss)", "repaired in", "Energy per stored GB",
                 "grace fetched frank's", "mallory's get fails: no connected peer", "== done: stopping all"):
        assert line in out, f"missing {line!r} in:\n{out}"
    assert not list(tmp_path.glob("shoal-demo-*")), "the demo left its temp directory behind"
    assert not _node_processes_under(tmp_path)


def test_demo_interrupted_stops_every_node_and_removes_its_directory(tmp_path: Path) -> None:
    proc = subprocess.Popen([*SHOAL, "demo", "--size", "6M"], env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        seen = ""
        while "carol bootstrapped" not in seen:  # three nodes are up: interrupt mid-story
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, f"demo ended early:\n{seen}"
            seen += line
        roots = list(tmp_path.glob("shoal-demo-*"))
        assert len(roots) == 1 and _node_processes_under(roots[0])
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "interrupted" in rest, rest
    assert not list(tmp_path.glob("shoal-demo-*")), "the interrupted demo left its temp directory behind"
    deadline = time.monotonic() + 10
    while _node_processes_under(roots[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _node_processes_under(roots[0]), "node processes outlived the interrupted demo"
