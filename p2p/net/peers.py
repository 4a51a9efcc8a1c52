"""What a node knows about other peers: addresses, connections, reputation.

Plain data, no I/O. The node updates it as connections come and go and as
peer exchange reports new addresses; `shoal peers` reads it; the exchange
and replication read and update reputation. The clock and the random source
used for dial backoff are parameters, so tests drive time by hand.

Redial policy: a peer whose dials fail is not dropped, it is retried later
and later. After n failures in a row the next dial waits
`min(DIAL_BACKOFF_CAP_S, DIAL_BACKOFF_BASE_S * 2**n) * jitter`, jitter drawn
once per failure from [DIAL_BACKOFF_JITTER_MIN, 1]; a successful connection
resets it. The table stays bounded: when it is full, a peer that is not
connected and whose dials have failed for FORGET_FAILING_AFTER_S makes room.

What a record needs to survive a restart (addresses, times, the backoff
state) is `PeerState`; shoal.p2p.net.peer_store writes it to the index and
`PeerTable.restore` puts it back.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Final, Iterator, NamedTuple

from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.limits import MAX_ADDRS_PER_PEER
from shoal.p2p.secure.multiaddr import Multiaddr

MAX_KNOWN_PEERS: Final = 1024  # a table that a flood of Peers replies cannot grow without bound

DIAL_BACKOFF_BASE_S: Final = 1.0
"""First step of the redial backoff. A peer that restarts is usually back
within seconds, so the first retries come quickly."""

DIAL_BACKOFF_CAP_S: Final = 600.0
"""Longest wait between two dials of one peer (10 min). A peer that was down
for a day is found again within minutes of coming back, while a dead address
costs at most ~150 dials a day instead of one every peer-exchange round."""

DIAL_BACKOFF_JITTER_MIN: Final = 0.5
"""Each wait is multiplied by a factor drawn from [0.5, 1.0]: nodes that lost
the same peer at the same moment (a network blip) do not redial it in lockstep."""

_MAX_BACKOFF_EXPONENT: Final = 32
"""2**32 s is far past the cap; clamping keeps the float arithmetic finite."""

FORGET_FAILING_AFTER_S: Final = 24 * 3600.0
"""A peer that has not been reachable for a whole day may be forgotten when
the table is full (MAX_KNOWN_PEERS): made-up addresses from peer exchange
then cannot crowd out new, real peers for ever. A peer failing for less
than that keeps its place; reputation of a forgotten peer is kept apart."""

MAX_REMEMBERED_REPUTATIONS: Final = 4 * MAX_KNOWN_PEERS
"""Reputations kept for peers that have no record in the table (restored
from disk, or forgotten): a peer that once served corrupt blocks keeps its
score when it comes back. Bounded like the table; clean ones go first."""

Clock = Callable[[], float]
Random = Callable[[], float]  # uniform in [0, 1), like random.random


def backoff_delay(failures: int, draw: float) -> float:
    """Seconds to wait before the next dial after `failures` failures in a row.

    `draw` in [0, 1) picks the jitter factor in [DIAL_BACKOFF_JITTER_MIN, 1).
    """
    if failures <= 0:
        return 0.0
    step = min(DIAL_BACKOFF_CAP_S, DIAL_BACKOFF_BASE_S * 2.0 ** min(failures, _MAX_BACKOFF_EXPONENT))
    jitter = DIAL_BACKOFF_JITTER_MIN + (1.0 - DIAL_BACKOFF_JITTER_MIN) * min(max(draw, 0.0), 1.0)
    return step * jitter


class Counts(NamedTuple):
    """A Reputation's counters as plain values (what is persisted)."""

    delivered: int = 0
    corrupt: int = 0
    timeouts: int = 0
    proven_losses: int = 0
    audit_timeouts: int = 0


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

    def counts(self) -> Counts:
        return Counts(self.delivered, self.corrupt, self.timeouts, self.proven_losses, self.audit_timeouts)

    @classmethod
    def from_counts(cls, counts: Counts) -> Reputation:
        return cls(*counts)

    @property
    def is_blank(self) -> bool:
        return self.counts() == Counts()


