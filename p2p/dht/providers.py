"""Provider records: who says they hold a multihash, until when.

Keyed by multihash bytes (not CID: every CID of the same bytes finds the same
providers, as libp2p specifies). A record expires `expiry` seconds after it
was last added (48 h by default); the providing node re-announces every
`republish` seconds (22 h), well inside the expiry so one missed round does
not lose the record. Both are parameters so tests can scale them down.

Bounded: at most `max_per_key` providers per key (the freshest kept) and
`max_total` records overall (new records for unknown keys are refused when
full), so ADD_PROVIDER floods cannot exhaust memory. Time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

PROVIDER_EXPIRY = 48 * 3600.0
PROVIDER_REPUBLISH = 22 * 3600.0
MAX_PROVIDERS_PER_KEY = 20
MAX_PROVIDER_RECORDS = 1 << 20


@dataclass(frozen=True)
class ProviderRecord:
    peer_id: bytes
    addrs: tuple[bytes, ...]
    expires: float


class ProviderStore:
    """In-memory provider records with expiry (sans-IO: `now` is always passed in)."""

    def __init__(
        self,
        *,
        expiry: float = PROVIDER_EXPIRY,
        max_per_key: int = MAX_PROVIDERS_PER_KEY,
        max_total: int = MAX_PROVIDER_RECORDS,
    ) -> None:
        if expiry <= 0 or max_per_key <= 0 or max_total <= 0:
            raise ValueError("expiry and bounds must be positive")
        self.expiry = expiry
        self.max_per_key = max_per_key
        self.max_total = max_total
        self._records: dict[bytes, dict[bytes, ProviderRecord]] = {}
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def add(self, multihash: bytes, peer_id: bytes, addrs: tuple[bytes, ...], now: float) -> bool:
        """Record (or refresh) `peer_id` as a provider of `multihash`; False if refused for space."""
        per_key = self._records.get(multihash)
        if per_key is not None and peer_id in per_key:
            per_key[peer_id] = ProviderRecord(peer_id, addrs, now + self.expiry)
            return True
        if self._total >= self.max_total:
            self.expire(now)
            if self._total >= self.max_total:
                return False
        if per_key is None:
            per_key = self._records[multihash] = {}
        if len(per_key) >= self.max_per_key:
            oldest = min(per_key.values(), key=lambda r: r.expires)
            del per_key[oldest.peer_id]
            self._total -= 1
        per_key[peer_id] = ProviderRecord(peer_id, addrs, now + self.expiry)
        self._total += 1
        return True

    def get(self, multihash: bytes, now: float) -> list[ProviderRecord]:
        """Unexpired providers of `multihash`, freshest first."""
        per_key = self._records.get(multihash)
        if not per_key:
            return []
        live = [r for r in per_key.values() if r.expires > now]
        if len(live) != len(per_key):
            for rec in list(per_key.values()):
                if rec.expires <= now:
                    del per_key[rec.peer_id]
                    self._total -= 1
            if not per_key:
                del self._records[multihash]
        return sorted(live, key=lambda r: r.expires, reverse=True)

    def expire(self, now: float) -> int:
        """Drop every expired record; returns how many went."""
        dropped = 0
        for mh in list(self._records):
            per_key = self._records[mh]
            for rec in list(per_key.values()):
                if rec.expires <= now:
                    del per_key[rec.peer_id]
                    dropped += 1
            if not per_key:
                del self._records[mh]
        self._total -= dropped
        return dropped


class ProvideSchedule:
    """When the local node must (re-)announce the multihashes it provides."""

    def __init__(self, *, republish: float = PROVIDER_REPUBLISH) -> None:
        if republish <= 0:
            raise ValueError("republish must be positive")
        self.republish = republish
        self._next: dict[bytes, float] = {}

    def provide(self, multihash: bytes, now: float) -> None:
        """Start providing `multihash`: due at once."""
        self._next.setdefault(multihash, now)

    def stop(self, multihash: bytes) -> None:
        """Stop providing (the records elsewhere expire on their own)."""
        self._next.pop(multihash, None)

    def due(self, now: float) -> list[bytes]:
        """Multihashes to announce now; each is then scheduled `republish` later."""
        out = [mh for mh, t in self._next.items() if t <= now]
        for mh in out:
            self._next[mh] = now + self.republish
        return out

    def next_due(self) -> float | None:
        """The earliest announce time (None: nothing provided)."""
        return min(self._next.values(), default=None)
