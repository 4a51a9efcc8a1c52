"""Long work shows a progress bar on a terminal and none when piped."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, SHOAL, run_shoal, shoal_env, write_random

pytestmark = pytest.mark.integration


def _put_with_stderr_on_a_terminal(repo: Path, path: Path) -> tuple[int, bytes, bytes]:
    """Run `shoal put` with stderr on a pseudo-terminal; return (code, stdout, terminal bytes)."""
    master, slave = pty.openpty()
    env = shoal_env()
    env.update(COLUMNS="100", TERM="xterm-256color")
    proc = subprocess.Popen(SHOAL + ["--repo", str(repo), "put", str(path)],
                            stdout=subprocess.PIPE, stderr=slave, env=env, cwd=PROJECT_ROOT)
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    return proc.returncode, out, bytes(seen)


def test_put_draws_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    big = tmp_path / "weights.bin"
    write_random(big, 96 * 1024 * 1024, seed=3)

    code, out, terminal = _put_with_stderr_on_a_terminal(repo, big)
    assert code == 0
    assert out.decode().startswith("added ")  # data still goes to stdout, clean
    assert b"put weights.bin" in terminal  # the bar's description, drawn on stderr
    assert b"MiB" in terminal or b"MB" in terminal  # a transfer column

    piped = run_shoal(repo, "put", str(big))
    assert piped.code == 0
    assert "put weights.bin" not in piped.err and piped.err.strip() == ""
