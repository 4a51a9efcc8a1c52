"""Trio guards: shared/exclusive between writers and garbage collection, and
per-key locks that do not outlive their users.

StoreGuard: fetches and imports write blocks that become pinned only at the
end; gc must not run in between or it would delete them. Many writers may
hold the guard together (shared); gc holds it alone (exclusive). Who may
enter is decided by shoal.store.persist.shared_exclusive.SharedExclusivePolicy,
the same policy the repo's thread guard uses: a waiting gc goes first, so
a stream of overlapping fetches cannot starve it. The price: a task must
never take the guard shared while it already holds it (it would wait for a
gc that waits for it); nested callers pass `guard=False`
(shoal.p2p.exchange.fetch.fetch_dag). Waiting happens in the event loop,
never by blocking a thread.

KeyedLocks: one lock per key (an object's CID) for as long as anyone holds
or waits for it, then forgotten; a dictionary of locks that only grew kept
one per object ever seen, for the node's lifetime.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from shoal.store.persist.shared_exclusive import SharedExclusivePolicy


class StoreGuard:
    """The shared/exclusive policy (shoal.store.persist.shared_exclusive) for trio tasks."""

    def __init__(self) -> None:
        self.policy = SharedExclusivePolicy()
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        while not self.policy.may_share():
            await self._changed.wait()
        self.policy.enter_shared()
        try:
            yield
        finally:
            self.policy.leave_shared()
            self._notify()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self.policy.wait_exclusive()
        try:
            while not self.policy.may_take_exclusive():
                await self._changed.wait()
        except BaseException:
            self.policy.stop_waiting_exclusive()
            self._notify()  # shared waiters held back by this one may go now
            raise
        self.policy.enter_exclusive()
        try:
            yield
        finally:
            self.policy.leave_exclusive()
            self._notify()


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0  # holding or waiting


class KeyedLocks:
    """`async with locks.hold(key):` one holder per key at a time; a key's lock
    exists only while some task holds or waits for it."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def locked(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.lock.locked()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
