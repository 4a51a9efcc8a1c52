"""The node's connections are libp2p connections (issue 16 item 1), in one process.

A `Libp2pHost` plays the remote: it dials a running `Node` and either opens
`/shoal/session/1.0.0` (a Shoal peer: HELLO both ways, then requests) or does
not (an IPFS node: identify, ping and Bitswap only, but an admission slot all
the same). A second session stream on one connection is reset, and a node that
dials an IPFS node keeps the connection for Bitswap without a dial failure.
Two nodes put each Shoal protocol on its own stream, opened on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import trio

from shoal.p2p.bitswap.driver import Bitswap
from shoal.p2p.bitswap.message import PROTOCOL_1_2_0
from shoal.p2p.bitswap.repo_source import StoreSource
from shoal.p2p.bitswap.service import BitswapService
from shoal.p2p.libp2p.connection import YamuxStream
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.libp2p.identify import IDENTIFY_PROTOCOL, PING_PROTOCOL, identify
from shoal.p2p.net.node import SHOAL_PROTOCOL, Libp2pOnlyPeer, Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.net.connection import RequestFailed
from shoal.p2p.wire import codec, limits as L, protocols as P
from shoal.p2p.wire.framing import FrameDecoder, encode_frame
from shoal.p2p.wire.messages import ErrorCode, Have, Hello, Message, NamePublish, Ping, Pong, WantHave
from shoal.store.ipld.cid import make_cid
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.persist.repo import Repo


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


async def read_messages(stream: YamuxStream, decoder: FrameDecoder, count: int) -> list[Message]:
    out: list[Message] = []
    while len(out) < count:
        data = await stream.receive_some(L.MAX_FRAME_BYTES)
        assert data, "the node closed the stream"
        out += [codec.decode(p) for p in decoder.feed(data)]
    return out


async def test_a_shoal_peer_and_an_ipfs_peer_on_one_node(repo: Repo) -> None:
    node = Node(repo, Identity.generate(), NodeOptions())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            addr = Multiaddr.parse(node.addrs_with_id()[0])

            # An IPFS node: upgrades, identifies, never opens /shoal/session/1.0.0.
            ipfs = Libp2pHost(Identity.generate(), nursery)
            conn = await ipfs.dial(addr)
            ident = await identify(await conn.open_stream(IDENTIFY_PROTOCOL), conn.remote_peer)
            assert {SHOAL_PROTOCOL, PROTOCOL_1_2_0, IDENTIFY_PROTOCOL, PING_PROTOCOL} <= set(ident.protocols)
            assert ident.agent_version.startswith("shoal/")
            stats = node.connection_stats()
            assert stats["inbound"] == 1 and stats["libp2p_only"] == 1  # it holds an admission slot
            assert node.connected_peers() == []  # but it is no Shoal peer

            # A Shoal peer: the session stream, HELLO both ways, a request answered.
            peer = Libp2pHost(Identity.generate(), nursery)
            pconn = await peer.dial(addr)
            stream = await pconn.open_stream(SHOAL_PROTOCOL)
            decoder = FrameDecoder()
            await stream.send_all(encode_frame(codec.encode(Hello(0, (L.PROTOCOL_VERSION,), (), "t", 0, 0))))
            await stream.send_all(encode_frame(codec.encode(Ping(5, b"over yamux"))))
            got = await read_messages(stream, decoder, 2)
            assert isinstance(got[0], Hello) and got[1] == Pong(5, b"over yamux")
            assert node.connected_peers() == [peer.peer_id]
            stats = node.connection_stats()
            assert stats["inbound"] == 2 and stats["libp2p"] == 2 and stats["libp2p_only"] == 1

            # One Shoal stream per connection: a second one is reset at once.
            second = await pconn.open_stream(SHOAL_PROTOCOL)
            with pytest.raises(trio.BrokenResourceError):
                while await second.receive_some():
                    pass
            assert node.connected_peers() == [peer.peer_id]  # the first one lives on

            # Closing the Shoal stream ends the whole libp2p connection (as a socket did).
            await stream.aclose()
            while not pconn.closed:
                await pconn.wait_change()
            while node.connection_stats()["libp2p"] != 1:
                await trio.sleep(0.01)
            assert node.connected_peers() == []
            nursery.cancel_scope.cancel()


async def test_dialling_an_ipfs_node_keeps_it_for_bitswap(repo: Repo) -> None:
    block = b"a block only the IPFS node has"
    cid = make_cid("raw", block)
    store = MemoryBlockstore()
    store.put(cid, block)
    node = Node(repo, Identity.generate(), NodeOptions())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            ipfs = BitswapService(Libp2pHost(Identity.generate(), nursery), Bitswap(StoreSource(store)))
            (ipfs_addr,) = await nursery.start(ipfs.host.serve)
            with pytest.raises(Libp2pOnlyPeer):
                await node.connect(ipfs_addr)
            assert node.connection_stats()["libp2p_only"] == 1
            assert await node.bitswap_peers() == [ipfs.host.peer_id]
            with pytest.raises(Libp2pOnlyPeer):  # asked again: no new dial, the same answer
                await node.connect(ipfs_addr)
            assert len(node.libp2p_only) == 1
            rec = node.peers.get(ipfs.host.peer_id)
            assert rec is None or rec.dial_failures == 0
            nursery.cancel_scope.cancel()


async def test_two_nodes_open_one_stream_per_protocol_on_first_use(tmp_path: Path) -> None:
    block = b"a block on the exchange stream"
    cid = make_cid("raw", block)
    with Repo.init(tmp_path / "a") as ra, Repo.init(tmp_path / "b") as rb:
        rb.blockstore.put(cid, block)
        a = Node(ra, Identity.generate(), NodeOptions())
        b = Node(rb, Identity.generate(), NodeOptions())
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run)
                await nursery.start(b.run)
                conn = await a.connect(Multiaddr.parse(b.addrs_with_id()[0]))
                assert conn.protocols_open() == [P.SESSION]  # nothing else before it is needed
                assert await conn.request(lambda rid: Ping(rid, b"s")) == [Pong(1, b"s")]
                assert conn.protocols_open() == [P.SESSION]
                (have,) = await conn.request(lambda rid: WantHave(rid, (bytes(cid),)))
                assert have == Have(2, (bytes(cid),))
                assert conn.protocols_open() == [P.EXCHANGE, P.SESSION]
                theirs = b.connection_to(a.peer_id)
                assert theirs is not None and theirs.protocols_open() == [P.EXCHANGE, P.SESSION]
                # B asks A on the stream A opened: still one exchange stream each way.
                (missing,) = await theirs.request(lambda rid: WantHave(rid, (bytes(cid),)))
                assert missing.request_id == 1 and type(missing).__name__ == "DontHave"
                # No names service on B: /shoal/names/1.0.0 is refused by multistream-select.
                assert b.host is not None and P.NAMES not in b.host.handlers
                with pytest.raises(RequestFailed) as info:
                    await conn.request(lambda rid: NamePublish(rid, b"a record"))
                assert info.value.code == ErrorCode.UNKNOWN_TYPE and P.NAMES in conn.refused_protocols
                assert not conn.closed
                nursery.cancel_scope.cancel()
