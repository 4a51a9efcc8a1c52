"""Bitswap between two libp2p hosts over real TCP on 127.0.0.1 (BitswapService).

The whole stack runs: TCP, (pnet,) multistream-select, Noise, yamux,
multistream-select of /ipfs/bitswap/1.2.0 on each side's own stream, the
driver, the engine and a session; blocks come from and are checked against
an in-memory source.
"""

from __future__ import annotations

import random

import trio

from shoal.p2p.bitswap.driver import Bitswap
from shoal.p2p.bitswap.message import (
    PROTOCOL_1_1_0, PROTOCOL_1_2_0, PROTOCOLS, Entry, FrameReader, Message, WantType, Wantlist, frame,
)
from shoal.p2p.bitswap.service import BitswapService
from shoal.p2p.libp2p.connection import YamuxStream
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.pnet import SwarmKey
from shoal.store.ipld.cid import make_cid


class Source:
    def __init__(self, blobs: list[bytes]) -> None:
        self.blocks = {bytes(make_cid("raw", b)): b for b in blobs}

    def has(self, cid: bytes) -> bool:
        return cid in self.blocks

    def size(self, cid: bytes) -> int | None:
        return len(self.blocks[cid]) if cid in self.blocks else None

    def get(self, cid: bytes) -> bytes | None:
        return self.blocks.get(cid)


def cid_of(data: bytes) -> bytes:
    return bytes(make_cid("raw", data))


def node(nursery: trio.Nursery, blobs: list[bytes], key: SwarmKey | None = None) -> BitswapService:
    host = Libp2pHost(Identity.generate(), nursery, swarm_key=key, handshake_timeout=5)
    return BitswapService(host, Bitswap(Source(blobs)))


