"""Shared/exclusive access between block writers and gc: one policy, a thread driver.

Writers (imports, fetches, pins) write blocks that become pinned only at
their end; gc and verify must not run in between, or gc would delete those
blocks. So many writers may hold the guard together (shared) and gc holds
it alone (exclusive).

`SharedExclusivePolicy` decides who may enter, and nothing else (sans-IO:
no locks, no waiting). It prefers the exclusive side: once a gc waits, new
shared holders wait behind it, so a stream of overlapping writers cannot
starve it. The price: a holder must never take the guard shared again
while it holds it (it would wait for a gc that waits for it).

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

    def may_share(self) -> bool:
        return not self.exclusive and not self.exclusive_waiting

    def enter_shared(self) -> None:
        if not self.may_share():
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
    """The policy for threads: waiting blocks the calling thread on a condition."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.policy = SharedExclusivePolicy()

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(self.policy.may_share)
            self.policy.enter_shared()
        try:
            yield
        finally:
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