class PeerState(NamedTuple):
    """The part of a PeerRecord that is persisted (see shoal.p2p.net.peer_store).

    Not the connection flag nor what Hello said (capacity, agent): those are
    true only while connected. The backoff fields are kept, so a peer that
    was failing before a restart is not redialled at once after it.
    """

    addrs: tuple[Multiaddr, ...]
    last_seen: float = 0.0
    last_connected: float = 0.0
    dial_failures: int = 0
    failing_since: float = 0.0
    next_dial_at: float = 0.0


@dataclass
class PeerRecord:
    peer_id: PeerId
    addrs: list[Multiaddr] = field(default_factory=list)
    connected: bool = False
    last_seen: float = 0.0
    last_connected: float = 0.0  # clock time we were last connected (0: never)
    capacity_bytes: int = 0
    free_bytes: int = 0
    agent: str = ""
    security: str = ""  # the Noise protocol of the last connection (which cipher was negotiated)
    reputation: Reputation = field(default_factory=Reputation)
    dial_failures: int = 0  # in a row; reset by a successful connection
    failing_since: float = 0.0  # clock time of the first failure of the current run
    next_dial_at: float = 0.0  # not dialled before this clock time

    def dial_addr(self) -> Multiaddr:
        """The address to dial next, with our /p2p/ id: the next one after each failure.

        Always the first would never reach a peer whose first address went
        stale (it restarted on another port) while a later one is good.
        """
        return self.addrs[self.dial_failures % len(self.addrs)].with_peer(self.peer_id)

    def state(self) -> PeerState:
        return PeerState(tuple(self.addrs), self.last_seen, self.last_connected, self.dial_failures,
                         self.failing_since, self.next_dial_at)

    def as_json(self) -> dict[str, object]:
        return {
            "peer_id": str(self.peer_id),
            "addrs": [str(a.with_peer(self.peer_id)) for a in self.addrs],
            "connected": self.connected,
            "agent": self.agent,
            "security": self.security,
            "free_bytes": self.free_bytes,
            "reputation": round(self.reputation.score, 4),
            # The counts behind the score: a corrupt block is proven
            # misbehaviour, a timeout may be transient, so they are shown apart.
            "delivered": self.reputation.delivered,
            "corrupt": self.reputation.corrupt,
            "timeouts": self.reputation.timeouts,
        }


