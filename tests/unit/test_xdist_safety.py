"""The suite runs on two pytest-xdist workers (scripts/test.sh): what that needs of the tests.

- Every worker collects the tests itself and xdist refuses to run unless all
  collected the same ids: a parametrize id made of bytes generated at import
  (random keys) stopped the whole run.
- `--dist loadgroup` must really keep a group on one worker: with pytest
  9.2 it silently did not (the group's swarms ran side by side).
- pytest-timeout still ends a hung test inside a worker.
- Ports a test names itself (`free_port`) must not be ones that the other
  worker's nodes, listening on port 0, can be given in between.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import PROJECT_ROOT, _ephemeral_ports, free_port


def _collect(hash_seed: str) -> list[str]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                           "-p", "no:xdist", "tests"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_two_processes_collect_the_same_test_ids() -> None:
    first, second = _collect("1"), _collect("2")
    assert len(first) > 1000
    assert first == second, sorted(set(first) ^ set(second))[:10]


GROUPED = textwrap.dedent("""
    import pytest

    pytestmark = pytest.mark.xdist_group("many-nodes")

    @pytest.mark.parametrize("i", range(4))
    def test_grouped(i):
        pass
""")

FREE = textwrap.dedent("""
    import pytest

    @pytest.mark.parametrize("i", range(8))
    def test_free(i):
        pass
""")


HUNG = textwrap.dedent("""
    import time
    import pytest

    @pytest.mark.timeout(2)
    def test_hung():
        time.sleep(60)
""")


def test_loadgroup_keeps_a_group_on_one_worker_and_timeouts_still_fire(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(GROUPED)
    (tmp_path / "test_b.py").write_text(GROUPED)
    (tmp_path / "test_c.py").write_text(FREE)
    (tmp_path / "test_d.py").write_text(HUNG)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-n", "2",
                           "--dist", "loadgroup", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    workers = {line.split("]")[0].lstrip("[") for line in proc.stdout.splitlines()
               if "PASSED" in line and "test_grouped" in line}
    assert len(workers) == 1, out  # all eight grouped tests on one worker
    assert "16 passed" in out and "1 failed" in out, out
    assert "FAILED test_d.py::test_hung" in out and "Timeout" in out, out


def test_free_port_is_free_and_below_the_ephemeral_range() -> None:
    lo, _hi = _ephemeral_ports()
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < lo
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # really free
