"""Helpers shared by the peer table, backoff and reputation tests: stable peer
ids, a fake wall clock, and a count of the index's write transactions."""

from __future__ import annotations

import hashlib

from shoal.p2p.secure.identity import PeerId
from shoal.store.persist.index import Index


def pid(n: int) -> PeerId:
    """The same peer id for the same `n` in every test."""
    return PeerId.from_public_key(hashlib.sha256(b"peer %d" % n).digest())


class FakeClock:
    """A wall clock that moves only when told (no sleeps in tests)."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def count_write_transactions(idx: Index) -> list[str]:
    """Every `BEGIN IMMEDIATE` the index runs from now on (each write is one)."""
    seen: list[str] = []
    idx._db.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("BEGIN IMMEDIATE") else None)
    return seen