class PeerTable:
    """Known peers, bounded by MAX_KNOWN_PEERS. No I/O, no sleeping.

    `clock` (seconds, wall clock by default: backoff times are compared with
    it) and `rng` (uniform [0, 1)) are injectable for deterministic tests.
    """

    def __init__(self, me: PeerId, *, clock: Clock = time.time, rng: Random = random.random,
                 max_peers: int = MAX_KNOWN_PEERS) -> None:
        self.me = me
        self._clock = clock
        self._rng = rng
        self._max_peers = max_peers
        self._peers: dict[PeerId, PeerRecord] = {}
        # Reputations of peers without a record (restored from disk, or
        # forgotten), handed back when the peer is known again.
        self._dormant: dict[PeerId, Reputation] = {}
        # No peer can be forgotten before this time: spares a full-table scan
        # for every newcomer while a flood of peer-exchange replies arrives.
        self._forget_not_before = float("-inf")

    def get(self, peer: PeerId) -> PeerRecord | None:
        return self._peers.get(peer)

    def ensure(self, peer: PeerId) -> PeerRecord:
        """The record of `peer`, created if needed.

        If the table is full and no long-failing peer can be forgotten, the
        record returned is not kept (callers may still update it harmlessly).
        """
        rec = self._peers.get(peer)
        if rec is None:
            rec = PeerRecord(peer, reputation=self._dormant.get(peer) or Reputation())
            if len(self._peers) < self._max_peers or self._forget_one():
                self._peers[peer] = rec
                self._dormant.pop(peer, None)
        return rec

    def _forget_one(self) -> bool:
        """Drop the peer failing longest, if it has failed for FORGET_FAILING_AFTER_S."""
        now = self._clock()
        if now < self._forget_not_before:
            return False
        cutoff = now - FORGET_FAILING_AFTER_S
        victim: PeerRecord | None = None
        earliest = float("inf")  # the soonest a peer failing for less than the cutoff qualifies
        for rec in self._peers.values():
            if rec.connected or rec.dial_failures == 0:
                continue
            if rec.failing_since > cutoff:
                earliest = min(earliest, rec.failing_since + FORGET_FAILING_AFTER_S)
            elif victim is None or rec.failing_since < victim.failing_since:
                victim = rec
        if victim is None:
            self._forget_not_before = earliest
            return False
        del self._peers[victim.peer_id]
        if not victim.reputation.is_blank:
            self._remember(victim.peer_id, victim.reputation)
        return True

    def _remember(self, peer: PeerId, rep: Reputation) -> None:
        self._dormant.pop(peer, None)
        self._dormant[peer] = rep
        if len(self._dormant) > MAX_REMEMBERED_REPUTATIONS:
            # Proven misbehaviour is the last thing to forget; among equals the oldest goes.
            victim = min(self._dormant, key=lambda p: self._dormant[p].corrupt + self._dormant[p].proven_losses)
            del self._dormant[victim]

    def restore_reputation(self, peer: PeerId, counts: Counts) -> None:
        """Put back counters saved by an earlier run (the node does this at start)."""
        if peer == self.me:
            return
        rec = self._peers.get(peer)
        if rec is not None:
            rec.reputation = Reputation.from_counts(counts)
        elif counts != Counts():
            self._remember(peer, Reputation.from_counts(counts))

    def reputations(self) -> Iterator[tuple[PeerId, Reputation]]:
        """Every reputation this table holds: known peers' and dormant ones."""
        for peer, rec in self._peers.items():
            yield peer, rec.reputation
        yield from self._dormant.items()

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
        now = self._clock()
        if connected or rec.connected:  # connected now, or until now
            rec.last_connected = now
        rec.connected = connected
        rec.last_seen = now
        if connected:
            rec.dial_failures = 0
            rec.failing_since = 0.0
            rec.next_dial_at = 0.0

    def dial_failed(self, peer: PeerId) -> None:
        """One more failure in a row: push the next dial back (exponentially, jittered)."""
        rec = self._peers.get(peer)
        if rec is None or rec.connected:
            return  # unknown, or it reached us some other way meanwhile
        now = self._clock()
        if rec.dial_failures == 0:
            rec.failing_since = now
            self._forget_not_before = min(self._forget_not_before, now + FORGET_FAILING_AFTER_S)
        rec.dial_failures += 1
        rec.next_dial_at = now + backoff_delay(rec.dial_failures, self._rng())

    def restore(self, peer: PeerId, state: PeerState) -> PeerRecord | None:
        """Put back a record saved by an earlier run (the node does this at start).

        The backoff is kept, but the next dial is at most DIAL_BACKOFF_CAP_S
        away: a clock that jumped, or a value written by a bug, cannot
        silence a peer for longer than the backoff ever would. A peer the
        table already knows keeps its live state and only gains addresses.
        """
        if peer == self.me:
            return None
        fresh = peer not in self._peers
        rec = self.learn(peer, list(state.addrs))
        if rec is None or not fresh:
            return rec
        now = self._clock()
        rec.last_seen = min(state.last_seen, now)
        rec.last_connected = min(state.last_connected, now)
        if state.dial_failures > 0:
            rec.dial_failures = state.dial_failures
            rec.failing_since = min(state.failing_since, now)
            rec.next_dial_at = min(state.next_dial_at, now + DIAL_BACKOFF_CAP_S)
            self._forget_not_before = min(self._forget_not_before, rec.failing_since + FORGET_FAILING_AFTER_S)
        return rec

    def all(self) -> list[PeerRecord]:
        return list(self._peers.values())

    def connected(self) -> list[PeerRecord]:
        return [r for r in self._peers.values() if r.connected]

    def dialable(self, now: float | None = None) -> list[PeerRecord]:
        """Known, not connected, with an address, and past its backoff; fewest failures first.

        Fewest failures first, so made-up addresses cannot starve real peers
        of the node's few dial slots; among equals the best reputation, then
        the most recently connected (after a restart the whole saved table is
        dialable at once, and the peers that served us well come first).
        """
        t = self._clock() if now is None else now
        ready = [r for r in self._peers.values() if not r.connected and r.addrs and r.next_dial_at <= t]
        ready.sort(key=lambda r: (r.dial_failures, -r.reputation.score, -r.last_connected))
        return ready
