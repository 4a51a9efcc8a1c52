"""What makes an inbound connection "useful" for eviction
(shoal.p2p.net.admission): answers that carry data we asked for (a block, an
audit proof), not the Pong or Peers reply that every connected key, a
throwaway one included, gives for free to the node's own periodic peer
exchange. Counted those, a flood of idle strangers ranked with the peers
that serve us."""

from __future__ import annotations

from typing import Awaitable, Callable, Sequence

import pytest
import trio
import trio.testing

from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.secure.identity import Identity
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import (
    Block, GetPeers, Hello, Message, Peers, Ping, Pong, WantBlock, WantHave, Have,
)

CID = b"\x01\x55\x12\x20" + bytes(32)


async def stranger(conn: PeerConnection, msg: Message) -> Sequence[Message]:
    rid = msg.request_id
    if isinstance(msg, Ping):
        return [Pong(rid, msg.payload)]
    if isinstance(msg, GetPeers):
        return [Peers(rid, ())]
    if isinstance(msg, WantHave):
        return [Have(rid, msg.cids)]
    if isinstance(msg, WantBlock):
        return [Block(rid, msg.cids[0], b"data")]
    return []


HELLO = Hello(0, (L.PROTOCOL_VERSION,), (), "test", 0, 0)


async def _greeted_pair(nursery: trio.Nursery, b_handler: Callable[[PeerConnection, Message], Awaitable[Sequence[Message]]] = stranger,
                        ) -> tuple[PeerConnection, PeerConnection]:
    """Two connections over an in-memory stream, running, each having had the other's Hello."""
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a = PeerConnection(a_stream, Identity.generate().peer_id, stranger)
    b = PeerConnection(b_stream, Identity.generate().peer_id, b_handler)
    await nursery.start(a.run)
    await nursery.start(b.run)
    await a.send(HELLO)
    await b.send(HELLO)
    await a.hello_received.wait()
    await b.hello_received.wait()
    return a, b


async def test_only_data_answers_make_a_connection_useful() -> None:
    async with trio.open_nursery() as nursery:
        a, _ = await _greeted_pair(nursery)
        await a.request(lambda rid: Ping(rid, b"x"))
        await a.request(lambda rid: GetPeers(rid, 8))
        await a.request(lambda rid: WantHave(rid, (CID,)))
        assert a.answers == 0
        await a.request(lambda rid: WantBlock(rid, (CID,)))
        assert a.answers == 1
        nursery.cancel_scope.cancel()


OTHER = b"\x01\x55\x12\x20" + bytes([1]) * 32


async def test_blocks_never_asked_for_are_dropped_and_a_flood_closes_the_connection() -> None:
    """A peer answering one WantBlock with blocks under other CIDs: they
    were all kept in the request's responses (memory for as long as the
    request waits, at line rate); now dropped, and past MAX_MALFORMED the
    connection is closed."""
    from shoal.p2p.net.connection import MAX_MALFORMED

    async def flooder(conn: PeerConnection, msg: Message) -> Sequence[Message]:
        assert isinstance(msg, WantBlock)
        junk = [Block(msg.request_id, OTHER, b"j" * 1024) for _ in range(n_junk)]
        return junk + [Block(msg.request_id, msg.cids[0], b"data")]

    for n_junk, closes in ((3, False), (MAX_MALFORMED + 1, True)):
        async with trio.open_nursery() as nursery:
            a, _ = await _greeted_pair(nursery, flooder)
            if closes:
                with pytest.raises(RequestFailed):
                    await a.request(lambda rid: WantBlock(rid, (CID,)), timeout=5)
                assert a.closed
            else:
                replies = await a.request(lambda rid: WantBlock(rid, (CID,)), timeout=5)
                assert replies == [Block(replies[0].request_id, CID, b"data")]
            nursery.cancel_scope.cancel()


async def test_a_flood_of_repeated_hellos_closes_the_connection() -> None:
    """A second Hello is a protocol error; it was counted but never checked
    against MAX_MALFORMED, so a peer could repeat Hello forever (each one
    decoded, at line rate) and stay connected."""
    from shoal.p2p.net.connection import MAX_MALFORMED

    for n_hellos, closes in ((MAX_MALFORMED, False), (MAX_MALFORMED + 1, True)):
        async with trio.open_nursery() as nursery:
            a, b = await _greeted_pair(nursery)
            for _ in range(n_hellos):
                await b.send(HELLO)
            with trio.fail_after(10):
                while not a.closed and a._malformed < n_hellos:
                    await trio.sleep(0.01)
            if not closes:
                # Still serving: a request gets its answer.
                assert await b.request(lambda rid: Ping(rid, b"x"), timeout=5)
            assert a.closed == closes
            nursery.cancel_scope.cancel()
