"""Thread work that a trio deadline or cancellation actually stops.

Why: `trio.to_thread.run_sync` cannot interrupt a thread. With
`trio.fail_after` around it, the deadline was only noticed once the thread
had finished on its own: an audit's proof over a huge (or hostile) object
kept a worker thread hashing long after its deadline, and its caller
waiting with it.

How: the work reads its data through a `CancellableStore`, a blockstore
wrapper whose reads check a `shoal.store.cancel.CancelFlag` (the flag the
exporter and importer check too) and raise `shoal.store.cancel.Cancelled` once
the caller is cancelled.
Blocks are at most 2 MiB, so the work stops within one block's worth of
hashing, with no change to the store/ code it runs (store/ knows nothing of
trio). `run_sync_cancellable` runs it: on cancellation it raises the flag,
waits (shielded, briefly) for the thread to reach its next read and stop,
then lets trio's Cancelled (or TooSlowError) go on; the thread's own
`shoal.store.cancel.Cancelled` is dropped there, so it can never be mistaken for
lost data (it is a StoreError) by code that catches those. So no thread
outlives the task that started it. (shoal.p2p.net.node_api.run_stoppable does the
same for API requests, without a store wrapper: the exporter checks its
flag itself.)
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, TypeVar

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


async def run_sync_cancellable(work: Callable[[CancelFlag], T]) -> T:
    """Run `work(flag)` in a worker thread; cancelling the caller stops it.

    `work` must check `flag` often (e.g. read through `CancellableStore(store,
    flag)`). On cancellation the flag is set and the caller waits, shielded,
    for the thread to stop at its next check, then the cancellation goes on.
    """
    flag = CancelFlag()
    finished = threading.Event()

    def run() -> T:
        try:
            return work(flag)
        finally:
            finished.set()

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    except trio.Cancelled:
        flag.set()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(finished.wait)
        raise
