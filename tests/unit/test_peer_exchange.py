"""Peer exchange's parts without sockets (shoal.p2p.net.peer_exchange).

- The GetPeers answer lists connected peers with addresses, never the asker,
  and at most what it asked for.
- What a reply teaches is remembered only for peers the allowlist admits;
  malformed entries (a bad id, a bad address) are skipped, not fatal.
- One round asks every connection at once and learns from each answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from shoal.p2p.net.peer_exchange import exchange_round, learn_peers, peers_reply
from shoal.p2p.net.peers import PeerTable
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.wire.messages import GetPeers, PeerInfo, Peers

pytestmark = pytest.mark.timeout(30)

ME, ASKER, A, B, C = (Identity.generate().peer_id for _ in range(5))


def _table() -> PeerTable:
    table = PeerTable(ME)
    for i, peer in enumerate((ASKER, A, B)):
        table.learn(peer, [Multiaddr("127.0.0.1", 4000 + i)])
        table.mark_connected(peer, True)
    table.learn(C, [Multiaddr("127.0.0.1", 4010)])  # known, not connected
    return table


def test_reply_lists_connected_peers_but_never_the_asker() -> None:
    reply = peers_reply(_table(), ASKER, 7, 16)
    assert reply.request_id == 7
    assert {i.peer_id for i in reply.peers} == {A.to_bytes(), B.to_bytes()}
    assert len(peers_reply(_table(), ASKER, 8, 1).peers) == 1


def test_learning_skips_refused_and_malformed_peers() -> None:
    table = PeerTable(ME)
    reply = Peers(1, (
        PeerInfo(A.to_bytes(), ("/ip4/127.0.0.1/tcp/4001",)),
        PeerInfo(B.to_bytes(), ("/ip4/127.0.0.1/tcp/4002",)),
        PeerInfo(b"\x00\x01not-an-id", ("/ip4/127.0.0.1/tcp/4003",)),
        PeerInfo(C.to_bytes(), ("/ip4/999.1.1.1/tcp/1",)),
    ))
    learn_peers(table, reply, lambda peer: peer != B)
    assert {r.peer_id for r in table.all()} == {A}


class FakeConn:
    def __init__(self, answer: Peers | None) -> None:
        self.answer = answer
        self.asked: list[Any] = []

    async def request(self, make: Any, timeout: float) -> list[Any]:
        msg = make(1)
        self.asked.append(msg)
        return [] if self.answer is None else [self.answer]


async def test_a_round_asks_everyone_and_learns_each_answer() -> None:
    one = Peers(1, (PeerInfo(A.to_bytes(), ("/ip4/127.0.0.1/tcp/4001",)),))
    two = Peers(1, (PeerInfo(B.to_bytes(), ("/ip4/127.0.0.1/tcp/4002",)),))
    conns = [FakeConn(one), FakeConn(two), FakeConn(None)]
    learnt: list[Peers] = []
    await exchange_round(conns, learnt.append, deadline=5)  # type: ignore[arg-type]
    assert all(len(c.asked) == 1 and isinstance(c.asked[0], GetPeers) for c in conns)
    assert sorted(learnt, key=lambda p: p.peers[0].peer_id) == sorted([one, two], key=lambda p: p.peers[0].peer_id)
