"""The DHT driver on real libp2p hosts: several hosts in one process over TCP on 127.0.0.1.

The hosts are bootstrapped as a sparse chain (host i knows only host i-1),
so whatever host 9 learns about host 0 it learns through the DHT.
"""

from __future__ import annotations

import hashlib

import pytest
import trio

from shoal.p2p.dht import PROTOCOL_ID
from shoal.p2p.dht.messages import FrameReader, Message, MessageType, frame
from shoal.p2p.dht.service import DHTConfig, DHTService, Mode
from shoal.p2p.libp2p.connection import NegotiationFailed
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.libp2p.identify import IDENTIFY_PROTOCOL, identify
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.multiaddr import Multiaddr

CONFIG = DHTConfig(request_timeout=3.0, slow_after=1.0, dial_timeout=3.0)


def multihash(data: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(data).digest()


async def start(nursery: trio.Nursery, mode: Mode = "server",
                config: DHTConfig = CONFIG) -> tuple[DHTService, Multiaddr]:
    host = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5)
    addrs = await nursery.start(host.serve)
    dht = DHTService(host, mode=mode, config=config)
    await nursery.start(dht.run)
    return dht, addrs[0]


async def chain(nursery: trio.Nursery, n: int) -> list[tuple[DHTService, Multiaddr]]:
    """n server hosts, host i bootstrapped from host i-1 only."""
    nodes = [await start(nursery)]
    for _ in range(n - 1):
        dht, addr = await start(nursery)
        await dht.bootstrap([nodes[-1][1]])
        nodes.append((dht, addr))
    return nodes


async def test_provide_on_one_end_find_on_the_other() -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nodes = await chain(nursery, 10)
            first, first_addr = nodes[0]
            last, _ = nodes[-1]
            mh = multihash(b"weights")
            assert last.providers.get(mh, trio.current_time()) == []
            told = await first.provide(mh)
            assert told >= 3  # the k closest of 10 are the other 9, all alive
            found = await last.find_providers(mh)
            assert [p.peer_id for p in found] == [first.host.peer_id]
            assert found[0].addrs == (first_addr.with_peer(None),)
            # A multihash nobody provides has no providers.
            assert await last.find_providers(multihash(b"nothing")) == []
            # The records landed on the peers closest to the key, not only on neighbours.
            holders = [d for d, _ in nodes[1:] if d.providers.get(mh, trio.current_time())]
            assert len(holders) >= 3
            nursery.cancel_scope.cancel()


async def test_find_peer_through_the_dht() -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nodes = await chain(nursery, 8)
            first, first_addr = nodes[0]
            last, _ = nodes[-1]
            found = await last.find_peer(first.host.peer_id)
            assert found is not None
            assert found.addrs == (first_addr.with_peer(None),)
            # An id that is nobody's is not found.
            assert await last.find_peer(Identity.generate().peer_id) is None
            # Tables hold every other server (10 nodes < k), and never self.
            for dht, _ in nodes:
                assert dht.local_id not in dht.table
                assert len(dht.table) >= 3
            nursery.cancel_scope.cancel()


async def test_client_mode_asks_but_is_never_added() -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nodes = await chain(nursery, 6)
            client, _ = await start(nursery, mode="client")
            await client.bootstrap([nodes[2][1]])
            assert len(client.table) >= 3  # it knows servers...
            mh = multihash(b"shared")
            await nodes[0][0].provide(mh)
            found = await client.find_providers(mh)
            assert [p.peer_id for p in found] == [nodes[0][0].host.peer_id]
            # A client can provide too: servers store its record, others find it.
            mh2 = multihash(b"from the client")
            assert await client.provide(mh2) >= 3
            found2 = await nodes[5][0].find_providers(mh2)
            assert [p.peer_id for p in found2] == [client.host.peer_id]
            # ...but no server has the client in its table, and it does not answer kad.
            for dht, _ in nodes:
                assert client.local_id not in dht.table
            conn = await nodes[0][0].connect(client.local_id, client.host.listen_addrs)
            info = await identify(await conn.open_stream(IDENTIFY_PROTOCOL), conn.remote_peer)
            assert PROTOCOL_ID not in info.protocols
            with pytest.raises(NegotiationFailed):
                await conn.open_stream(PROTOCOL_ID)
            nursery.cancel_scope.cancel()