async def test_fetch_both_ways_over_tcp() -> None:
    rng = random.Random(16)
    a_blobs = [rng.randbytes(rng.randint(1, 1_200_000)) for _ in range(12)]
    b_blobs = [rng.randbytes(rng.randint(1, 50_000)) for _ in range(30)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b = node(nursery, a_blobs), node(nursery, b_blobs)
            assert set(PROTOCOLS) <= set(a.host.handlers)
            (a_addr,) = await nursery.start(a.host.serve)
            got = await b.fetch([cid_of(x) for x in a_blobs] + [cid_of(b"nowhere")], [a_addr])
            assert got.blocks == {cid_of(x): x for x in a_blobs}
            assert got.missing == (cid_of(b"nowhere"),)
            # A now knows B through B's Bitswap stream, and fetches back on the same connection.
            assert a.bitswap.peers() == [b.host.peer_id]
            back = await a.bitswap.fetch([cid_of(x) for x in b_blobs])
            assert back.blocks == {cid_of(x): x for x in b_blobs} and back.missing == ()
            assert len(a.host.connections) == 1
            nursery.cancel_scope.cancel()


async def test_a_1_1_0_only_peer_is_served_blocks() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b = node(nursery, [b"legacy block"]), node(nursery, [])
            del b.host.handlers[PROTOCOL_1_2_0]  # b accepts 1.1.0 streams only
            (a_addr,) = await nursery.start(a.host.serve)
            conn = await b.host.dial(a_addr)
            stream = await conn.open_stream([PROTOCOL_1_2_0, PROTOCOL_1_1_0])
            assert stream.protocol == PROTOCOL_1_2_0  # a offers both...
            stream.reset()
            got = await b.fetch([cid_of(b"legacy block")], [a_addr])
            assert got.blocks == {cid_of(b"legacy block"): b"legacy block"}
            # ...and a's own stream to b settled on 1.1.0: a sends b no presences.
            assert a.bitswap.engine.is_legacy(b.host.peer_id)
            nursery.cancel_scope.cancel()


async def test_different_swarm_keys_fetch_nothing() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = node(nursery, [b"private"], SwarmKey(bytes(range(32))))
            b = node(nursery, [], SwarmKey(bytes(range(1, 33))))
            (a_addr,) = await nursery.start(a.host.serve)
            got = await b.fetch([cid_of(b"private")], [a_addr])
            assert got.blocks == {} and got.missing == (cid_of(b"private"),)
            assert a.bitswap.peers() == []
            same = node(nursery, [], SwarmKey(bytes(range(32))))
            got = await same.fetch([cid_of(b"private")], [a_addr])
            assert got.blocks == {cid_of(b"private"): b"private"}
            nursery.cancel_scope.cancel()


async def test_garbage_on_a_bitswap_stream_resets_that_stream_only() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b = node(nursery, [b"still served"]), node(nursery, [])
            (a_addr,) = await nursery.start(a.host.serve)
            conn = await b.host.dial(a_addr)
            bad = await conn.open_stream(PROTOCOL_1_2_0)
            await bad.send_all(b"\xff\xff\xff\xff\xff\xff")  # a length prefix past every cap
            with trio.fail_after(10):
                while True:
                    try:
                        if await bad.receive_some() == b"":
                            break
                    except trio.BrokenResourceError:
                        break  # reset by a
            got = await b.fetch([cid_of(b"still served")], [a_addr])
            assert got.blocks == {cid_of(b"still served"): b"still served"}
            nursery.cancel_scope.cancel()


async def test_a_peer_s_streams_are_read_a_few_at_a_time() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            host = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5)
            a = BitswapService(host, Bitswap(Source([])), max_readers_per_peer=2)
            # b: a bare host whose Bitswap handler only drains A's stream (and opens none of its own).
            b = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5)

            async def drain(stream: YamuxStream) -> None:
                while await stream.receive_some():
                    pass

            b.handlers[PROTOCOL_1_2_0] = drain
            (a_addr,) = await nursery.start(a.host.serve)
            conn = await b.dial(a_addr)
            # A want A cannot answer (no sendDontHave): it stays in A's ledger once read.
            whole = frame(Message(Wantlist((Entry(cid_of(b"absent"), want_type=WantType.HAVE),))))
            held = []
            for _ in range(2):  # two streams stuck inside a message take both read slots
                stream = await conn.open_stream(PROTOCOL_1_2_0)
                await stream.send_all(whole[:-1])
                held.append(stream)
            third = await conn.open_stream(PROTOCOL_1_2_0)
            await third.send_all(whole)
            peer = b.peer_id
            with trio.fail_after(10):
                while not a.bitswap.has_peer(peer):
                    await trio.sleep(0.01)
            await trio.sleep(0.5)
            assert a.bitswap.engine.ledger_size(peer) == 0  # the third stream waits unread
            await held[0].send_eof()  # it ends inside a message: that reader fails, its slot frees
            with trio.fail_after(10):
                while a.bitswap.engine.ledger_size(peer) == 0:
                    await trio.sleep(0.01)
            assert a.bitswap.engine.ledger_size(peer) == 1
            nursery.cancel_scope.cancel()


async def test_a_stream_the_peer_resets_is_opened_again() -> None:
    """js Bitswap aborts an incoming stream after 10 s of silence: the next answer goes on a new one."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a = node(nursery, [b"first", b"second"])
            b = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5)
            received: list[tuple[int, Message]] = []
            streams_seen = 0
            got = trio.Event()

            async def receive(stream: YamuxStream) -> None:
                nonlocal streams_seen, got
                streams_seen += 1
                number = streams_seen
                reader = FrameReader()
                while data := await stream.receive_some():
                    for message in reader.feed(data):
                        received.append((number, message))
                        got.set()
                        if number == 1:
                            stream.reset()  # like js after its receive timeout
                            return

            b.handlers[PROTOCOL_1_2_0] = receive
            (a_addr,) = await nursery.start(a.host.serve)
            conn = await b.dial(a_addr)
            for blob in (b"first", b"second"):
                got = trio.Event()
                want = await conn.open_stream(PROTOCOL_1_2_0)
                await want.send_all(frame(Message(Wantlist((Entry(cid_of(blob), want_type=WantType.HAVE),)))))
                await want.aclose()
                await got.wait()
            assert [(n, m.presences[0].cid) for n, m in received] == [(1, cid_of(b"first")),
                                                                     (2, cid_of(b"second"))]
            assert a.bitswap.peers() == [b.peer_id]  # still served, on the second stream
            nursery.cancel_scope.cancel()
