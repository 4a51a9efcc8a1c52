"""The Bitswap trio driver (shoal.p2p.bitswap.driver) over in-memory streams.

Two (or three) `Bitswap` nodes are joined by trio's one-way memory streams,
exactly as they will be joined by yamux streams: each sends on a stream it
owns and reads the other's. Timeouts run on trio's MockClock (autojump), so
no test waits in real time; the driver reads blocks in worker threads, so
the tests that wait on timeouts use tests/conftest.py's patient clock.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from trio.testing import memory_stream_one_way_pair

from shoal.p2p.bitswap.driver import Bitswap
from shoal.p2p.bitswap.message import PROTOCOL_1_1_0, PROTOCOL_1_2_0
from shoal.store.ipld.cid import make_cid


class Source:
    """A dict store; `corrupt` CIDs are claimed but fail their read (as a quarantined block)."""

    def __init__(self, blobs: tuple[bytes, ...] | list[bytes] = (), corrupt: frozenset[bytes] = frozenset()) -> None:
        self.blocks = {bytes(make_cid("raw", b)): b for b in blobs}
        self.corrupt = corrupt
        self.reads = 0

    def has(self, cid: bytes) -> bool:
        return cid in self.blocks

    def size(self, cid: bytes) -> int | None:
        return len(self.blocks[cid]) if cid in self.blocks else None

    def get(self, cid: bytes) -> bytes | None:
        self.reads += 1
        return None if cid in self.corrupt else self.blocks.get(cid)


def cid_of(data: bytes) -> bytes:
    return bytes(make_cid("raw", data))


async def join(nursery: trio.Nursery, a: Bitswap, a_name: str, b: Bitswap, b_name: str,
               protocol: str = PROTOCOL_1_2_0) -> None:
    a_to_b_send, a_to_b_recv = memory_stream_one_way_pair()
    b_to_a_send, b_to_a_recv = memory_stream_one_way_pair()
    await nursery.start(a.run_peer, b_name, protocol, a_to_b_send, b_to_a_recv)
    await nursery.start(b.run_peer, a_name, protocol, b_to_a_send, a_to_b_recv)


async def test_fetch_every_block_from_two_providers() -> None:
    rng = random.Random(3)
    blobs = [rng.randbytes(rng.randint(0, 300_000)) for _ in range(40)]
    a = Bitswap(Source(blobs[:25]))
    c = Bitswap(Source(blobs[15:]))
    b = Bitswap(Source())
    async with trio.open_nursery() as nursery:
        await join(nursery, a, "A", b, "B")
        await join(nursery, c, "C", b, "B")
        result = await b.fetch([cid_of(x) for x in blobs])
        await trio.testing.wait_all_tasks_blocked()
        # Every want was answered or cancelled: no provider keeps a stale one.
        assert a.engine.total_entries == 0 and c.engine.total_entries == 0
        nursery.cancel_scope.cancel()
    assert result.blocks == {cid_of(x): x for x in blobs}
    assert result.missing == () and result.bad_peers == []


async def test_missing_and_corrupt_blocks_end_as_missing_quickly() -> None:
    blobs = [b"one", b"two", b"three"]
    a = Bitswap(Source(blobs, corrupt=frozenset({cid_of(b"two")})))
    b = Bitswap(Source())
    absent = cid_of(b"absent")
    async with trio.open_nursery() as nursery:
        await join(nursery, a, "A", b, "B")
        with trio.fail_after(1):  # DONT_HAVE answers: no timeout is waited for (MockClock-free)
            result = await b.fetch([cid_of(x) for x in blobs] + [absent])
        nursery.cancel_scope.cancel()
    assert set(result.blocks) == {cid_of(b"one"), cid_of(b"three")}
    assert result.missing == (cid_of(b"two"), absent)


async def test_a_1_1_0_peer_is_served_blocks_and_fetched_from_with_timeouts(
        patient_autojump_clock: trio.testing.MockClock) -> None:
    a = Bitswap(Source([b"old peer block"]), timeout_s=5.0)
    b = Bitswap(Source(), timeout_s=5.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await join(nursery, a, "A", b, "B", protocol=PROTOCOL_1_1_0)
        result = await b.fetch([cid_of(b"old peer block"), cid_of(b"nobody")])
        nursery.cancel_scope.cancel()
    assert result.blocks == {cid_of(b"old peer block"): b"old peer block"}
    assert result.missing == (cid_of(b"nobody"),)
    assert trio.current_time() - start >= 3 * 5.0  # 1.1.0 says nothing: three timeouts, then given up


async def test_a_peer_that_sends_garbage_is_dropped_and_the_fetch_ends() -> None:
    b = Bitswap(Source())
    to_b_send, to_b_recv = memory_stream_one_way_pair()
    from_b_send, from_b_recv = memory_stream_one_way_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run_peer, "X", PROTOCOL_1_2_0, from_b_send, to_b_recv)
        assert b.peers() == ["X"]

        async def fetch() -> None:
            result = await b.fetch([cid_of(b"wanted")])
            assert result.missing == (cid_of(b"wanted"),)

        nursery.start_soon(fetch)
        await trio.testing.wait_all_tasks_blocked()
        sent = await from_b_recv.receive_some()
        assert sent  # our want went out
        await to_b_send.send_all(b"\xff\xff\xff\xff\xff\xff")  # an impossible length prefix
        with trio.fail_after(1):
            while b.peers():
                await trio.sleep(0.01)
    assert b.peers() == []


async def test_blocks_added_later_reach_the_peer_that_wanted_them(
        patient_autojump_clock: trio.testing.MockClock) -> None:
    source = Source()
    a = Bitswap(source)
    b = Bitswap(Source(), timeout_s=60.0)
    late = b"arrives late"
    async with trio.open_nursery() as nursery:
        # 1.1.0: A cannot say DONT_HAVE, so B's want simply waits at A.
        await join(nursery, a, "A", b, "B", protocol=PROTOCOL_1_1_0)

        async def add_later() -> None:
            await trio.sleep(10)
            assert a.engine.ledger_size("B") == 1
            source.blocks[cid_of(late)] = late
            await a.blocks_added([cid_of(late)])

        nursery.start_soon(add_later)
        start = trio.current_time()
        result = await b.fetch([cid_of(late)])
        nursery.cancel_scope.cancel()
    assert result.blocks == {cid_of(late): late}
    assert 10 <= trio.current_time() - start < 60  # pushed when added, not re-wanted after a timeout
