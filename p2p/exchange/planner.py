"""Sans-IO scheduler for fetching a set of blocks from several holders.

The trio driver (`shoal.p2p.exchange.fetch`) feeds it events — a holder appeared, a block
arrived (verified or not), a request failed or timed out, a peer went away —
and asks it which requests to send next. No sockets, no clocks of its own:
the driver passes `now` in, so tests drive it with plain numbers.

Policy:
- Requests spread across holders: each wanted block goes to the holder with
  the fewest requests in flight (ties broken round-robin), up to a per-peer
  in-flight cap — that cap is the backpressure.
- A failed or timed-out request is retried on another holder; the block is
  never asked of the same holder twice unless every other holder failed it.
- A holder that sends bytes that do not match the CID is dropped from this
  fetch at once (the driver also penalises it in the reputation table).
- A block fails for good only when every known holder failed it.
- Order: blocks are requested in the order of their `rank` (first wanted
  first when no rank is given). A fetch that writes a DAG out while it
  arrives ranks each block by its place in the depth-first walk, so the
  leaves of the file the export writes now go first even when the roots of
  later files arrived before its own (several in flight, stored in parallel):
  in arrival order the export waited for one file while the blocks of the
  others overflowed its hand-off and had to be read back from the store.
  A retried block keeps its rank, so it goes before the blocks behind it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Hashable, Iterable

Key = Hashable
Peer = Hashable
# A place in a depth-first walk: the root is (), its i-th link (i,), that
# one's j-th link (i, j), ...; tuples compare in pre-order.
Rank = tuple[int, ...]


@dataclass
class _Inflight:
    peer: Peer
    sent_at: float


@dataclass
class PeerStats:
    """What this fetch learned about one holder (the driver folds it into reputation)."""

    delivered: int = 0
    corrupt: int = 0
    timeouts: int = 0
    failures: int = 0


@dataclass
class FetchPlanner:
    max_inflight_per_peer: int = 32
    request_timeout: float = 15.0
    max_rounds: int = 2
    # (rank, seq, key): a heap; a key no longer in _queued is skipped when popped
    _queue: list[tuple[Rank, int, Key]] = field(default_factory=list)
    _queued: set[Key] = field(default_factory=set)
    _ranks: dict[Key, Rank] = field(default_factory=dict)  # explicit ranks of keys not yet done
    _seq: "itertools.count[int]" = field(default_factory=itertools.count)
    _inflight: dict[Key, _Inflight] = field(default_factory=dict)
    _load: dict[Peer, int] = field(default_factory=dict)
    _tried: dict[Key, set[Peer]] = field(default_factory=dict)
    _dropped: set[Peer] = field(default_factory=set)
    _done: set[Key] = field(default_factory=set)
    _failed: set[Key] = field(default_factory=set)
    _rr: int = 0
    _rounds: dict[Key, int] = field(default_factory=dict)
    stats: dict[Peer, PeerStats] = field(default_factory=dict)

    # -- inputs ---------------------------------------------------------------
    def add_holder(self, peer: Peer) -> None:
        """A peer that (says it) holds the blocks we want."""
        if peer in self._dropped or peer in self._load:
            return
        self._load[peer] = 0
        self.stats.setdefault(peer, PeerStats())
        # Blocks that failed on every earlier holder get another chance.
        for key in list(self._failed):
            self._failed.discard(key)
            self._enqueue(key)

    def want(self, keys: Iterable[Key], ranks: Iterable[Rank] | None = None) -> None:
        """Ask for blocks (already-known ones are ignored), requested lowest
        `ranks` first (one per key). Without ranks a key ranks as the root,
        (): unranked keys go in the order they were wanted."""
        ranked = zip(keys, ranks) if ranks is not None else ((key, None) for key in keys)
        for key, rank in ranked:
            if key not in self._done and key not in self._inflight and key not in self._failed:
                if rank is not None:
                    self._ranks.setdefault(key, rank)
                self._enqueue(key)

    def have_locally(self, key: Key) -> None:
        """The block turned out to be present already (resume): nothing to fetch."""
        self._queued.discard(key)
        self._ranks.pop(key, None)
        self._done.add(key)

    def on_block(self, peer: Peer, key: Key, valid: bool) -> None:
        """A BLOCK reply arrived; `valid` says whether its hash matched the CID."""
        flight = self._inflight.get(key)
        if flight is None or flight.peer != peer:
            if not valid:
                self._drop(peer, corrupt=True)
            return  # late duplicate after a retry elsewhere: ignore
        self._finish_flight(key)
        if valid:
            self._done.add(key)
            self._ranks.pop(key, None)
            self.stats[peer].delivered += 1
        else:
            self._drop(peer, corrupt=True)
            self._retry(key)

    def on_failure(self, peer: Peer, key: Key, timed_out: bool = False) -> None:
        """The holder answered 'missing', errored, or did not answer in time."""
        flight = self._inflight.get(key)
        if flight is None or flight.peer != peer:
            return
        self._finish_flight(key)
        stats = self.stats[peer]
        if timed_out:
            stats.timeouts += 1
        else:
            stats.failures += 1
        self._retry(key)

    def on_interrupted(self, peer: Peer, key: Key) -> None:
        """The request was lost on OUR side (say, the process that ran it died):
        nothing is learned about the holder, so the block is queued again and
        may go to the same holder. The caller bounds how often it says this."""
        flight = self._inflight.get(key)
        if flight is None or flight.peer != peer:
            return
        self._finish_flight(key)
        self._tried.get(key, set()).discard(peer)
        self._enqueue(key)

    def on_peer_gone(self, peer: Peer) -> None:
        """The connection to a holder broke: move its requests elsewhere."""
        self._drop(peer, corrupt=False)

    # -- outputs --------------------------------------------------------------
    def expire(self, now: float) -> list[tuple[Peer, Key]]:
        """Time out requests older than the timeout; they are retried elsewhere."""
        expired = [(f.peer, k) for k, f in self._inflight.items() if now - f.sent_at >= self.request_timeout]
        for peer, key in expired:
            self.on_failure(peer, key, timed_out=True)
        return expired

    def next_requests(self, now: float, limit: int | None = None) -> list[tuple[Peer, Key]]:
        """Requests to send now (at most `limit`), each recorded as in flight."""
        out: list[tuple[Peer, Key]] = []
        deferred: list[tuple[Rank, int, Key]] = []
        while self._queue and (limit is None or len(out) < limit):
            entry = heapq.heappop(self._queue)
            key = entry[2]
            if key not in self._queued:
                continue
            peer = self._pick(key)
            if peer is None:
                if self._has_capacity_somewhere():
                    if not self._candidates(key, ignore_tried=True):
                        self._queued.discard(key)
                        self._failed.add(key)
                        continue
                    deferred.append(entry)
                    continue
                deferred.append(entry)
                break
            self._queued.discard(key)
            self._inflight[key] = _Inflight(peer, now)
            self._load[peer] += 1
            self._tried.setdefault(key, set()).add(peer)
            out.append((peer, key))
        for entry in deferred:  # back in their places, ahead of what they were ahead of
            heapq.heappush(self._queue, entry)
        return out

    def next_deadline(self) -> float | None:
        """When the oldest in-flight request times out (for the driver's sleep)."""
        if not self._inflight:
            return None
        return min(f.sent_at for f in self._inflight.values()) + self.request_timeout

    @property
    def finished(self) -> bool:
        """Nothing queued or in flight: every block is done or failed."""
        return not self._queued and not self._inflight

    @property
    def done(self) -> frozenset[Key]:
        return frozenset(self._done)

    @property
    def failed_count(self) -> int:
        return len(self._failed)

    def is_done(self, key: Key) -> bool:
        """Whether `key` was delivered (O(1), unlike copying `done`)."""
        return key in self._done

    @property
    def failed(self) -> frozenset[Key]:
        return frozenset(self._failed)

    @property
    def holders(self) -> list[Peer]:
        return list(self._load)

    def inflight_for(self, peer: Peer) -> int:
        return self._load.get(peer, 0)

    # -- internals ------------------------------------------------------------
    def _enqueue(self, key: Key) -> None:
        if key not in self._queued:
            self._queued.add(key)
            seq = next(self._seq)
            # Equal ranks (unranked keys) keep the order they were wanted in;
            # a key's rank survives its retries.
            heapq.heappush(self._queue, (self._ranks.get(key, ()), seq, key))

    def _finish_flight(self, key: Key) -> None:
        flight = self._inflight.pop(key)
        if flight.peer in self._load:
            self._load[flight.peer] -= 1

    def _retry(self, key: Key) -> None:
        if self._candidates(key, ignore_tried=True):
            self._enqueue(key)
            return
        # Every live holder has failed this block in this round. A timeout may
        # have been a passing stall, so allow a few rounds before giving up.
        rounds = self._rounds.get(key, 1)
        if self._load and rounds < self.max_rounds:
            self._rounds[key] = rounds + 1
            self._tried[key] = set()
            self._enqueue(key)
        else:
            self._failed.add(key)

    def _candidates(self, key: Key, ignore_tried: bool) -> list[Peer]:
        tried = self._tried.get(key, set()) if ignore_tried else set()
        return [p for p in self._load if p not in tried]

    def _has_capacity_somewhere(self) -> bool:
        return any(load < self.max_inflight_per_peer for load in self._load.values())

    def _pick(self, key: Key) -> Peer | None:
        candidates = [p for p in self._candidates(key, ignore_tried=True)
                      if self._load[p] < self.max_inflight_per_peer]
        if not candidates:
            return None
        least = min(self._load[p] for p in candidates)
        tied = [p for p in candidates if self._load[p] == least]
        self._rr += 1
        return tied[self._rr % len(tied)]

    def _drop(self, peer: Peer, corrupt: bool) -> None:
        if corrupt:
            self.stats.setdefault(peer, PeerStats()).corrupt += 1
        if peer not in self._load:
            return
        del self._load[peer]
        self._dropped.add(peer)
        for key, flight in list(self._inflight.items()):
            if flight.peer == peer:
                del self._inflight[key]
                self._retry(key)
        if not self._load:
            for key in list(self._queued):
                self._queued.discard(key)
                self._failed.add(key)
