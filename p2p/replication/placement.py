"""Where replicas go: weighted rendezvous hashing over candidate peers. Pure.

Why rendezvous (highest-random-weight) hashing: every node that knows the
same candidates computes the same order for an object, with no shared state,
and when a peer leaves only the objects that peer held move. Each candidate
gets the score `-weight / ln(u)`, u = the first 8 bytes of
SHA-256(domain ‖ object key ‖ peer id) mapped into (0, 1); the highest scores
win. With that score a peer's chance of ranking first is proportional to its
weight (the standard weighted-HRW result), so weights act as shares.

Weight = free bytes × reputation score: a peer with twice the free space
gets about twice the objects; a peer with a poor record (corrupt blocks,
proven losses, timeouts) gets proportionally fewer. Peers without room for
the object, excluded peers (the owner, current and former holders, lost
ones) never appear.

Vetting: the reputation the caller passes is multiplied by
`vetting_factor(passed audits)`, so unproven peers get a smaller share.

Sybil mitigation (docs/THREATS.md): candidates may carry a network prefix
(e.g. the /24 of their address). Placement first takes at most one peer per
prefix not already used by an existing holder; only if that leaves too few
does it fall back to reusing prefixes, in score order. On loopback swarms
every peer shares one prefix and the fallback is what runs.

Not here: sockets, the peer table, timers. The replication service builds
the candidates from `PeerTable` and `Hello.free_bytes`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from shoal.p2p.secure.identity import PeerId

if TYPE_CHECKING:
    from shoal.p2p.secure.multiaddr import Multiaddr

__all__ = ["Candidate", "rendezvous_score", "place", "vetting_factor", "network_prefix", "VETTED_AFTER", "UNVETTED_FACTOR"]

VETTED_AFTER = 10
"""Passed audits after which a peer counts as vetted (full weight)."""
UNVETTED_FACTOR = 0.25
"""Weight share of a peer never audited: new peers get some data, not much."""

_DOMAIN = b"shoal-placement-v1\x00"
_TWO64 = float(1 << 64)


@dataclass(frozen=True)
class Candidate:
    """One peer that could take a replica, as the owner currently sees it."""

    peer_id: PeerId
    free_bytes: int
    reputation: float = 1.0  # peers.Reputation.score, in (0, 1]
    prefix: str = ""  # network prefix for spreading; "" = unknown

    @property
    def weight(self) -> float:
        return max(0, self.free_bytes) * max(0.0, self.reputation)


def rendezvous_score(key: bytes, peer: PeerId, weight: float) -> float:
    """The HRW score of `peer` for object `key`; higher ranks first.

    u is in (0, 1) strictly (0.5 offset), so ln(u) < 0 and the score is
    finite and positive for any positive weight; weight 0 scores 0.
    """
    if weight <= 0:
        return 0.0
    digest = hashlib.sha256(_DOMAIN + key + peer.to_bytes()).digest()
    u = (int.from_bytes(digest[:8], "big") + 0.5) / _TWO64
    return -weight / math.log(u)


def vetting_factor(passed_audits: int) -> float:
    """Weight multiplier that grows from UNVETTED_FACTOR to 1 over VETTED_AFTER
    passed audits, as Storj vets new nodes: a fresh identity (maybe one of a
    thousand sybils) cannot attract a large share of new replicas at once."""
    if passed_audits >= VETTED_AFTER:
        return 1.0
    return UNVETTED_FACTOR + (1.0 - UNVETTED_FACTOR) * max(0, passed_audits) / VETTED_AFTER


def place(
    key: bytes,
    candidates: Iterable[Candidate],
    count: int,
    *,
    size: int = 0,
    exclude: Iterable[PeerId] = (),
    used_prefixes: Iterable[str] = (),
) -> list[PeerId]:
    """Choose up to `count` distinct peers for the object `key` (its CID bytes).

    Deterministic for the same inputs (order of `candidates` does not
    matter). Skips excluded peers, peers with less than `size` free bytes
    and zero-weight peers. Prefers peers whose prefix is not in
    `used_prefixes` nor taken by an earlier pick; fills up from the rest.
    """
    if count <= 0:
        return []
    banned = set(exclude)
    best: dict[PeerId, Candidate] = {}
    for c in candidates:
        if c.peer_id in banned or c.free_bytes < size or c.weight <= 0:
            continue
        best[c.peer_id] = c  # a peer listed twice counts once (last wins)
    ranked: Sequence[Candidate] = sorted(
        best.values(),
        key=lambda c: (rendezvous_score(key, c.peer_id, c.weight), c.peer_id.to_bytes()),
        reverse=True,
    )
    taken = set(p for p in used_prefixes if p)
    chosen: list[PeerId] = []
    for c in ranked:
        if len(chosen) == count:
            return chosen
        if c.prefix and c.prefix in taken:
            continue
        chosen.append(c.peer_id)
        if c.prefix:
            taken.add(c.prefix)
    for c in ranked:
        if len(chosen) == count:
            break
        if c.peer_id not in chosen:
            chosen.append(c.peer_id)
    return chosen


def network_prefix(addrs: Iterable["Multiaddr"]) -> str:
    """The network prefix used to spread replicas: /24 for IPv4, /48 for IPv6."""
    for addr in addrs:
        try:
            ip = ipaddress.ip_address(addr.host)
        except ValueError:
            continue
        bits = 24 if ip.version == 4 else 48
        return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
    return ""
