"""The energy ledger: one SQLite row per measured operation, and totals.

Why a table of raw rows rather than running totals: rows keep the method of
each figure (RAPL or estimate) and let a report be recomputed when the model
changes. Totals from other peers (`merge_summaries`) give swarm-wide figures,
since a replica's energy is spent on the peer that holds it.

The caller owns the connection and its transactions (the repo index, WAL);
`record` does not commit. Pure and synchronous, like the rest of `store/`.
"""

from __future__ import annotations

import math
import sqlite3
import time
from typing import Any, Iterable, Mapping

from shoal.store.errors import InvalidInput
from shoal.store.energy.meter import ESTIMATE, RAPL

EC_ENCODE = "ec-encode"
EC_REPAIR = "ec-repair"
KINDS: tuple[str, ...] = (
    "put",
    "replicate-in",
    "replicate-out",
    "serve",
    "audit-prove",
    "audit-verify",
    "repair",
    "gc",
    # Erasure coding (issue 18): encoding an object into K + M shards, and
    # rebuilding lost shards from K healthy ones. Their names live here only;
    # the replication service measures them, the energy model reads them.
    EC_ENCODE,
    EC_REPAIR,
)
METHODS: tuple[str, ...] = (RAPL, ESTIMATE)
BYTE_FIELDS: tuple[str, ...] = ("bytes_hashed", "bytes_written", "bytes_sent", "bytes_received")
# The byte count an operation's "per GB" figure divides by.
PRIMARY_BYTES: dict[str, str] = {
    "put": "bytes_hashed",
    "replicate-in": "bytes_received",
    "replicate-out": "bytes_sent",
    "serve": "bytes_sent",
    "audit-prove": "bytes_hashed",
    "audit-verify": "bytes_hashed",
    "repair": "bytes_received",
    "gc": "bytes_written",
    EC_ENCODE: "bytes_hashed",  # the object's bytes read and encoded
    EC_REPAIR: "bytes_hashed",  # healthy shard bytes read + rebuilt shard bytes written
}

Totals = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS energy_ledger (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    joules REAL NOT NULL CHECK (joules >= 0),
    method TEXT NOT NULL,
    bytes_hashed INTEGER NOT NULL DEFAULT 0,
    bytes_written INTEGER NOT NULL DEFAULT 0,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    duration_s REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS energy_ledger_kind ON energy_ledger(kind);
"""


# For `shoal.store.persist.index.register_schema("energy", MIGRATIONS)`: append, never edit.
MIGRATIONS: tuple[str, ...] = (SCHEMA,)


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the ledger table if missing; safe to call on every open.

    Statement by statement rather than `executescript`, which would first
    COMMIT whatever transaction the caller has open.
    """
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"energy ledger: {name} must be a non-negative int, got {value!r}")
    return value


def _check_real(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"energy ledger: {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"energy ledger: {name} must be finite and >= 0, got {value!r}")
    return float(value)


def record(
    conn: sqlite3.Connection,
    kind: str,
    joules: float,
    method: str,
    bytes_hashed: int = 0,
    bytes_written: int = 0,
    bytes_sent: int = 0,
    bytes_received: int = 0,
    duration_s: float = 0.0,
    at: float | None = None,
) -> None:
    """Append one operation's energy and byte counts. Does not commit."""
    if kind not in KINDS:
        raise InvalidInput(f"energy ledger: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if method not in METHODS:
        raise InvalidInput(f"energy ledger: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    conn.execute(
        "INSERT INTO energy_ledger (at, kind, joules, method, bytes_hashed, bytes_written,"
        " bytes_sent, bytes_received, duration_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            time.time() if at is None else at,
            kind,
            _check_real("joules", joules),
            method,
            _check_count("bytes_hashed", bytes_hashed),
            _check_count("bytes_written", bytes_written),
            _check_count("bytes_sent", bytes_sent),
            _check_count("bytes_received", bytes_received),
            _check_real("duration_s", duration_s),
        ),
    )


def _empty() -> Totals:
    t: Totals = {"count": 0, "joules": 0.0, "duration_s": 0.0, "methods": {}}
    for f in BYTE_FIELDS:
        t[f] = 0
    return t


def summary(conn: sqlite3.Connection) -> dict[str, Totals]:
    """Totals per kind: count, joules, the four byte counts, duration_s, and
    `methods` (method → number of operations) so mixed sources stay visible.
    Kinds with no rows are absent."""
    out: dict[str, Totals] = {}
    rows = conn.execute(
        "SELECT kind, method, COUNT(*), SUM(joules), SUM(bytes_hashed), SUM(bytes_written),"
        " SUM(bytes_sent), SUM(bytes_received), SUM(duration_s)"
        " FROM energy_ledger GROUP BY kind, method ORDER BY kind, method"
    )
    for kind, method, n, j, bh, bw, bs, br, dur in rows:
        t = out.setdefault(kind, _empty())
        _add(t, {
            "count": n, "joules": j, "duration_s": dur, "methods": {method: n},
            "bytes_hashed": bh, "bytes_written": bw, "bytes_sent": bs, "bytes_received": br,
        })
    return out


def _add(into: Totals, t: Mapping[str, Any]) -> None:
    into["count"] = int(into["count"]) + int(t.get("count", 0))
    into["joules"] = float(into["joules"]) + float(t.get("joules", 0.0))
    into["duration_s"] = float(into["duration_s"]) + float(t.get("duration_s", 0.0))
    for f in BYTE_FIELDS:
        into[f] = int(into[f]) + int(t.get(f, 0))
    methods = into["methods"]
    assert isinstance(methods, dict)
    for m, n in dict(t.get("methods", {})).items():
        methods[m] = methods.get(m, 0) + int(n)


def _validate_remote(t: Mapping[str, Any]) -> None:
    for f in ("count", "joules", "duration_s", *BYTE_FIELDS):
        v = t.get(f, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{f} must be a finite number >= 0, got {v!r}")
    methods = t.get("methods", {})
    if not isinstance(methods, Mapping) or any(m not in METHODS for m in methods):
        raise ValueError(f"methods must map {'/'.join(METHODS)} to counts, got {methods!r}")


def merge_summaries(summaries: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, Totals]:
    """Add per-kind totals from several peers (e.g. this node's and those its
    peers reported) into swarm totals. Unknown kinds are rejected, since a
    remote summary is untrusted input."""
    out: dict[str, Totals] = {}
    for s in summaries:
        for kind, t in s.items():
            if kind not in KINDS:
                raise InvalidInput(f"energy summary: unknown kind {kind!r}")
            try:
                _validate_remote(t)
                _add(out.setdefault(kind, _empty()), t)
            except (TypeError, ValueError, AssertionError) as e:
                raise InvalidInput(f"energy summary: bad totals for {kind!r}: {e}") from e
    return out
