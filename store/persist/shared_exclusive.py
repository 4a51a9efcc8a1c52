"""Shared/exclusive access between block writers and gc: one policy, a thread driver.

Writers (imports, fetches, pins) write blocks that become pinned only at
their end; gc and verify must not run in between, or gc would delete those
blocks. So many writers may hold the guard together (shared) and gc holds
it alone (exclusive).

`SharedExclusivePolicy` decides who may enter, and nothing else (sans-IO:
no locks, no waiting). It prefers the exclusive side: once a gc waits, new
shared holders wait behind it, so a stream of overlapping writers cannot
starve it. A holder that takes the guard shared again while it holds it
(`nested=True`) always gets in: it would otherwise wait for a gc that waits
for it. The thread driver knows which threads hold it and says so; the
trio driver does not track tasks, so its callers never nest (they pass
`guard=False` instead).

Two thin drivers wait on it: `SharedExclusive` below for threads (the
repo's, `Repo.writing` / gc / verify), and shoal.p2p.net.guard.StoreGuard
for trio tasks (the node's). They differ only in how they sleep.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["SharedExclusivePolicy", "SharedExclusive"]


class SharedExclusivePolicy:
    """The state of one guard and the rules for entering it.

    A driver calls `may_share()` / `may_take_exclusive()` to decide whether
    a waiter may go now, the `enter_*` / `leave_*` methods when it does,
    and wakes its waiters after every `leave_*` or `stop_waiting_exclusive`.
    An exclusive waiter announces itself with `wait_exclusive()` before its
    first check and leaves that state by `enter_exclusive()` or
    `stop_waiting_exclusive()` (e.g. cancelled while waiting).
    """

    def __init__(self) -> None:
        self.shared = 0  # holders now
        self.exclusive = False
        self.exclusive_waiting = 0

    def may_share(self, nested: bool = False) -> bool:
        """`nested`: the caller holds the guard shared already (so no exclusive holder exists)."""
        return not self.exclusive and (nested or not self.exclusive_waiting)

    def enter_shared(self, nested: bool = False) -> None:
        if not self.may_share(nested):
            raise RuntimeError("shared entry while exclusive is held or waited for")
        self.shared += 1

    def leave_shared(self) -> None:
        if self.shared <= 0:
            raise RuntimeError("leave_shared without a shared holder")
        self.shared -= 1

    def wait_exclusive(self) -> None:
        self.exclusive_waiting += 1

    def stop_waiting_exclusive(self) -> None:
        if self.exclusive_waiting <= 0:
            raise RuntimeError("no exclusive waiter to withdraw")
        self.exclusive_waiting -= 1

    def may_take_exclusive(self) -> bool:
        return not self.exclusive and self.shared == 0

    def enter_exclusive(self) -> None:
        if not self.may_take_exclusive():
            raise RuntimeError("exclusive entry while the guard is held")
        self.stop_waiting_exclusive()
        self.exclusive = True

    def leave_exclusive(self) -> None:
        if not self.exclusive:
            raise RuntimeError("leave_exclusive without the exclusive holder")
        self.exclusive = False


class SharedExclusive:
    """The policy for threads: waiting blocks the calling thread on a condition.

    A thread may nest `shared()` (e.g. `Repo.pin_add` inside `Repo.writing`):
    the inner entry is nested and never waits behind a waiting gc.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.policy = SharedExclusivePolicy()
        self._held = threading.local()  # .depth: this thread's shared entries

    @contextmanager
    def shared(self) -> Iterator[None]:
        depth: int = getattr(self._held, "depth", 0)
        nested = depth > 0
        with self._cond:
            self._cond.wait_for(lambda: self.policy.may_share(nested))
            self.policy.enter_shared(nested)
        self._held.depth = depth + 1
        try:
            yield
        finally:
            self._held.depth = depth
            with self._cond:
                self.policy.leave_shared()
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self.policy.wait_exclusive()
            try:
                self._cond.wait_for(self.policy.may_take_exclusive)
            except BaseException:  # e.g. KeyboardInterrupt while waiting
                self.policy.stop_waiting_exclusive()
                self._cond.notify_all()  # shared waiters held back by this one may go now
                raise
            self.policy.enter_exclusive()
        try:
            yield
        finally:
            with self._cond:
                self.policy.leave_exclusive()
                self._cond.notify_all()
