"""Fixtures for every test folder: the virtual clocks.

pytest-trio's `autojump_clock` jumps virtual time to the next deadline as
soon as every task is blocked. A task waiting on a worker thread
(`trio.to_thread.run_sync`) counts as blocked, so while the thread runs the
clock leaps to the next timeout: on a busy machine (CI on 2 cores, two
pytest-xdist workers) a test then sees timeouts the code never hit. The
override below keeps the plain clock for tests without threads and fails
a test that starts one under it, naming the clock to use instead.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import trio
import trio.testing
import trio.to_thread


@pytest.fixture
def patient_autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 0.5 s of real idleness: a worker
    thread finishes (and wakes its task) long before then, so only a real
    wait on a timeout makes time jump."""
    return trio.testing.MockClock(autojump_threshold=0.5)


@pytest.fixture
def autojump_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[trio.testing.MockClock]:
    """pytest-trio's autojump clock (threshold 0), for tests without worker threads."""
    threads: list[str] = []
    real = trio.to_thread.run_sync

    async def watched(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        threads.append(getattr(fn, "__qualname__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", watched)
    yield trio.testing.MockClock(autojump_threshold=0)
    if threads:
        pytest.fail(f"worker threads ran under the plain autojump clock ({', '.join(sorted(set(threads)))}): "
                    "time leaps to the next deadline while a thread works; use `patient_autojump_clock`",
                    pytrace=False)
