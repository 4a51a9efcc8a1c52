"""The fetch driver (p2p/exchange/fetch.py, p2p/exchange/range_fetch.py) against in-process fake
holders: a fetch that reports success has every block; its memory is bounded.

No sockets: a fake node whose connections answer WANT_BLOCK from a
MemoryBlockstore, so the driver's loop, planner and store threads run for real.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
import trio
import trio.testing

from shoal.p2p.exchange import fetch as fetch_mod
from shoal.p2p.exchange.fetch import FetchFailed, fetch_dag
from shoal.p2p.net.guard import StoreGuard
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.wire.messages import Block, BlockMissing, Message
from shoal.p2p.net.peers import PeerTable
from shoal.p2p.exchange.range_fetch import fetch_range
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import CID, RAW, block_key
from shoal.store.dag.exporter import iter_links, walk_dag
from shoal.store.dag.importer import import_bytes
from shoal.store.chunking.profiles import UNIXFS_V1_2025

pytestmark = pytest.mark.timeout(60)

PROFILE = UNIXFS_V1_2025.with_overrides(chunk_size=1024, max_links=2)


class FakeConn:
    """Answers WANT_BLOCK from `source`; `delay(key)` may hold a reply back."""

    closed = False

    def __init__(self, source: MemoryBlockstore, cids: dict[bytes, CID],
                 delay: Callable[[bytes], Any] | None = None) -> None:
        self.source, self.cids, self.delay = source, cids, delay
        self.requests: list[bytes] = []

    async def request(self, make: Callable[[int], Message], timeout: float = 0) -> list[Message]:
        msg = make(7)
        key = msg.cids[0]  # type: ignore[attr-defined]
        self.requests.append(key)
        if self.delay is not None:
            await self.delay(key)
        cid = self.cids.get(key)
        if cid is None or not self.source.has(cid):
            return [BlockMissing(7, key)]
        return [Block(7, key, self.source.get(cid))]


class FakeRepo:
    def __init__(self, store: Any) -> None:
        self.blockstore = store
        self.quarantined: list[CID] = []

    def quarantine(self, cid: CID) -> bool:
        self.quarantined.append(cid)
        self.blockstore.delete(cid)
        return True


class FakeNode:
    def __init__(self, store: Any, conns: dict[PeerId, FakeConn]) -> None:
        self.repo = FakeRepo(store)
        self.conns = conns
        self.peers = PeerTable(Identity.generate().peer_id)
        self.store_guard = StoreGuard()
        self.received_bytes = 0

    def connection_to(self, peer: PeerId) -> FakeConn | None:
        return self.conns.get(peer)

    def connected_peers(self) -> list[PeerId]:
        return list(self.conns)


def dag(size: int) -> tuple[CID, MemoryBlockstore, dict[bytes, CID]]:
    """A file DAG of `size` bytes (1 KiB leaves, 2 links a node) and every CID by key."""
    source = MemoryBlockstore()
    data = bytes((i * 7 + i // 251) % 256 for i in range(size))
    root = import_bytes(data, source, PROFILE).cid
    cids = {bytes(c): c for c, _ in walk_dag(source, root)}
    return root, source, cids


def missing(store: Any, cids: dict[bytes, CID]) -> list[CID]:
    return [c for c in cids.values() if not store.has(c)]


@pytest.mark.parametrize("walk", ["dag", "range"])
async def test_deadline_during_a_slow_local_read_loses_no_block(walk: str) -> None:
    """Issue 12 A1. Locally: the root and two inner nodes under its first
    child (A1 slow to read, A2); from the holder: everything else. A request
    deadline (of the root's second child, held back) fires while A1 is read:
    the old loop cancelled the rest of that walk, A2's leaves were never
    requested, and the fetch still reported success."""
    root, source, cids = dag(8 * 1024)  # 8 leaves -> root -> (A, B) -> (A1, A2), (B1, B2)
    a, b = iter_links(root, source.get(root))
    a1, a2 = iter_links(a, source.get(a))
    assert a1.codec.name != RAW and a2.codec.name != RAW
    a1_read = threading.Event()

    class SlowLocal(MemoryBlockstore):
        def get(self, cid: CID) -> bytes:
            if cid == a1:
                time.sleep(2.0)  # well past the 0.5 s request timeout
                a1_read.set()
            return super().get(cid)

    local = SlowLocal()
    for cid in (root, a1, a2):
        local.put(cid, source.get(cid))

    async def hold_back_b(key: bytes) -> None:
        if key == bytes(b):
            while not a1_read.is_set():
                await trio.sleep(0.05)

    holder = Identity.generate().peer_id
    node = FakeNode(local, {holder: FakeConn(source, cids, hold_back_b)})
    if walk == "dag":
        result = await fetch_dag(node, root, holders=[holder], request_timeout=0.5)  # type: ignore[arg-type]
    else:  # p2p/exchange/range_fetch.py drives the same loop: the whole file as one range
        result = await fetch_range(node, root, 0, None, holders=[holder],  # type: ignore[arg-type]
                                   request_timeout=0.5)
    assert missing(local, cids) == []
    assert result.local_blocks == 3


async def test_success_is_checked_against_the_store() -> None:
    """A block that vanishes after it was stored (a concurrent `delete`, a
    lost write) turns the fetch's success into FetchFailed naming it."""
    root, source, cids = dag(4 * 1024)
    leaf = next(c for c in cids.values() if c.codec.name == RAW)

    class Losing(MemoryBlockstore):
        def put(self, cid: CID, data: bytes) -> bool:
            return False if cid == leaf else super().put(cid, data)

    local = Losing()
    holder = Identity.generate().peer_id
    node = FakeNode(local, {holder: FakeConn(source, cids)})
    with pytest.raises(FetchFailed, match="missing"):
        await fetch_dag(node, root, holders=[holder])  # type: ignore[arg-type]
    with pytest.raises(FetchFailed, match="missing"):
        await fetch_range(node, root, 0, None, holders=[holder])  # type: ignore[arg-type]


async def test_fetch_memory_is_bounded_with_many_holders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 D16. Eight holders x 16 requests in flight against a slow
    disk: received-but-unstored bytes (delivered by the holders, not yet
    put) stay within the budget. Before, only new requests stopped at the
    cap while those in flight filled an unbounded event queue."""
    root, source, cids = dag(96 * 1024)  # 96 leaves of 1 KiB
    block_max = 1100
    monkeypatch.setattr(fetch_mod.L, "MAX_BLOCK_BYTES", block_max)
    monkeypatch.setattr(fetch_mod, "STORE_QUEUE_BYTES", 8 * block_max)
    state = {"delivered": 0, "stored": 0, "peak": 0}
    lock = threading.Lock()

    class SlowDisk(MemoryBlockstore):
        def put(self, cid: CID, data: bytes) -> bool:
            time.sleep(0.01)
            with lock:
                state["stored"] += len(data)
            return super().put(cid, data)

    async def count(key: bytes) -> None:
        await trio.sleep(0)
        with lock:
            state["delivered"] += len(source.get(cids[key]))
            state["peak"] = max(state["peak"], state["delivered"] - state["stored"])

    local = SlowDisk()
    conns = {Identity.generate().peer_id: FakeConn(source, cids, count) for _ in range(8)}
    node = FakeNode(local, conns)
    await fetch_dag(node, root, holders=list(conns))  # type: ignore[arg-type]
    assert missing(local, cids) == []
    assert state["peak"] <= 8 * block_max


async def test_corrupt_local_inner_node_is_quarantined_and_refetched() -> None:
    """Issue 12 A3: a fetch that finds a corrupt local block moves it aside
    (the repo's quarantine) and fetches a good copy."""
    root, source, cids = dag(4 * 1024)
    a = iter_links(root, source.get(root))[0]
    local = MemoryBlockstore()
    local.put(root, source.get(root))
    local.raw_put(block_key(a), b"rot")
    holder = Identity.generate().peer_id
    node = FakeNode(local, {holder: FakeConn(source, cids)})
    await fetch_dag(node, root, holders=[holder])  # type: ignore[arg-type]
    assert local.get(a) == source.get(a)
    assert node.repo.quarantined == [a]


# -- D16: the store guard and the per-object locks -----------------------------

# The store guard's writer preference (a waiting gc goes before later readers)
# is tested once, with the policy it shares with the repo: test_shared_exclusive.py.


async def test_keyed_locks_forget_unused_keys() -> None:
    """One lock per object ever seen used to stay for the node's lifetime."""
    from shoal.p2p.net.guard import KeyedLocks

    locks = KeyedLocks()
    for i in range(1000):
        async with locks.hold(f"cid{i}"):
            assert locks.locked(f"cid{i}")
    assert len(locks) == 0
    inside: list[int] = []
    go = trio.Event()

    async def user(n: int) -> None:
        async with locks.hold("same"):
            inside.append(n)
            await go.wait()
            inside.append(-n)

    async with trio.open_nursery() as nursery:
        for n in range(1, 4):
            nursery.start_soon(user, n)
        await trio.testing.wait_all_tasks_blocked()
        assert len(inside) == 1 and len(locks) == 1  # one holder, two waiting: kept
        go.set()
    assert len(locks) == 0
    for i in range(0, len(inside), 2):  # strictly one holder at a time
        assert inside[i + 1] == -inside[i]


async def test_holding_and_replication_use_pruned_locks() -> None:
    from shoal.p2p.net.guard import KeyedLocks
    from shoal.p2p.replication.holder import Holder

    holding = Holder(object(), object())  # type: ignore[arg-type]
    async with holding._lock("bafyone"):
        pass
    assert isinstance(holding._locks, KeyedLocks) and len(holding._locks) == 0


async def test_check_local_heals_a_corrupt_raw_leaf() -> None:
    """A present but corrupt raw leaf is invisible to a normal fetch walk
    (leaves are only checked for presence); `check_local` re-hashes them, so
    the owner's self-repair after a failed self-audit restores it."""
    root, source, cids = dag(4 * 1024)
    leaf = next(c for c in cids.values() if c.codec.name == RAW)
    local = MemoryBlockstore()
    for cid in cids.values():
        local.put(cid, source.get(cid))
    local.raw_put(block_key(leaf), b"rot")
    holder = Identity.generate().peer_id
    node = FakeNode(local, {holder: FakeConn(source, cids)})
    result = await fetch_dag(node, root, holders=[holder], check_local=True)  # type: ignore[arg-type]
    assert local.get(leaf) == source.get(leaf)
    assert node.repo.quarantined == [leaf] and result.fetched_blocks == 1
