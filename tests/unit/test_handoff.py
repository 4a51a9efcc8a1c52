"""shoal.p2p.exchange.handoff.ArrivingBlocks: a fetch hands verified blocks to a running export.

Driven with plain threads standing in for the fetch's store threads and the
export's thread; no network. What must hold: the export gets exactly the
right bytes for every block whatever the arrival order; a fetched block is
never read back from the store when it was handed off first (the race the
module exists to close); memory stays bounded; nothing deadlocks.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from typing import Callable

import pytest

from shoal.p2p.exchange import handoff
from shoal.p2p.exchange.handoff import ArrivingBlocks
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.errors import BlockNotFound


def _until(condition: "Callable[[], bool]", timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class _CountingStore(MemoryBlockstore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[CID] = []  # successful reads only

    def get(self, cid: CID) -> bytes:
        data = super().get(cid)
        self.reads.append(cid)
        return data


def _blocks(n: int, size: int = 1000) -> list[tuple[CID, bytes]]:
    out = []
    for i in range(n):
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32)
        out.append((make_cid("raw", data), data))
    return out


def _fetch(arriving: ArrivingBlocks, store: MemoryBlockstore, blocks: list[tuple[CID, bytes]],
           seed: int, threads: int = 4) -> list[threading.Thread]:
    """Store threads: verify (implied), hand off, write, report arrival, in a shuffled order.

    As the real fetch does, every block is announced (`expect`) before any is requested.
    """
    for cid, _ in blocks:
        arriving.expect(cid)
    order = list(blocks)
    random.Random(seed).shuffle(order)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not order:
                    return
                cid, data = order.pop()
            arriving.verified(cid, data)
            store.put(cid, data)
            arriving.arrived()

    return [threading.Thread(target=worker) for _ in range(threads)]


@pytest.mark.parametrize("seed", range(8))
def test_export_gets_every_block_without_reading_fetched_ones_back(seed: int) -> None:
    store = _CountingStore()
    blocks = _blocks(60)
    arriving = ArrivingBlocks(store)
    got: list[bytes] = []

    def export() -> None:
        try:
            for cid, _ in blocks:  # the export walks in file order
                got.append(arriving.get(cid))
        finally:
            arriving.export_over()

    exporter = threading.Thread(target=export)
    exporter.start()
    workers = _fetch(arriving, store, blocks, seed)
    for t in workers:
        t.start()
    for t in workers:
        t.join(10)
    arriving.finish()
    exporter.join(10)
    assert not exporter.is_alive()
    assert got == [data for _, data in blocks]
    assert store.reads == []  # every fetched block came from the hand-off
    assert arriving.handed_off == len(blocks) and arriving.store_reads == 0


def test_hand_off_is_bounded_and_a_full_hand_off_falls_back_to_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for 3 blocks and an export that does not read until all 10 arrived,
    at most 3 wait in memory; the rest are read back from the store."""
    monkeypatch.setattr(handoff, "HANDOFF_BYTES", 3 * 1000)
    monkeypatch.setattr(handoff, "HANDOFF_MAX_WAIT_S", 0.01)
    store = _CountingStore()
    blocks = _blocks(10)
    arriving = ArrivingBlocks(store)
    for cid, data in blocks:
        arriving.verified(cid, data)
        store.put(cid, data)
        arriving.arrived()
        assert arriving._handoff_bytes <= 3 * 1000
    arriving.finish()
    assert [arriving.get(cid) for cid, _ in blocks] == [data for _, data in blocks]
    assert arriving.handed_off == 3 and arriving.store_reads == 7


def test_waiting_export_gets_its_block_even_when_the_hand_off_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff, "HANDOFF_BYTES", 2 * 1000)
    store = _CountingStore()
    blocks = _blocks(3)
    arriving = ArrivingBlocks(store)
    for cid, data in blocks[1:]:  # later blocks fill the hand-off first
        arriving.verified(cid, data)
    result: list[bytes] = []
    waiter = threading.Thread(target=lambda: result.append(arriving.get(blocks[0][0])))
    waiter.start()
    _until(lambda: arriving._waiting > 0)  # the export is now waiting for block 0
    arriving.verified(*blocks[0])  # full, but it is the one the export waits for
    waiter.join(5)
    assert result == [blocks[0][1]]
    assert store.reads == []  # it was not there when the export looked; then it was handed off
    assert arriving.handed_off == 1 and arriving.store_reads == 0


