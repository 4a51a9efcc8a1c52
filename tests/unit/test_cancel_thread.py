"""Issue 12 D16: `fail_after` around thread work stops the work, not only the wait.

An audit's prover builds the commitment (a pass over the whole object) and
the proof in worker threads under the challenge's deadline. Before, the
deadline was noticed only once the thread had finished on its own; now the
thread reads through a CancellableStore and stops at its next block.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from shoal.p2p.net.thread_work import CancellableStore, run_sync_cancellable
from shoal.store.cancel import CancelFlag, Cancelled
from shoal.p2p.replication.holder import Holder
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.dag.importer import import_bytes
from shoal.store.chunking.profiles import UNIXFS_V1_2025
from shoal.store.proofs.commitment import Commitment

pytestmark = pytest.mark.timeout(60)


class SlowStore(MemoryBlockstore):
    """Every read takes 50 ms and is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self._count = threading.Lock()

    def get(self, cid: CID) -> bytes:
        time.sleep(0.05)
        with self._count:
            self.reads += 1
        return super().get(cid)


async def test_cancelled_thread_work_stops_at_its_next_read() -> None:
    store = SlowStore()
    cid = make_cid("raw", b"block")
    store.put(cid, b"block")

    def work(flag: CancelFlag) -> int:
        view = CancellableStore(store, flag)
        for _ in range(1000):  # 50 s if nothing stops it
            view.get(cid)
        return 1000

    start = time.monotonic()
    with trio.move_on_after(0.3) as scope:
        await run_sync_cancellable(work)
    assert scope.cancelled_caught
    stopped_at = store.reads
    await trio.sleep(0.3)
    assert store.reads == stopped_at  # the thread stopped; it was not just abandoned
    assert time.monotonic() - start < 5
    assert stopped_at < 100


async def test_uncancelled_work_returns_its_value_and_errors() -> None:
    assert await run_sync_cancellable(lambda flag: 42) == 42
    flag = CancelFlag()
    flag.set()
    with pytest.raises(Cancelled):
        CancellableStore(MemoryBlockstore(), flag).has(make_cid("raw", b"x"))

    def boom(flag: CancelFlag) -> None:
        raise ValueError("inner")

    with pytest.raises(ValueError, match="inner"):
        await run_sync_cancellable(boom)


async def test_audit_tree_build_stops_at_the_deadline(tmp_path: Path) -> None:
    """The prover's commitment pass (Holder.tree) under `fail_after`: it used
    to keep hashing (here 64 reads x 50 ms) long after the deadline."""
    store = SlowStore()
    data = bytes(i % 251 for i in range(64 * 1024))
    root = import_bytes(data, store, UNIXFS_V1_2025.with_overrides(chunk_size=1024, max_links=1024)).cid
    node: Any = SimpleNamespace(repo=SimpleNamespace(path=tmp_path, blockstore=store), peer_id=None)
    holding = Holder(node, SimpleNamespace())  # type: ignore[arg-type]
    commitment = Commitment(b"\0" * 32, len(data), 4096)  # never on disk: a full pass is needed
    manifest: Any = SimpleNamespace(commitment=commitment)
    start = time.monotonic()
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(0.3):
            await holding.tree(str(root), manifest)
    stopped_at = store.reads
    await trio.sleep(0.3)
    assert store.reads == stopped_at
    assert time.monotonic() - start < 2.5  # the full pass takes > 3 s


async def test_one_runner_for_api_audit_and_heavy_work() -> None:
    """The API's `run_stoppable` and the holder's `run_heavy` are
    `run_sync_cancellable` (one implementation): a limiter caps the threads,
    and a caller cancelled while waiting for one never runs its work."""
    from shoal.p2p.net import node_api

    assert await node_api.run_stoppable(lambda flag: 7) == 7
    limiter = trio.CapacityLimiter(1)
    release = threading.Event()
    ran: list[str] = []

    def hold(flag: CancelFlag) -> None:
        ran.append("hold")
        while not release.is_set():
            flag.check()
            time.sleep(0.01)

    def second(flag: CancelFlag) -> None:
        ran.append("second")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_sync_cancellable(hold, limiter=limiter))
        await trio.sleep(0.1)
        with trio.move_on_after(0.2) as waited:
            await run_sync_cancellable(second, limiter=limiter)
        assert waited.cancelled_caught
        release.set()
    assert ran == ["hold"]

    flags: list[CancelFlag] = []

    def spin(flag: CancelFlag) -> None:
        flags.append(flag)
        while True:
            flag.check()
            time.sleep(0.01)

    with trio.move_on_after(0.2):
        await run_sync_cancellable(spin, reason="why it stopped")
    assert flags[0].is_set() and flags[0].reason == "why it stopped"
