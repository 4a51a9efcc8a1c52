"""The k-bucket routing table: Kademlia's keep-the-old-peers rule and an IP diversity limit.

Buckets are indexed by the common prefix length (cpl) between a peer's key
and ours: bucket i holds peers whose key shares exactly i leading bits with
ours, at most k of them, least recently seen first.

Kademlia's rule: peers that have been up a long time are likely to stay up,
so a full bucket never drops a known peer for a newcomer. The newcomer goes
to the bucket's replacement cache and the table asks the driver (through
`liveness_checks`) to check the bucket's least recently seen peer; only if
that check fails (`liveness_result(..., alive=False)`) is the old peer
evicted and the freshest replacement promoted. Besides protecting against
churn this makes the table hard to flood: an attacker cannot displace live
peers by announcing many ids.

Diversity limit (against eclipse attacks): at most `max_per_group_bucket`
peers of one IP group (IPv4 /24, IPv6 /48) in one bucket and at most
`max_per_group_table` in the whole table, so one subnet cannot fill a
bucket. Private and loopback addresses are exempt by default (a lab swarm
runs on one LAN or on 127.0.0.1; an attacker there is already inside).

Peers in client mode (they ask but do not answer) are never added.

Time is a float of seconds the driver passes in; the table never reads a
clock, which is what lets the simulator run 48 virtual hours in seconds.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from . import K
from .keys import KEY_BITS, common_prefix_len, kad_key

REFRESH_INTERVAL = 10 * 60.0
"""A bucket not refreshed by a lookup for this long is stale (go-libp2p-kad-dht: 10 min)."""
MAX_REFRESH_CPL = 15
"""Buckets with a cpl above this are never refreshed on their own (go: 15)."""


class AddResult(Enum):
    ADDED = "added"
    UPDATED = "updated"  # already present: last_seen refreshed
    PENDING = "pending"  # bucket full: in the replacement cache, a liveness check is asked
    REJECTED_DIVERSITY = "rejected-diversity"
    REJECTED_CLIENT = "rejected-client"
    REJECTED_SELF = "rejected-self"


@functools.lru_cache(maxsize=65536)
def ip_group(ip: str | None, *, exempt_private: bool = True) -> str | None:
    """The diversity group of an IP: its /24 (IPv4) or /48 (IPv6); None = not limited.

    None also for a missing or unparsable address and, with exempt_private,
    for loopback, private and link-local ones.
    """
    if ip is None:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if exempt_private and (addr.is_private or addr.is_loopback or addr.is_link_local):
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass
class Entry:
    """One peer in the table."""

    peer_id: bytes
    key: int
    group: str | None
    added_at: float
    last_seen: float


@dataclass
class _Candidate:
    peer_id: bytes
    key: int
    group: str | None


class RoutingTable:
    """Kademlia routing table of one node (sans-IO: the driver supplies time and checks)."""

    def __init__(
        self,
        local_id: bytes,
        *,
        k: int = K,
        max_per_group_bucket: int = 2,
        max_per_group_table: int = 3,
        exempt_private: bool = True,
        refresh_interval: float = REFRESH_INTERVAL,
        now: float = 0.0,
    ) -> None:
        self.local_id = local_id
        self.local_key = kad_key(local_id)
        self.k = k
        self.max_per_group_bucket = max_per_group_bucket
        self.max_per_group_table = max_per_group_table
        self.exempt_private = exempt_private
        self.refresh_interval = refresh_interval
        self._buckets: dict[int, list[Entry]] = {}
        self._replacements: dict[int, list[_Candidate]] = {}
        self._index: dict[bytes, Entry] = {}
        self._table_groups: Counter[str] = Counter()
        self._bucket_groups: dict[int, Counter[str]] = {}
        self._pending_checks: set[bytes] = set()
        self._to_check: list[bytes] = []
        self._refreshed: dict[int, float] = {}
        self._created = now

    # -- queries ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._index

    def peers(self) -> list[Entry]:
        """Every entry, bucket by bucket (cpl ascending), least recently seen first."""
        return [e for cpl in sorted(self._buckets) for e in self._buckets[cpl]]

    def bucket(self, cpl: int) -> list[Entry]:
        """A copy of bucket `cpl`, least recently seen first."""
        return list(self._buckets.get(cpl, ()))

    def replacements(self, cpl: int) -> list[bytes]:
        """Peer ids waiting in bucket `cpl`'s replacement cache, oldest first."""
        return [c.peer_id for c in self._replacements.get(cpl, ())]

    def closest(self, key: int, n: int = K) -> list[Entry]:
        """The n entries closest to `key` by XOR distance, closest first."""
        return heapq.nsmallest(n, self._index.values(), key=lambda e: e.key ^ key)

    def cpl(self, peer_key: int) -> int:
        """Bucket index a key falls into."""
        return common_prefix_len(self.local_key, peer_key)

    # -- changes ---------------------------------------------------------------

    def add(self, peer_id: bytes, now: float, *, ip: str | None = None, server: bool = True) -> AddResult:
        """Offer a peer we heard from (a response, or an inbound server-mode peer)."""
        if peer_id == self.local_id:
            return AddResult.REJECTED_SELF
        if not server:
            return AddResult.REJECTED_CLIENT
        existing = self._index.get(peer_id)
        if existing is not None:
            self._touch(existing, now)
            return AddResult.UPDATED
        key = kad_key(peer_id)
        cpl = self.cpl(key)
        group = ip_group(ip, exempt_private=self.exempt_private)
        if not self._diversity_ok(cpl, group):
            return AddResult.REJECTED_DIVERSITY
        bucket = self._buckets.setdefault(cpl, [])
        if len(bucket) < self.k:
            self._insert(cpl, Entry(peer_id, key, group, now, now))
            return AddResult.ADDED
        self._remember(cpl, _Candidate(peer_id, key, group))
        oldest = bucket[0]
        if oldest.peer_id not in self._pending_checks:
            self._pending_checks.add(oldest.peer_id)
            self._to_check.append(oldest.peer_id)
        return AddResult.PENDING

    def seen(self, peer_id: bytes, now: float) -> None:
        """A peer in the table answered: it becomes the most recently seen of its bucket."""
        entry = self._index.get(peer_id)
        if entry is not None:
            self._touch(entry, now)

    def liveness_checks(self) -> list[bytes]:
        """Peers the driver must check (PING); each answered with `liveness_result`."""
        out, self._to_check = self._to_check, []
        return out

    def liveness_result(self, peer_id: bytes, alive: bool, now: float) -> None:
        """Outcome of a check asked for by `liveness_checks` (a timeout is alive=False)."""
        self._pending_checks.discard(peer_id)
        if alive:
            self.seen(peer_id, now)
        else:
            self.remove(peer_id, now)

    def remove(self, peer_id: bytes, now: float) -> bool:
        """Evict a peer that failed (and promote a replacement); False if absent."""
        entry = self._index.pop(peer_id, None)
        if entry is None:
            return False
        self._pending_checks.discard(peer_id)
        cpl = self.cpl(entry.key)
        bucket = self._buckets[cpl]
        bucket.remove(entry)
        if entry.group is not None:
            self._table_groups[entry.group] -= 1
            self._bucket_groups[cpl][entry.group] -= 1
        cache = self._replacements.get(cpl, [])
        while cache and len(bucket) < self.k:
            cand = cache.pop()  # the freshest first
            if self._diversity_ok(cpl, cand.group):
                self._insert(cpl, Entry(cand.peer_id, cand.key, cand.group, now, now))
        if not bucket:
            del self._buckets[cpl]
        return True

    # -- refresh ---------------------------------------------------------------

    def stale_buckets(self, now: float) -> list[int]:
        """Cpls whose bucket no lookup has refreshed for `refresh_interval` (to refresh).

        Covers cpl 0 up to the deepest non-empty bucket (capped at
        MAX_REFRESH_CPL): deeper buckets are refreshed by the self-lookup.
        """
        deepest = min(max(self._buckets, default=0), MAX_REFRESH_CPL)
        return [
            cpl
            for cpl in range(deepest + 1)
            if now - self._refreshed.get(cpl, self._created) >= self.refresh_interval
        ]

    def refresh_id(self, cpl: int, randbytes: Callable[[int], bytes]) -> bytes:
        """A random peer id whose key falls in bucket `cpl`: FIND_NODE of it refreshes that bucket.

        Drawn by rejection (about 2**(cpl+1) sha256 for cpl <= MAX_REFRESH_CPL,
        as go-libp2p-kbucket's GenRandPeerID does with a table); `randbytes`
        is the caller's randomness (os.urandom, or a seeded Random's).
        """
        if not 0 <= cpl <= MAX_REFRESH_CPL:
            raise ValueError(f"refresh cpl must be in 0..{MAX_REFRESH_CPL}")
        while True:
            candidate = b"\x00\x20" + randbytes(32)  # identity-multihash shaped, never dialled
            if self.cpl(kad_key(candidate)) == cpl:
                return candidate

    def mark_refreshed(self, key: int, now: float) -> None:
        """A lookup for `key` completed: the bucket it falls into is fresh."""
        cpl = self.cpl(key)
        if cpl < KEY_BITS:
            self._refreshed[cpl] = now

    # -- internals -------------------------------------------------------------

    def _diversity_ok(self, cpl: int, group: str | None) -> bool:
        if group is None:
            return True
        if self._table_groups[group] >= self.max_per_group_table:
            return False
        per_bucket = self._bucket_groups.get(cpl)
        return per_bucket is None or per_bucket[group] < self.max_per_group_bucket

    def _insert(self, cpl: int, entry: Entry) -> None:
        self._buckets.setdefault(cpl, []).append(entry)
        self._index[entry.peer_id] = entry
        if entry.group is not None:
            self._table_groups[entry.group] += 1
            self._bucket_groups.setdefault(cpl, Counter())[entry.group] += 1
        cache = self._replacements.get(cpl)
        if cache:
            cache[:] = [c for c in cache if c.peer_id != entry.peer_id]

    def _remember(self, cpl: int, cand: _Candidate) -> None:
        cache = self._replacements.setdefault(cpl, [])
        cache[:] = [c for c in cache if c.peer_id != cand.peer_id]
        cache.append(cand)
        if len(cache) > self.k:
            del cache[0]

    def _touch(self, entry: Entry, now: float) -> None:
        entry.last_seen = now
        bucket = self._buckets[self.cpl(entry.key)]
        bucket.remove(entry)
        bucket.append(entry)
