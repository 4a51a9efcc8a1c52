"""Thread work that a trio deadline or cancellation actually stops.

Why: `trio.to_thread.run_sync` cannot interrupt a thread. With
`trio.fail_after` around it, the deadline was only noticed once the thread
had finished on its own: an audit's proof over a huge (or hostile) object
kept a worker thread hashing long after its deadline, and its caller
waiting with it.

How: the work checks a `shoal.store.cancel.CancelFlag` (the flag the
exporter and importer check), or reads its data through a
`CancellableStore`, a blockstore wrapper whose every read checks it and
raises `shoal.store.cancel.Cancelled` once the caller is cancelled. Blocks
are at most 2 MiB, so the work stops within one block's worth of hashing,
with no change to the store/ code it runs (store/ knows nothing of trio).
`run_sync_cancellable` runs it: on cancellation it sets the flag and waits
for the thread to return, then lets trio's Cancelled (or TooSlowError) go
on; the thread's own `Cancelled` is dropped there, so it can never be
mistaken for lost data (it is a StoreError) by code that catches those. So
no thread outlives the task that started it, and nothing it writes (a
put's blocks, an export's files) or a lock held around the call (the store
guard) outlives it either. It is the one way the node runs long thread
work: API requests (put, get's export), audits and the holder's commitment
passes (with their own small thread limiter).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, TypeVar

import outcome
import trio

from shoal.store.cancel import CancelFlag
from shoal.store.ipld.cid import CID

T = TypeVar("T")


class CancellableStore:
    """A blockstore view whose every read first checks the flag."""

    def __init__(self, store: Any, flag: CancelFlag) -> None:
        self._store = store
        self._flag = flag

    def get(self, cid: CID) -> bytes:
        self._flag.check()
        data: bytes = self._store.get(cid)
        return data

    def has(self, cid: CID) -> bool:
        self._flag.check()
        return bool(self._store.has(cid))

    def size(self, cid: CID) -> int:
        self._flag.check()
        return int(self._store.size(cid))

    def keys(self) -> Iterator[str]:
        for key in self._store.keys():
            self._flag.check()
            yield key

    def __getattr__(self, name: str) -> Any:  # writes and the rest: as the store does
        return getattr(self._store, name)


async def run_sync_cancellable(work: Callable[[CancelFlag], T], *,
                               limiter: trio.CapacityLimiter | None = None,
                               reason: str = "cancelled") -> T:
    """Run `work(flag)` in a worker thread; cancelling the caller stops it.

    `work` must check `flag` often (e.g. read through `CancellableStore(store,
    flag)`). On cancellation the flag is set (with `reason`) and the caller
    waits for the thread to return at its next check, then the cancellation
    goes on. The thread is never abandoned, so the wait needs no second
    thread (and no token of a limiter another thread may hold). `limiter`:
    the threads to take the worker from (trio's default if None); a caller
    cancelled while waiting for one ran nothing.
    """
    flag = CancelFlag()
    box: list[outcome.Outcome[T]] = []

    async def run(done: trio.CancelScope) -> None:
        # Not outcome.acapture: trio's Cancelled (while waiting for a thread)
        # must travel as itself, not be stored and raised elsewhere.
        try:
            value = await trio.to_thread.run_sync(work, flag, limiter=limiter)
        except Exception as exc:
            box.append(outcome.Error(exc))
        else:
            box.append(outcome.Value(value))
        done.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, nursery.cancel_scope)
        try:
            await trio.sleep_forever()
        finally:
            if not box:
                flag.set(reason)
    return box[0].unwrap()
