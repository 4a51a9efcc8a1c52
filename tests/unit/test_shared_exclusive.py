"""The shared/exclusive policy (tested once, sans-IO) and its two drivers.

shoal.store.persist.shared_exclusive.SharedExclusivePolicy decides who may
enter; the repo's thread guard and the node's trio StoreGuard only wait on
it. Before, the repo's guard let new writers in while a gc waited (a
stream of overlapping imports could starve gc), unlike the node's.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.testing

from shoal.p2p.net.guard import StoreGuard
from shoal.store.persist.repo import Repo
from shoal.store.persist.shared_exclusive import SharedExclusive, SharedExclusivePolicy

pytestmark = pytest.mark.timeout(30)


def test_policy_many_shared_one_exclusive() -> None:
    p = SharedExclusivePolicy()
    p.enter_shared()
    assert p.may_share()
    p.enter_shared()
    p.wait_exclusive()
    assert not p.may_take_exclusive()  # holders still in
    p.leave_shared()
    p.leave_shared()
    assert p.may_take_exclusive()
    p.enter_exclusive()
    assert not p.may_share() and not p.may_take_exclusive()
    p.leave_exclusive()
    assert p.may_share() and p.may_take_exclusive()


def test_policy_prefers_the_waiting_exclusive() -> None:
    p = SharedExclusivePolicy()
    p.enter_shared()
    p.wait_exclusive()
    assert not p.may_share()  # a gc that waits goes before later writers
    with pytest.raises(RuntimeError):
        p.enter_shared()
    p.stop_waiting_exclusive()  # e.g. the gc was cancelled
    assert p.may_share()


def test_policy_nested_shared_passes_a_waiting_exclusive() -> None:
    """A holder entering again must not wait for a gc that waits for it."""
    p = SharedExclusivePolicy()
    p.enter_shared()
    p.wait_exclusive()
    assert not p.may_share() and p.may_share(nested=True)
    p.enter_shared(nested=True)
    assert p.shared == 2


def test_thread_guard_nested_shared_with_gc_waiting() -> None:
    guard = SharedExclusive()
    with guard.shared():
        gc_ran = threading.Event()

        def gc() -> None:
            with guard.exclusive():
                gc_ran.set()

        g = threading.Thread(target=gc)
        g.start()
        _wait_until(lambda: guard.policy.exclusive_waiting == 1)
        with guard.shared():  # nested in this thread: gets in
            assert guard.policy.shared == 2
        assert not gc_ran.is_set()
    g.join(10)
    assert gc_ran.is_set()


def test_policy_rejects_misuse() -> None:
    p = SharedExclusivePolicy()
    with pytest.raises(RuntimeError):
        p.leave_shared()
    with pytest.raises(RuntimeError):
        p.leave_exclusive()
    with pytest.raises(RuntimeError):
        p.stop_waiting_exclusive()
    p.enter_shared()
    p.wait_exclusive()
    with pytest.raises(RuntimeError):
        p.enter_exclusive()


def _wait_until(cond: Any) -> None:
    deadline = threading.Event()
    for _ in range(2000):
        if cond():
            return
        deadline.wait(0.005)
    raise AssertionError("condition never became true")


def test_thread_guard_waiting_gc_goes_before_later_writers() -> None:
    guard = SharedExclusive()
    order: list[str] = []
    release_first = threading.Event()

    def writer(name: str, hold: threading.Event | None) -> None:
        with guard.shared():
            if hold is not None:
                hold.wait(10)
            order.append(name)

    def gc() -> None:
        with guard.exclusive():
            order.append("gc")

    first = threading.Thread(target=writer, args=("first", release_first))
    first.start()
    _wait_until(lambda: guard.policy.shared == 1)
    g = threading.Thread(target=gc)
    g.start()
    _wait_until(lambda: guard.policy.exclusive_waiting == 1)
    late = threading.Thread(target=writer, args=("late", None))
    late.start()
    # The late writer must queue behind the waiting gc, not slip in.
    assert not threading.Event().wait(0.1) and guard.policy.shared == 1
    release_first.set()
    for t in (first, g, late):
        t.join(10)
    assert order == ["first", "gc", "late"]


def test_thread_guard_interrupted_exclusive_wait_lets_writers_in() -> None:
    guard = SharedExclusive()
    entered = threading.Event()
    with guard.shared():
        # A waiting gc interrupted (as KeyboardInterrupt would): simulated by a
        # condition wait that raises.
        real_wait_for = guard._cond.wait_for

        def interrupted(pred: Any, timeout: float | None = None) -> bool:
            raise KeyboardInterrupt

        guard._cond.wait_for = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            with guard.exclusive():
                pass
        guard._cond.wait_for = real_wait_for  # type: ignore[method-assign]
        assert guard.policy.exclusive_waiting == 0

        def late_writer() -> None:
            with guard.shared():
                entered.set()

        t = threading.Thread(target=late_writer)
        t.start()
        t.join(5)
        assert entered.is_set()  # not held back by the withdrawn gc


def test_repo_guard_is_the_shared_policy(tmp_path: Any) -> None:
    """Repo.writing and gc use the thread driver of the one policy."""
    repo = Repo.init(tmp_path / "repo")
    try:
        assert isinstance(repo._guard, SharedExclusive)
        with repo.writing():
            assert repo._guard.policy.shared == 1
    finally:
        repo.close()


async def test_trio_guard_uses_the_policy() -> None:
    guard = StoreGuard()
    order: list[str] = []
    release_first = trio.Event()

    async def writer(name: str, hold: trio.Event | None, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with guard.shared():
            task_status.started()
            if hold is not None:
                await hold.wait()
            order.append(name)

    async def gc(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with guard.exclusive():
            order.append("gc")

    async with trio.open_nursery() as nursery:
        await nursery.start(writer, "first", release_first)
        await nursery.start(gc)
        await trio.testing.wait_all_tasks_blocked()
        assert guard.policy.exclusive_waiting == 1
        nursery.start_soon(writer, "late", None)
        await trio.testing.wait_all_tasks_blocked()
        assert guard.policy.shared == 1
        release_first.set()
    assert order == ["first", "gc", "late"]


async def test_trio_cancelled_exclusive_wait_withdraws() -> None:
    guard = StoreGuard()
    async with guard.shared():
        with trio.move_on_after(0.05):
            async with guard.exclusive():
                pass
        assert guard.policy.exclusive_waiting == 0
        async with guard.shared():  # not held back by the withdrawn gc
            assert guard.policy.shared == 2
