"""tests/conftest.py: the plain autojump clock refuses worker threads.

Under pytest-trio's autojump clock a task waiting on `trio.to_thread`
counts as blocked, so virtual time leaps to the next deadline while the
thread works; such tests passed on a quiet machine and failed in CI. The
conftest's `autojump_clock` fails a test that starts a thread and names
`patient_autojump_clock`, which works with threads.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import PROJECT_ROOT

INNER = textwrap.dedent("""
    import trio

    async def test_thread_under_the_plain_clock(autojump_clock):
        await trio.to_thread.run_sync(lambda: None)

    async def test_thread_under_the_patient_clock(patient_autojump_clock):
        await trio.to_thread.run_sync(lambda: None)

    async def test_timeouts_without_threads_jump(autojump_clock):
        await trio.sleep(3600)
        assert trio.current_time() >= 3600
""")


def test_a_worker_thread_under_the_plain_autojump_clock_fails_the_test(tmp_path: Path) -> None:
    # The real conftest beside an inner test module, run by a pytest of its own.
    shutil.copy(PROJECT_ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(INNER)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "trio_mode=true",
         "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    # All three bodies pass; the plain-clock one with a thread errors at teardown.
    assert "3 passed, 1 error" in out, out
    assert "ERROR test_inner.py::test_thread_under_the_plain_clock" in out, out
    assert "use `patient_autojump_clock`" in out, out
