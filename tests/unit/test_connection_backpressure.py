"""A peer that stops reading: the per-connection send budget, the stall
timeout that closes such a connection, and the `[node.limits]` settings.

Driver tests over trio's in-memory streams: `lockstep_stream_pair` blocks a
send until the other side reads, which is exactly a peer that never does.
"""

from __future__ import annotations

from typing import Sequence

import pytest
import trio
from trio.testing import lockstep_stream_pair

from shoal.p2p.wire import limits as L
from shoal.p2p.net.connection import PeerConnection, SendBudget
from shoal.p2p.errors import P2PError
from shoal.p2p.secure.identity import Identity
from shoal.p2p.wire.messages import Message, Ping
from shoal.p2p.net.node_config import NodeLimits

MiB = 1024 * 1024


async def test_send_budget_waits_for_room_and_caps_a_single_request() -> None:
    budget = SendBudget(8 * MiB)
    assert await budget.acquire(6 * MiB) == 6 * MiB
    got: list[int] = []

    async def second() -> None:
        got.append(await budget.acquire(4 * MiB))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [] and budget.used == 6 * MiB  # 6 + 4 > 8: it waits
        budget.release(6 * MiB)
    assert got == [4 * MiB] and budget.used == 4 * MiB
    # More than the whole budget takes the whole budget (once it is free).
    budget.release(4 * MiB)
    assert await budget.acquire(100 * MiB) == 8 * MiB
    with pytest.raises(P2PError):
        SendBudget(L.MAX_FRAME_BYTES - 1)


async def _no_handler(conn: PeerConnection, msg: Message) -> Sequence[Message]:
    return []


async def test_a_send_that_makes_no_progress_closes_the_connection(autojump_clock: trio.abc.Clock) -> None:
    ours, theirs = lockstep_stream_pair()  # `theirs` is never read
    conn = PeerConnection(ours, Identity.generate().peer_id, _no_handler, stall_timeout=7.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        started = trio.current_time()
        with pytest.raises(trio.BrokenResourceError):
            await conn.send(Ping(1, b"anyone?"))
        assert trio.current_time() - started == pytest.approx(7.0)
        assert conn.stalled and conn.closed
        # Later sends fail at once instead of queueing behind the dead one.
        with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
            await conn.send(Ping(2, b"still?"))
    await theirs.aclose()


async def test_a_slow_but_moving_reader_is_not_cut_off(autojump_clock: trio.abc.Clock) -> None:
    ours, theirs = lockstep_stream_pair()
    conn = PeerConnection(ours, Identity.generate().peer_id, _no_handler, stall_timeout=7.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)

        async def slow_reader() -> None:
            while True:
                await trio.sleep(5.0)  # each frame is read within the stall timeout
                if not await theirs.receive_some(1 << 20):
                    return

        nursery.start_soon(slow_reader)
        for i in range(1, 4):
            await conn.send(Ping(i, b"x"))
        assert not conn.stalled and not conn.closed
        nursery.cancel_scope.cancel()


def test_node_limits_from_config() -> None:
    assert NodeLimits.from_config(None) == NodeLimits()
    lim = NodeLimits.from_config({"max_connections_per_ip": 4, "max_handshakes_per_ip": 2,
                                  "send_stall_timeout": 5, "send_budget": 16 * MiB, "new_connection_grace": 0})
    assert lim.admission.max_connections_per_ip == 4 and lim.admission.max_handshakes_per_ip == 2
    assert lim.send_stall_timeout_s == 5.0 and lim.send_budget_bytes == 16 * MiB
    assert lim.admission.grace_s == 0.0
    for bad in ({"max_conections": 3}, {"max_connections_per_ip": 2.5}, {"max_connections_per_ip": True},
                {"send_stall_timeout": "10"}, {"send_budget": 1024}, {"max_handshakes": 0}, "not a table"):
        with pytest.raises(P2PError):
            NodeLimits.from_config(bad)