def test_an_expected_block_is_never_read_back_even_once_it_is_written() -> None:
    """The race: the export looks while the block is being verified and written.
    An expected block is waited for in the hand-off, never looked up in the store."""
    store = _CountingStore()
    arriving = ArrivingBlocks(store)
    ((cid, data),) = _blocks(1)
    arriving.expect(cid)
    store.put(cid, data)  # already on disk (a fast store thread) when the export asks
    result: list[bytes] = []
    export = threading.Thread(target=lambda: result.append(arriving.get(cid)))
    export.start()
    _until(lambda: arriving._waiting > 0 or bool(result))
    assert store.reads == [] and not result  # it waits for the hand-off instead of reading the file
    arriving.verified(cid, data)
    arriving.arrived()
    export.join(5)
    assert result == [data] and store.reads == []
    assert arriving.handed_off == 1 and arriving.store_reads == 0


def test_an_expected_block_that_was_not_handed_off_is_read_from_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff, "HANDOFF_BYTES", 0)  # no room at all
    monkeypatch.setattr(handoff, "HANDOFF_MAX_WAIT_S", 0.0)
    store = _CountingStore()
    arriving = ArrivingBlocks(store)
    (a, da), (b, db) = _blocks(2)
    arriving.expect(a)
    arriving.expect(b)
    arriving.verified(b, db)  # not handed off (full), no export waiting for it
    store.put(b, db)
    arriving.arrived()
    assert arriving.get(b) == db and arriving.store_reads == 1
    arriving.finish()
    with pytest.raises(BlockNotFound):  # `a` never came: the fetch's end ends the wait
        arriving.get(a)


def test_missing_block_after_the_fetch_ended_raises() -> None:
    arriving = ArrivingBlocks(_CountingStore())
    arriving.finish()
    cid, _ = _blocks(1)[0]
    with pytest.raises(BlockNotFound):
        arriving.get(cid)


def test_fetch_never_waits_for_room_after_the_export_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff, "HANDOFF_BYTES", 1000)
    monkeypatch.setattr(handoff, "HANDOFF_MAX_WAIT_S", 30.0)  # would hang the test if it waited
    arriving = ArrivingBlocks(_CountingStore())
    blocks = _blocks(3)
    arriving.verified(*blocks[0])
    arriving.export_over()
    done = threading.Event()

    def more() -> None:
        for cid, data in blocks[1:]:
            arriving.verified(cid, data)
        done.set()

    t = threading.Thread(target=more)
    t.start()
    assert done.wait(5)
    assert arriving._handoff_bytes == 0


def test_a_waiting_export_is_woken_only_by_its_own_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks arriving for others (handed off, stored) do not wake an export thread that
    waits for an expected block: one wake-up when its block comes."""
    monkeypatch.setattr(handoff, "ARRIVAL_POLL_S", 60.0)  # only notifications wake it
    store = _CountingStore()
    arriving = ArrivingBlocks(store)
    blocks = _blocks(12)
    for cid, _ in blocks:
        arriving.expect(cid)
    wakeups = 0
    real_wait = arriving._cond.wait

    def counting_wait(timeout: float | None = None) -> bool:
        nonlocal wakeups
        woken = real_wait(timeout)
        wakeups += 1
        return woken

    arriving._cond.wait = counting_wait  # type: ignore[method-assign]
    got: list[bytes] = []
    waiter = threading.Thread(target=lambda: got.append(arriving.get(blocks[-1][0])))
    waiter.start()
    _until(lambda: arriving._waiting == 1)
    for cid, data in blocks[:-1]:  # every other block: handed off and stored
        arriving.verified(cid, data)
        store.put(cid, data)
        arriving.arrived()
        time.sleep(0.005)  # a woken waiter would run meanwhile (and be counted)
    assert wakeups == 0
    arriving.verified(*blocks[-1])
    waiter.join(5)
    assert got == [blocks[-1][1]] and wakeups == 1
    assert store.reads == []
