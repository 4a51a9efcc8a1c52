"""LaneDispatcher.get_block: the gateway's reader asks lanes for one block and gets its bytes.

Against tests/unit/test_laned_dispatch.py's fake pool (lanes in memory that
verify and store), here returning the bytes when a job asks for them
(`want_data`), as the real lanes do over their control channel. The reader
reads the file with the exporter's read-ahead in worker threads, as the
gateway does (shoal.p2p.gateway.lane_blocks).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from shoal.p2p.exchange.fetch import FetchFailed
from shoal.p2p.exchange.laned import LaneDispatcher
from shoal.p2p.lanes.api import LaneJob, LaneResult, Outcome
from shoal.store.dag import exporter
from shoal.store.errors import BlockNotFound
from shoal.store.ipld.cid import CID
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.cancel import CancelFlag
from tests.helpers import random_bytes
from tests.unit.test_laned_dispatch import FakePool, Peers, _addrs, _holders_with


class DataPool(FakePool):
    """The fake lanes, handing the verified bytes back when the job wants them."""

    async def run_job(self, job: LaneJob) -> LaneResult:
        result = await super().run_job(job)
        if result.outcome is Outcome.OK and job.want_data:
            return LaneResult(Outcome.OK, result.size, self.local.get(job.cid))
        return result


async def _read(pool: DataPool, holders: list[Any], root: CID, **kw: Any) -> tuple[bytes, LaneDispatcher, Peers]:
    """Read the file `root` as the gateway does: store first, else `get_block` (bytes handed back)."""
    peers = Peers()
    dispatcher = LaneDispatcher(pool, holders, lane_addrs=_addrs, store=pool.local, peers=peers, **kw)
    token: list[trio.lowlevel.TrioToken] = []

    def get(cid: CID) -> bytes:
        try:
            return pool.local.get(cid)
        except BlockNotFound:
            pass
        data = trio.from_thread.run(dispatcher.get_block, cid, trio_token=token[0])
        return data if data is not None else pool.local.get(cid)

    body, error = b"", None
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        token.append(trio.lowlevel.current_trio_token())
        try:
            body = await trio.to_thread.run_sync(
                lambda: b"".join(exporter.read_file(get, root, prefetch=exporter.PREFETCH_BLOCKS)))
        except Exception as exc:  # raised outside the nursery, as the gateway's response does
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return body, dispatcher, peers


async def test_a_reader_gets_every_block_from_lanes_with_the_bytes() -> None:
    data = random_bytes(30_000, seed=5)
    root, _inner, remote = _holders_with(data, 2)
    pool = DataPool(MemoryBlockstore(), remote)  # we hold nothing, not even the inner nodes
    body, dispatcher, _ = await _read(pool, list(remote), root)
    assert body == data
    assert pool.jobs and all(job.want_data and job.store and not job.sinks for job in pool.jobs)
    assert dispatcher.stats.fetched_blocks == len({bytes(j.cid) for j in pool.jobs})
    assert {job.holder for job in pool.jobs} == set(remote)


async def test_a_lying_holder_is_dropped_and_the_read_completes_from_the_other() -> None:
    data = random_bytes(30_000, seed=6)
    root, _inner, remote = _holders_with(data, 2)
    liar, honest = list(remote)
    pool = DataPool(MemoryBlockstore(), remote)
    pool.liars.add(liar)
    body, dispatcher, peers = await _read(pool, [liar, honest], root)
    assert body == data
    assert dispatcher.stats.outcomes["corrupt"] == 1  # caught on its first block, then dropped
    assert liar not in dispatcher.planner.holders
    assert peers.recs[liar].reputation.corrupt == 1 and peers.recs[honest].reputation.corrupt == 0


async def test_a_killed_lane_is_retried_for_the_reader() -> None:
    data = random_bytes(20_000, seed=7)
    root, _inner, remote = _holders_with(data, 1)
    pool = DataPool(MemoryBlockstore(), remote)
    died: set[bytes] = set()

    def die_once(job: LaneJob) -> Outcome | None:
        if bytes(job.cid) not in died:
            died.add(bytes(job.cid))
            return Outcome.LANE_DIED
        return None

    pool.fail = die_once
    body, dispatcher, _ = await _read(pool, list(remote), root)
    assert body == data
    assert dispatcher.stats.outcomes["lane_died"] == len(died) > 0


async def test_a_block_no_holder_gives_fails_the_read() -> None:
    data = random_bytes(20_000, seed=8)
    root, _inner, remote = _holders_with(data, 2)
    pool = DataPool(MemoryBlockstore(), remote)
    pool.fail = lambda job: Outcome.MISSING if job.cid.codec.name == "raw" else None
    with pytest.raises(FetchFailed):
        await _read(pool, list(remote), root)


async def test_readers_of_one_block_share_one_job() -> None:
    data = random_bytes(5_000, seed=9)
    root, _inner, remote = _holders_with(data, 1)
    pool = DataPool(MemoryBlockstore(), remote)
    dispatcher = LaneDispatcher(pool, list(remote), lane_addrs=_addrs, store=pool.local, peers=Peers())
    got: list[bytes | None] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        async with trio.open_nursery() as readers:
            for _ in range(3):
                readers.start_soon(lambda: _append(got, dispatcher.get_block(root)))
        assert await dispatcher.get_block(root) is None  # stored by then: read it from the store
        nursery.cancel_scope.cancel()
    assert len(pool.jobs) == 1
    assert got and all(g == pool.local.get(root) for g in got)


async def _append(out: list[bytes | None], coro: Any) -> None:
    out.append(await coro)


async def test_a_reader_waiting_when_the_dispatcher_stops_is_released() -> None:
    data = random_bytes(5_000, seed=10)
    root, _inner, remote = _holders_with(data, 1)
    pool = DataPool(MemoryBlockstore(), remote)
    stuck = CancelFlag()
    pool.hang = stuck  # the job never answers
    dispatcher = LaneDispatcher(pool, list(remote), lane_addrs=_addrs, store=pool.local, peers=Peers())
    errors: list[BaseException] = []

    async def reader() -> None:  # outside the dispatcher's nursery, as a thread's from_thread call is
        try:
            await dispatcher.get_block(root)
        except FetchFailed as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as nursery:
                await nursery.start(dispatcher.run)
                outer.start_soon(reader)
                while not stuck.is_set():
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()  # the response ended
    assert len(errors) == 1
    with pytest.raises(FetchFailed):
        await dispatcher.get_block(root)


def test_the_control_channel_carries_a_block_of_the_exchanges_largest_size() -> None:
    """A want_data Result holds up to the exchange's largest block (what a holder may send), no more."""
    from shoal.p2p.errors import ControlProtocolError
    from shoal.p2p.lanes import control as C
    from shoal.p2p.wire import limits as L

    data = random_bytes(L.MAX_BLOCK_BYTES, seed=11)
    wire = C.encode(C.Result.from_result(7, LaneResult(Outcome.OK, len(data), data, "x" * 2000)))
    assert len(wire) <= C.MAX_CONTROL_FRAME + 4
    decoder = C.ControlDecoder()
    got: list[C.ControlMessage] = []
    for i in range(0, len(wire), 200_000):  # as the socket hands it over, in pieces
        got += decoder.feed(wire[i:i + 200_000])
    (msg,) = got
    assert isinstance(msg, C.Result) and msg.to_result().data == data
    with pytest.raises(ControlProtocolError):
        C.Result(8, "ok", L.MAX_BLOCK_BYTES, data + b"!", "")
