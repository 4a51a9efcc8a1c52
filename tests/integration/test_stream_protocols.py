"""A real `shoal node` speaks each Shoal protocol on its own yamux stream (issue 16 item 1).

A hand-driven libp2p peer (tests/integration/evil_client.py) dials the node
and negotiates streams itself: the old single `/shoal/1.0.0` is refused
(`na`), identify lists the per-family ids, a stream of a family opened
before the session's Hello is not served, and after the Hello a
`/shoal/exchange/1.0.0` stream answers WANT_HAVE, while the same request on
the session stream is refused. The node also opens its own per-family
streams toward a peer it asks something (here: peer exchange stays on the
session, blocks on the exchange stream).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from shoal.p2p.libp2p.connection import NegotiationFailed, upgrade_outbound
from shoal.p2p.libp2p.identify import IDENTIFY_PROTOCOL, identify
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.wire import codec, limits as L, protocols as P
from shoal.p2p.wire.framing import FrameDecoder, encode_frame
from shoal.p2p.wire.messages import Error, ErrorCode, Have, Hello, Message, Ping, Pong, WantHave
from shoal.store.ipld.cid import parse_cid
from tests.helpers import write_random
from tests.integration.evil_client import REACTION_TIMEOUT_S, EvilConnection, _hello
from tests.integration.swarm import NodeProc, Swarm, swarm  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def _host_port(node: NodeProc) -> tuple[str, int]:
    parts = node.addr.split("/")
    return parts[2], int(parts[4])


async def _until(conn: EvilConnection, rid: int) -> tuple[object, Message]:
    """The next message answering request `rid`, and the stream it came on."""
    with trio.fail_after(REACTION_TIMEOUT_S * 2):
        while True:
            got = await conn.next_message()
            assert got is not None, "the node closed the connection"
            if got[1].request_id == rid:
                return got


@pytest.mark.timeout(120)
def test_a_node_serves_each_protocol_on_its_own_stream(swarm: Swarm, tmp_path: Path) -> None:
    n = swarm.add("N")
    write_random(tmp_path / "f.bin", 1000, seed=5)
    cid = bytes(parse_cid(n.put(tmp_path / "f.bin")))
    host, port = _host_port(n)
    peer = PeerId.from_string(n.peer_id)

    async def probe() -> None:
        async with trio.open_nursery() as nursery:
            # The old single stream is gone: multistream-select answers `na`.
            tcp = await trio.open_tcp_stream(host, port)
            bare = await upgrade_outbound(tcp, Identity.generate(), {}, expected_peer=peer)
            await nursery.start(bare.run)
            with pytest.raises(NegotiationFailed):
                await bare.open_stream("/shoal/1.0.0")
            ident = await identify(await bare.open_stream(IDENTIFY_PROTOCOL), bare.remote_peer)
            assert set(P.ALL) <= set(ident.protocols), ident.protocols
            assert "/shoal/1.0.0" not in ident.protocols

            # A family stream with no session on the connection: reset, unanswered.
            early = await bare.open_stream(P.EXCHANGE)
            with pytest.raises(trio.BrokenResourceError):
                await early.send_all(encode_frame(codec.encode(WantHave(1, (cid,)))))
                while await early.receive_some():
                    pass
            await bare.aclose()

            # A Shoal peer: session and Hello first, then the exchange stream.
            conn = await EvilConnection.open(host, port, peer, Identity.generate(), nursery=nursery)
            await conn.send(_hello())
            await conn.send(Ping(1, b"session"))
            stream, pong = await _until(conn, 1)
            assert stream is conn.stream and pong == Pong(1, b"session")
            await conn.send(WantHave(2, (cid,)))  # opens /shoal/exchange/1.0.0
            stream, have = await _until(conn, 2)
            assert have == Have(2, (cid,))
            assert stream is conn.streams[P.EXCHANGE] and stream.protocol == P.EXCHANGE
            # The same request on the session stream: refused as out of place.
            await conn.send(WantHave(3, (cid,)), conn.stream)
            stream, err = await _until(conn, 3)
            assert isinstance(err, Error) and err.code == ErrorCode.UNEXPECTED and stream is conn.stream
            # Nor is a session request on the exchange stream served.
            await conn.send(Ping(4, b"still here"), conn.streams[P.EXCHANGE])
            stream, err = await _until(conn, 4)
            assert isinstance(err, Error) and err.code == ErrorCode.UNEXPECTED
            await conn.aclose()
            nursery.cancel_scope.cancel()

    trio.run(probe)
    assert n.alive


@pytest.mark.timeout(120)
def test_a_family_stream_waits_for_the_sessions_hello(swarm: Swarm, tmp_path: Path) -> None:
    """Opened after the session but before our Hello, the exchange stream is
    held: its request is answered only once the Hello has arrived."""
    n = swarm.add("N")
    write_random(tmp_path / "f.bin", 1000, seed=6)
    cid = bytes(parse_cid(n.put(tmp_path / "f.bin")))
    host, port = _host_port(n)

    async def probe() -> None:
        async with trio.open_nursery() as nursery:
            conn = await EvilConnection.open(host, port, PeerId.from_string(n.peer_id), Identity.generate(),
                                             nursery=nursery)
            exchange = await conn.stream_for(P.EXCHANGE)
            await conn.send(WantHave(1, (cid,)), exchange)
            decoder = FrameDecoder()
            with trio.move_on_after(1.0):
                data = await exchange.receive_some(L.MAX_FRAME_BYTES)
                pytest.fail(f"answered before our Hello: {list(decoder.feed(data))!r}")
            await conn.send(_hello())
            with trio.fail_after(REACTION_TIMEOUT_S):
                got: list[Message] = []
                while not got:
                    got = [codec.decode(p) for p in decoder.feed(await exchange.receive_some(L.MAX_FRAME_BYTES))]
            assert got == [Have(1, (cid,))]
            hello = await conn.stream.receive_some(L.MAX_FRAME_BYTES)
            assert isinstance(codec.decode(next(iter(conn.decoder.feed(hello)))), Hello)
            await conn.aclose()
            nursery.cancel_scope.cancel()

    trio.run(probe)
