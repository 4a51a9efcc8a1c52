"""Helpers shared by tests: run the real `shoal` command as a subprocess."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent

MANY_NODES = pytest.mark.xdist_group("many-nodes")
"""For a whole module (`pytestmark`) whose tests start swarms of nodes or need
the machine's cores for themselves. scripts/test.sh runs 2 pytest-xdist
workers with `--dist loadgroup`: every test of this group runs on one worker,
one after another, so two swarms never share the 2 cores of CI, while the
other worker runs the rest."""


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()


def shoal_env(repo: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SHOAL_REPO", None)
    if repo is not None:
        env["SHOAL_REPO"] = str(repo)
    return env


def run_shoal(repo: Path | None, *args: str, timeout: float = 120, input: bytes | None = None) -> Result:
    """Run `shoal --repo REPO ARGS...` and capture its output."""
    cmd = list(SHOAL)
    if repo is not None:
        cmd += ["--repo", str(repo)]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                          env=shoal_env(), cwd=PROJECT_ROOT)
    return Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


def assert_one_line_error(result: Result) -> None:
    """A user error: non-zero exit, no traceback, one message line (+ optional hint)."""
    assert result.code != 0, result
    assert "Traceback" not in result.err, result.err
    lines = [l for l in result.err.splitlines() if l.strip()]
    assert lines and lines[0].startswith("shoal: error: "), result.err
    assert all(l.startswith("hint: ") for l in lines[1:]), result.err


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes for a seed (fast: C-level getrandbits)."""
    import random

    rng = random.Random(seed)
    step = 1 << 24  # randbytes overflows a C int past 256 MiB at once
    return b"".join(rng.randbytes(min(step, size - i)) for i in range(0, size, step))


def write_random(path: Path, size: int, seed: int = 0) -> bytes:
    """Write `random_bytes(size, seed)` to `path` and return them."""
    data = random_bytes(size, seed)
    path.write_bytes(data)
    return data


def _ephemeral_ports() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A loopback TCP port that is free now and lies below the kernel's ephemeral range.

    Why: a test that must name a port (in a config file, or to restart a node
    at the same address) picks one, lets it go, and a node binds it a moment
    later. The kernel's own pick for port 0 lies in the ephemeral range,
    where any process's next port-0 listener or outgoing connection (the
    other pytest-xdist worker's nodes) may take it in between. Below that
    range only another explicit pick can, and picks are random.
    """
    lo, _hi = _ephemeral_ports()
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(10_000, lo) if lo > 11_000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free loopback port below the ephemeral range")