async def test_a_peer_sending_garbage_is_dropped() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server, addr = await start(nursery)
            evil, _ = await start(nursery)  # a DHT server, so it enters the table...
            await evil.bootstrap([addr])
            with trio.fail_after(10):
                while evil.local_id not in server.table:
                    await trio.sleep(0.05)
            conn = evil._connection(server.local_id)
            assert conn is not None
            stream = await conn.open_stream(PROTOCOL_ID)
            # ...then sends a frame whose body is not a kad message (field 1 with a
            # truncated varint).
            await stream.send_all(b"\x03\x08\xff\xff")
            with trio.fail_after(10):
                while not conn.closed:
                    await conn.wait_change()
            assert server.dropped == 1
            assert evil.local_id not in server.table
            # It is ignored for a while: a new connection's streams are refused.
            conn2 = await evil.host.dial(addr)
            with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError, NegotiationFailed)):
                # The reset may come during negotiation, on the send or on the read.
                stream2 = await conn2.open_stream(PROTOCOL_ID)
                await stream2.send_all(frame(Message(MessageType.PING)))
                while await stream2.receive_some():
                    pass
            await trio.sleep(0.2)
            assert evil.local_id not in server.table
            nursery.cancel_scope.cancel()


async def test_an_answer_that_is_garbage_drops_the_peer() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            asker, _ = await start(nursery)
            liar = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5)

            async def garbage(stream: object) -> None:
                assert hasattr(stream, "send_all")
                await stream.send_all(b"\xff" * 16)  # a length varint that never ends

            liar.handlers[PROTOCOL_ID] = garbage  # type: ignore[assignment]
            liar_addr = (await nursery.start(liar.serve))[0]
            await asker.bootstrap([liar_addr])
            assert asker.dropped == 1
            assert liar.peer_id.to_bytes() not in asker.table
            nursery.cancel_scope.cancel()


async def test_per_peer_request_rate() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server, addr = await start(nursery, config=DHTConfig(rate=0.01, burst=5))
            peer = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5)
            conn = await peer.dial(addr)
            stream = await conn.open_stream(PROTOCOL_ID)
            reader = FrameReader()
            answered = 0
            with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
                for _ in range(20):
                    await stream.send_all(frame(Message(MessageType.PING)))
                    while (msg := reader.next_message()) is None:
                        data = await stream.receive_some()
                        if not data:
                            raise trio.ClosedResourceError("closed")
                        reader.feed(data)
                    assert msg.type is MessageType.PING
                    answered += 1
            assert answered == 5
            nursery.cancel_scope.cancel()


async def test_records_expire_unless_republished() -> None:
    """Scaled-down times: records live 2 s at the holders; the provider re-announces
    every 0.5 s, so after 4 s they are still there; once it stops, they expire."""
    config = DHTConfig(request_timeout=3.0, slow_after=1.0, provider_expiry=2.0, republish=0.5)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = [await start(nursery, config=config)]
            for _ in range(4):
                dht, addr = await start(nursery, config=config)
                await dht.bootstrap([nodes[-1][1]])
                nodes.append((dht, addr))
            provider, seeker = nodes[0][0], nodes[-1][0]
            mh = multihash(b"republished")
            await provider.provide(mh)
            await trio.sleep(4.0)
            assert [p.peer_id for p in await seeker.find_providers(mh)] == [provider.host.peer_id]
            provider.stop_providing(mh)
            await trio.sleep(2.5)
            for dht, _ in nodes[1:]:
                assert dht.providers.get(mh, trio.current_time()) == []
            assert await seeker.find_providers(mh) == []
            nursery.cancel_scope.cancel()


async def test_connections_the_dht_dialled_are_closed_once_idle() -> None:
    config = DHTConfig(request_timeout=3.0, slow_after=1.0, idle_close=0.5)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, a_addr = await start(nursery, config=config)
            b, _ = await start(nursery, config=config)
            c, _ = await start(nursery, config=config)
            await b.bootstrap([a_addr])
            await c.bootstrap([a_addr])
            await c.lookup_peers(c.local_id)  # c dials b, which it heard of from a
            assert c._connection(b.local_id) is not None
            with trio.fail_after(10):
                while c._connection(b.local_id) is not None or c._connection(a.local_id) is not None:
                    await trio.sleep(0.1)
            # The table keeps them; the next request dials again.
            assert b.local_id in c.table
            assert await c.ping(b.local_id)
            nursery.cancel_scope.cancel()
