"""What a node knows about other peers: addresses, connections, reputation.

Plain data, no I/O. The node updates it as connections come and go and as
peer exchange reports new addresses; `shoal peers` reads it; the exchange
and replication read and update reputation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .identity import PeerId
from .limits import MAX_ADDRS_PER_PEER
from .multiaddr import Multiaddr

MAX_KNOWN_PEERS = 1024  # a table that a flood of Peers replies cannot grow without bound


@dataclass
class Reputation:
    """Scored apart, as storage networks learned the hard way (DESIGN.md)."""

    delivered: int = 0
    corrupt: int = 0  # sent bytes that did not match a CID: proven misbehaviour
    timeouts: int = 0  # slow or unreachable: maybe transient
    proven_losses: int = 0  # failed an audit with an invalid proof
    audit_timeouts: int = 0

    @property
    def score(self) -> float:
        """In (0, 1]: used to weight placement and to prefer holders."""
        good = 1 + self.delivered
        bad = 10 * self.corrupt + 20 * self.proven_losses + 0.5 * (self.timeouts + self.audit_timeouts)
        return good / (good + bad)


@dataclass
class PeerRecord:
    peer_id: PeerId
    addrs: list[Multiaddr] = field(default_factory=list)
    connected: bool = False
    last_seen: float = 0.0
    capacity_bytes: int = 0
    free_bytes: int = 0
    agent: str = ""
    reputation: Reputation = field(default_factory=Reputation)
    dial_failures: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "peer_id": str(self.peer_id),
            "addrs": [str(a.with_peer(self.peer_id)) for a in self.addrs],
            "connected": self.connected,
            "agent": self.agent,
            "free_bytes": self.free_bytes,
            "reputation": round(self.reputation.score, 4),
            # The counts behind the score: a corrupt block is proven
            # misbehaviour, a timeout may be transient, so they are shown apart.
            "delivered": self.reputation.delivered,
            "corrupt": self.reputation.corrupt,
            "timeouts": self.reputation.timeouts,
        }


class PeerTable:
    def __init__(self, me: PeerId) -> None:
        self.me = me
        self._peers: dict[PeerId, PeerRecord] = {}

    def get(self, peer: PeerId) -> PeerRecord | None:
        return self._peers.get(peer)

    def ensure(self, peer: PeerId) -> PeerRecord:
        rec = self._peers.get(peer)
        if rec is None:
            rec = PeerRecord(peer)
            if len(self._peers) < MAX_KNOWN_PEERS:
                self._peers[peer] = rec
        return rec

    def learn(self, peer: PeerId, addrs: list[Multiaddr]) -> PeerRecord | None:
        """Record addresses heard for `peer` (never for ourselves)."""
        if peer == self.me:
            return None
        rec = self.ensure(peer)
        for addr in addrs:
            addr = addr.with_peer(None)
            if addr.port != 0 and addr not in rec.addrs and len(rec.addrs) < MAX_ADDRS_PER_PEER:
                rec.addrs.append(addr)
        return rec

    def mark_connected(self, peer: PeerId, connected: bool) -> None:
        rec = self.ensure(peer)
        rec.connected = connected
        rec.last_seen = time.time()
        if connected:
            rec.dial_failures = 0

    def all(self) -> list[PeerRecord]:
        return list(self._peers.values())

    def connected(self) -> list[PeerRecord]:
        return [r for r in self._peers.values() if r.connected]

    def dialable(self) -> list[PeerRecord]:
        """Known, not connected, with an address, and not failing every time."""
        return [r for r in self._peers.values() if not r.connected and r.addrs and r.dial_failures < 20]
