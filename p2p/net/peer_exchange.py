"""Peer exchange: ask connected peers for the peers they know, answer their asking.

Every `pex_interval` the node asks each connected peer at once for up to
`MAX_PEERS_PER_REPLY` peers (`exchange_round`, all requests under one
deadline), and remembers what comes back (`learn_peers`) unless its
allowlist would refuse that peer: a peer never remembered is never dialled.
Asked in turn, it answers with the peers it is connected to, never the
asker itself (`peers_reply`).

Not here: dialling what was learnt (the node's dial loop and the peer
table's backoff, shoal.p2p.net.node and shoal.p2p.net.peers).
"""

from __future__ import annotations

from typing import Callable

import trio

from shoal.p2p.errors import P2PError
from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.net.peers import PeerTable
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import GetPeers, PeerInfo, Peers

__all__ = ["exchange_round", "learn_peers", "peers_reply", "MAX_PEX_REQUESTS_IN_FLIGHT"]

MAX_PEX_REQUESTS_IN_FLIGHT = 64
"""GetPeers requests of one exchange round sent at once (all share one deadline)."""


def peers_reply(table: PeerTable, asker: PeerId, rid: int, max_peers: int) -> Peers:
    """The answer to `asker`'s GetPeers: connected peers with addresses, not the asker."""
    infos = []
    for rec in table.connected():
        if rec.peer_id != asker and rec.addrs:
            infos.append(PeerInfo(rec.peer_id.to_bytes(), tuple(str(a) for a in rec.addrs[: L.MAX_ADDRS_PER_PEER])))
        if len(infos) >= max_peers:
            break
    return Peers(rid, tuple(infos))


def learn_peers(table: PeerTable, reply: Peers, admits: Callable[[PeerId], bool]) -> None:
    """Remember the peers of `reply` that `admits` lets in; malformed entries are skipped."""
    for info in reply.peers:
        try:
            peer = PeerId.from_bytes(info.peer_id)
            addrs = [Multiaddr.parse(a) for a in info.addrs]
        except (P2PError, ValueError):
            continue
        if admits(peer):  # never remember (and so never dial) a peer we would refuse
            table.learn(peer, addrs)


async def exchange_round(conns: list[PeerConnection], learn: Callable[[Peers], None],
                         deadline: float = L.PEER_EXCHANGE_DEADLINE_S) -> None:
    """Ask every connection for its peers at once; the round ends at `deadline`.

    In turn, 5 s each, twelve silent peers made one round take a minute,
    and redials (which follow the round) waited for it.
    """
    slots = trio.CapacityLimiter(MAX_PEX_REQUESTS_IN_FLIGHT)

    async def ask(conn: PeerConnection) -> None:
        async with slots:
            try:
                replies = await conn.request(lambda rid: GetPeers(rid, L.MAX_PEERS_PER_REPLY), timeout=deadline)
            except RequestFailed:
                return
        for reply in replies:
            if isinstance(reply, Peers):
                learn(reply)

    with trio.move_on_after(deadline):
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(ask, conn)
