"""The suite runs on two pytest-xdist workers (scripts/test.sh): what that needs of the tests.

- Every worker collects the tests itself and xdist refuses to run unless all
  collected the same ids: a parametrize id made of bytes generated at import
  (random keys) stopped the whole run.
- Ports a test names itself (`free_port`) must not be ones that the other
  worker's nodes, listening on port 0, can be given in between.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

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


def test_free_port_is_free_and_below_the_ephemeral_range() -> None:
    lo, _hi = _ephemeral_ports()
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < lo
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # really free
