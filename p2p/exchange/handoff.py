"""Blocks a fetch hands straight to an export that runs at the same time.

`shoal get CID -o FILE` on a node that lacks the object fetches the DAG and
writes FILE while the blocks arrive. Reading each fetched block back from
the blockstore would cost a disk read (blocks are written past the page
cache, store/persist/direct_io.py) and a second SHA-256 per block. Instead the
fetch hands each block to the export as the very bytes it has just
hash-checked.

Order matters. The hand-off happens in the fetch's store thread *after* the
hash check and *before* the block file is written (`verified`), and every
block the fetch will request is announced first (`expect`): the export
waits for an expected block's hand-off and never looks for it in the
store, so it can never read a fetched block back (the race of the earlier
design, which handed blocks over only after the put: 10-20 % of blocks
were read back). Only verified bytes
ever reach the export. After the put, `arrived` wakes an export that waits
for a block that was not handed off (hand-off full), so it reads it from
the store, which re-hashes it on read as any export does.

Memory is bounded: at most `HANDOFF_BYTES` wait in the hand-off. When it is
full and the export is busy writing, the store thread waits for room (at
most `HANDOFF_MAX_WAIT_S` per block), so the fetch runs at the export's
pace instead of running ahead; when the export itself is waiting for a
block, nothing waits (no deadlock): the blocks it waits for are handed off
even over the cap (by one block per waiting export thread), any other goes
to the store only.

Wake-ups are targeted: an export thread waiting for a block is woken when
that block is handed off or stored (not at every other arrival), a store
thread waiting for room when the export takes a block. With several blocks
in flight from several holders, waking every waiter at every arrival cost
the gateway node futile thread switches per block (perf on
bench/gateway.py); the waits still re-check every `ARRIVAL_POLL_S`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol

from shoal.store.ipld.cid import CID
from shoal.store.errors import BlockNotFound, HashMismatch

HANDOFF_BYTES = 32 * 1024 * 1024
HANDOFF_MAX_WAIT_S = 1.0
# How often a waiting export re-checks for the end of the fetch; arrivals
# wake it at once, this only bounds how late it notices a finished fetch.
ARRIVAL_POLL_S = 0.5


class _BlockSource(Protocol):
    def get(self, cid: CID) -> bytes: ...


class ArrivingBlocks:
    """A block getter for an export that runs while the fetch is still going.

    Thread-safe: `verified` runs in the fetch's store threads, `arrived` and
    `finish` on the event loop, `get` in the export's thread(s). Once the fetch
    has ended, a missing block raises BlockNotFound as usual.
    """

    def __init__(self, store: _BlockSource) -> None:
        self._store = store
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # export threads wait here for blocks
        self._room = threading.Condition(lock)  # store threads wait here for room in the hand-off
        self._room_waiters = 0
        self._arrivals = 0
        self._done = False
        self._handoff: dict[bytes, bytes] = {}
        self._handoff_bytes = 0
        self._waiting = 0  # export threads waiting for a block
        self._wanted: dict[bytes, int] = {}  # the blocks they wait for
        self._waiting_any = 0  # of them, waiting for any arrival (their block is not expected)
        self._expected: set[bytes] = set()  # blocks the fetch will get from the swarm, not yet verified
        self._export_over = False
        self.handed_off = 0  # blocks the export took from the hand-off
        self.store_reads = 0  # blocks the export read from the store

    # -- the fetch's side -----------------------------------------------------

    def expect(self, cid: CID) -> None:
        """Event loop: the fetch is about to request this block from the swarm.

        Until it is verified, the export waits for its hand-off instead of
        looking in the store, where it could otherwise find the block just
        written and read it back (the race this module exists to close).
        """
        with self._cond:
            self._expected.add(bytes(cid))
            if self._waiting_any:
                self._cond.notify_all()

    def verified(self, cid: CID, data: bytes) -> None:
        """Store thread, after the hash check, before the block is written."""
        key = bytes(cid)
        deadline = time.monotonic() + HANDOFF_MAX_WAIT_S
        with self._cond:
            try:
                self._hand_off(key, data, deadline)
            finally:
                # Handed off or not, it is no longer only on its way: a block that
                # was not handed off is read from the store once it has arrived.
                self._expected.discard(key)
                if key in self._wanted or self._waiting_any:
                    self._cond.notify_all()

    def _hand_off(self, key: bytes, data: bytes, deadline: float) -> None:
        """(Under the lock.) Put `data` in the hand-off if there is room or the export waits for it."""
        while True:
            if self._export_over or key in self._handoff:
                return
            if self._handoff_bytes + len(data) <= HANDOFF_BYTES or key in self._wanted:
                # (the block the export waits for goes over the cap: by one block at most)
                self._handoff[key] = data
                self._handoff_bytes += len(data)
                return  # (`verified` wakes an export waiting for it)
            if self._waiting:
                return  # the export waits for some other block: never hold the fetch up then
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._room_waiters += 1
            try:
                self._room.wait(remaining)  # woken when the export takes a block or starts waiting
            finally:
                self._room_waiters -= 1

    def arrived(self) -> None:
        """A fetched block is now in the store (handed off or not)."""
        with self._cond:
            self._arrivals += 1
            if self._waiting_any:
                self._cond.notify_all()

    def finish(self) -> None:
        """The fetch has ended (complete or failed): waits end now."""
        with self._cond:
            self._done = True
            self._cond.notify_all()
            self._room.notify_all()

    # -- the export's side ----------------------------------------------------

    def export_over(self) -> None:
        """The export has ended: drop what is left and never wait for room again."""
        with self._cond:
            self._export_over = True
            self._handoff.clear()
            self._handoff_bytes = 0
            self._cond.notify_all()
            self._room.notify_all()

    def get(self, cid: CID) -> bytes:
        key = bytes(cid)
        while True:
            with self._cond:
                handed = self._handoff.pop(key, None)
                if handed is not None:
                    self._handoff_bytes -= len(handed)
                    self.handed_off += 1
                    if self._room_waiters:
                        self._room.notify_all()  # room for a store thread waiting in `verified`
                    return handed
                if key in self._expected and not self._done:
                    self._wait(key, lambda: key in self._handoff or key not in self._expected or self._done,
                               any_arrival=False)
                    continue
                seen, done = self._arrivals, self._done
            try:
                data = self._store.get(cid)
            except (BlockNotFound, HashMismatch):
                # Not fetched yet, or a corrupt local copy the fetch replaces.
                if done:
                    raise
            else:
                with self._cond:
                    self.store_reads += 1
                return data
            with self._cond:
                self._wait(key, lambda: self._arrivals != seen or self._done or key in self._handoff
                           or key in self._expected, any_arrival=True)

    def _wait(self, key: bytes, ready: "Callable[[], bool]", *, any_arrival: bool) -> None:
        """(Under the lock.) Wait for `key` until `ready()`; meanwhile the fetch hands it
        over even past the cap and never waits for room (see `verified`). `any_arrival`:
        `key` is not expected, so every arrival or announcement may be it (woken by each)."""
        self._waiting += 1
        self._waiting_any += any_arrival
        self._wanted[key] = self._wanted.get(key, 0) + 1
        if self._room_waiters:
            self._room.notify_all()  # a store thread waiting for room stops waiting
        try:
            while not ready():
                self._cond.wait(ARRIVAL_POLL_S)
        finally:
            self._waiting -= 1
            self._waiting_any -= any_arrival
            if self._wanted[key] == 1:
                del self._wanted[key]
            else:
                self._wanted[key] -= 1
