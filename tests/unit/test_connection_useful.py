"""What makes an inbound connection "useful" for eviction
(shoal.p2p.net.admission): answers that carry data we asked for (a block, an
audit proof), not the Pong or Peers reply that every connected key, a
throwaway one included, gives for free to the node's own periodic peer
exchange. Counted those, a flood of idle strangers ranked with the peers
that serve us."""

from __future__ import annotations

from typing import Sequence

import trio
import trio.testing

from shoal.p2p.net.connection import PeerConnection
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


async def test_only_data_answers_make_a_connection_useful() -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a = PeerConnection(a_stream, Identity.generate().peer_id, stranger)
    b = PeerConnection(b_stream, Identity.generate().peer_id, stranger)
    hello = Hello(0, (L.PROTOCOL_VERSION,), (), "test", 0, 0)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await a.send(hello)
        await b.send(hello)
        await a.hello_received.wait()
        await b.hello_received.wait()
        await a.request(lambda rid: Ping(rid, b"x"))
        await a.request(lambda rid: GetPeers(rid, 8))
        await a.request(lambda rid: WantHave(rid, (CID,)))
        assert a.answers == 0
        await a.request(lambda rid: WantBlock(rid, (CID,)))
        assert a.answers == 1
        nursery.cancel_scope.cancel()
