"""Storage agreements, replica states and audit history, kept in the repo index.

Why in `index.sqlite`: an agreement is a promise that must survive restarts
and crashes exactly like a pin does, and the index already gives WAL,
FULL sync and one transaction per change. Tables (component "replication",
registered with `store.index.register_schema`):

- `repl_objects`: objects this node owns (role "owner"), holds for someone
  (role "holder"), or looks after as deputy of a gone owner (role
  "deputy"); the signed manifest, the wanted replica count, the last offer.
- `repl_holders`: the owner's (or deputy's) view of each holder: policy
  state, timeouts in a row, last audit.
- `repl_agreements`: both signatures of each agreement (offer signed by the
  requester, agreement signed by the holder), as evidence.
- `repl_audits`: audit history (who, when, ok, why), bounded.
- `repl_nonces`: nonces a holder has answered, so replays are refused.

Also here, because both sides must build the exact same bytes: the offer
(what a StoreRequest's `manifest` field carries) and the agreement's
signing bytes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from typing import Sequence

import msgpack

from store.index import Index, register_schema

from .errors import ProtocolError
from .repair_policy import Replica, State

__all__ = [
    "COMPONENT", "MIGRATIONS", "Offer", "agreement_bytes", "offer_signing_bytes",
    "ObjectRow", "HolderRow", "AuditRow", "Agreements",
]

COMPONENT = "replication"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE repl_objects (
        cid TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('owner', 'holder', 'deputy')),
        manifest BLOB NOT NULL,
        owner TEXT NOT NULL,
        replicas_wanted INTEGER NOT NULL,
        size INTEGER NOT NULL,
        offer BLOB,
        created REAL NOT NULL
    );
    CREATE TABLE repl_holders (
        cid TEXT NOT NULL,
        peer_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'ok', 'failed', 'lost')),
        timeouts_in_a_row INTEGER NOT NULL DEFAULT 0,
        proven_loss INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0,
        since REAL NOT NULL,
        last_audit_time REAL,
        last_audit_ok INTEGER,
        detail TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (cid, peer_id)
    ) WITHOUT ROWID;
    CREATE TABLE repl_agreements (
        cid TEXT NOT NULL,
        requester TEXT NOT NULL,
        holder TEXT NOT NULL,
        offer BLOB NOT NULL,
        requester_sig BLOB NOT NULL,
        holder_sig BLOB NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (cid, requester, holder)
    ) WITHOUT ROWID;
    CREATE TABLE repl_audits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cid TEXT NOT NULL,
        peer_id TEXT NOT NULL,
        time REAL NOT NULL,
        ok INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        challenged INTEGER NOT NULL,
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX repl_audits_by_cid ON repl_audits(cid, peer_id, id);
    CREATE TABLE repl_nonces (
        nonce BLOB PRIMARY KEY,
        cid TEXT NOT NULL,
        time REAL NOT NULL
    );
    """,
)
register_schema(COMPONENT, MIGRATIONS)

MAX_AUDIT_ROWS = 100_000  # history kept per node; older rows are pruned
MAX_NONCE_ROWS = 200_000  # replay window: far more audits than any deadline spans
MAX_OFFER_HOLDERS = 64

_OFFER_DOMAIN = b"shoal-offer-v1\x00"
_AGREEMENT_DOMAIN = b"shoal-agreement-v1\x00"


# ------------------------------------------------------------------ wire formats


@dataclass(frozen=True)
class Offer:
    """What a StoreRequest's `manifest` field carries.

    msgpack array [1, manifest bytes (store.manifest, signed by the owner),
    replicas wanted, [holder peer id bytes...]]. The holder list lets a
    holder find the other copies (to pull from, and to elect a deputy if the
    owner disappears). The requester signs `offer_signing_bytes` (the
    StoreRequest's `owner_sig`); the manifest carries the owner's own
    signature, so a deputy can re-offer an object it does not own.
    """

    manifest: bytes
    replicas_wanted: int
    holders: tuple[bytes, ...]

    def encode(self) -> bytes:
        out: bytes = msgpack.packb([1, self.manifest, self.replicas_wanted, list(self.holders)], use_bin_type=True)
        return out

    @classmethod
    def decode(cls, data: bytes) -> "Offer":
        try:
            v = msgpack.unpackb(data, raw=False, max_bin_len=4096, max_array_len=MAX_OFFER_HOLDERS,
                                max_str_len=0, max_map_len=0, max_ext_len=0)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ProtocolError(f"offer is not valid msgpack: {type(exc).__name__}") from None
        if not (isinstance(v, list) and len(v) == 4 and v[0] == 1):
            raise ProtocolError("offer must be [1, manifest, replicas, holders]")
        _, manifest, wanted, holders = v
        if not isinstance(manifest, bytes) or not isinstance(wanted, int) or isinstance(wanted, bool):
            raise ProtocolError("offer fields have the wrong types")
        if not 1 <= wanted <= MAX_OFFER_HOLDERS or not isinstance(holders, list):
            raise ProtocolError("offer replica count out of range")
        if not all(isinstance(h, bytes) and 2 <= len(h) <= 64 for h in holders):
            raise ProtocolError("offer holder ids malformed")
        offer = cls(manifest, wanted, tuple(holders))
        if offer.encode() != data:
            raise ProtocolError("offer encoding is not canonical")
        return offer


def offer_signing_bytes(offer: bytes) -> bytes:
    """What the requester signs (StoreRequest.owner_sig)."""
    return _OFFER_DOMAIN + offer


def agreement_bytes(offer: bytes, requester: bytes, holder: bytes) -> bytes:
    """What the holder signs (StoreResponse.agreement_sig): "I, holder, keep
    the object of this offer for this requester". Hashing the offer keeps it
    short; the ids are length-prefixed so no two triples share bytes."""
    digest = hashlib.sha256(offer).digest()
    return _AGREEMENT_DOMAIN + digest + bytes([len(requester)]) + requester + bytes([len(holder)]) + holder


# ------------------------------------------------------------------ rows


@dataclass(frozen=True)
class ObjectRow:
    cid: str
    role: str
    manifest: bytes
    owner: str
    replicas_wanted: int
    size: int
    offer: bytes | None
    created: float


@dataclass(frozen=True)
class HolderRow:
    cid: str
    peer_id: str
    replica: Replica
    since: float
    last_audit_time: float | None
    last_audit_ok: bool | None
    detail: str

    def as_json(self) -> dict[str, object]:
        last = None
        if self.last_audit_time is not None:
            last = {"time": self.last_audit_time, "ok": bool(self.last_audit_ok)}
        return {"peer_id": self.peer_id, "state": self.replica.state.value, "last_audit": last,
                "timeouts_in_a_row": self.replica.timeouts_in_a_row,
                "proven_loss": self.replica.proven_loss, "detail": self.detail}


@dataclass(frozen=True)
class AuditRow:
    cid: str
    peer_id: str
    time: float
    ok: bool
    outcome: str
    challenged: int
    error: str


def _holder(row: Sequence[object]) -> HolderRow:
    cid, peer, state, t, loss, refused, since, lat, lao, detail = row
    replica = Replica(State(str(state)), int(t), bool(loss), bool(refused))  # type: ignore[call-overload]
    return HolderRow(str(cid), str(peer), replica, float(since),  # type: ignore[arg-type]
                     None if lat is None else float(lat),  # type: ignore[arg-type]
                     None if lao is None else bool(lao), str(detail))


_HOLDER_COLS = ("cid, peer_id, state, timeouts_in_a_row, proven_loss, refused, since, "
                "last_audit_time, last_audit_ok, detail")


class Agreements:
    """Synchronous access to the replication tables (call from worker threads
    or directly: every call is one short SQLite transaction)."""

    def __init__(self, index: Index) -> None:
        self.index = index
        index.apply_schema(COMPONENT, MIGRATIONS)  # the repo may have been opened before we registered

    # -- objects -----------------------------------------------------------

    def put_object(self, cid: str, role: str, manifest: bytes, owner: str, replicas_wanted: int,
                   size: int, offer: bytes | None = None) -> None:
        with self.index.transaction() as db:
            db.execute(
                "INSERT INTO repl_objects (cid, role, manifest, owner, replicas_wanted, size, offer, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cid) DO UPDATE SET role = excluded.role, "
                "manifest = excluded.manifest, owner = excluded.owner, "
                "replicas_wanted = excluded.replicas_wanted, size = excluded.size, "
                "offer = COALESCE(excluded.offer, repl_objects.offer)",
                (cid, role, manifest, owner, replicas_wanted, size, offer, time.time()),
            )

    def set_wanted(self, cid: str, replicas_wanted: int) -> None:
        with self.index.transaction() as db:
            db.execute("UPDATE repl_objects SET replicas_wanted = ? WHERE cid = ?", (replicas_wanted, cid))

    def set_role(self, cid: str, role: str) -> None:
        with self.index.transaction() as db:
            db.execute("UPDATE repl_objects SET role = ? WHERE cid = ?", (role, cid))

    def get_object(self, cid: str) -> ObjectRow | None:
        with self.index.snapshot() as db:
            row = db.execute("SELECT cid, role, manifest, owner, replicas_wanted, size, offer, created "
                             "FROM repl_objects WHERE cid = ?", (cid,)).fetchone()
        return ObjectRow(*row) if row else None

    def objects(self, roles: Sequence[str] = ("owner", "holder", "deputy")) -> list[ObjectRow]:
        marks = ",".join("?" * len(roles))
        with self.index.snapshot() as db:
            rows = db.execute("SELECT cid, role, manifest, owner, replicas_wanted, size, offer, created "
                              f"FROM repl_objects WHERE role IN ({marks}) ORDER BY created, cid",
                              tuple(roles)).fetchall()
        return [ObjectRow(*r) for r in rows]

    def held_bytes(self) -> int:
        """Bytes this node holds for other peers (what --quota limits)."""
        with self.index.snapshot() as db:
            row = db.execute("SELECT COALESCE(SUM(size), 0) FROM repl_objects WHERE role != 'owner'").fetchone()
        return int(row[0])

    # -- holders -------------------------------------------------------------

    def set_holder(self, cid: str, peer_id: str, replica: Replica, detail: str = "") -> None:
        with self.index.transaction() as db:
            db.execute(
                "INSERT INTO repl_holders (cid, peer_id, state, timeouts_in_a_row, proven_loss, refused, since, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cid, peer_id) DO UPDATE SET "
                "state = excluded.state, timeouts_in_a_row = excluded.timeouts_in_a_row, "
                "proven_loss = excluded.proven_loss, refused = excluded.refused, detail = excluded.detail, "
                "since = CASE WHEN repl_holders.state = excluded.state THEN repl_holders.since ELSE excluded.since END",
                (cid, peer_id, replica.state.value, replica.timeouts_in_a_row, int(replica.proven_loss),
                 int(replica.refused), time.time(), detail),
            )

    def holders(self, cid: str) -> list[HolderRow]:
        with self.index.snapshot() as db:
            rows = db.execute(f"SELECT {_HOLDER_COLS} FROM repl_holders WHERE cid = ? ORDER BY since, peer_id",
                              (cid,)).fetchall()
        return [_holder(r) for r in rows]

    def holder(self, cid: str, peer_id: str) -> HolderRow | None:
        with self.index.snapshot() as db:
            row = db.execute(f"SELECT {_HOLDER_COLS} FROM repl_holders WHERE cid = ? AND peer_id = ?",
                             (cid, peer_id)).fetchone()
        return _holder(row) if row else None

    # -- agreements -------------------------------------------------------------

    def record_agreement(self, cid: str, requester: str, holder: str, offer: bytes,
                         requester_sig: bytes, holder_sig: bytes) -> None:
        with self.index.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO repl_agreements "
                "(cid, requester, holder, offer, requester_sig, holder_sig, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cid, requester, holder, offer, requester_sig, holder_sig, time.time()),
            )

    def agreements(self, cid: str) -> list[dict[str, object]]:
        with self.index.snapshot() as db:
            rows = db.execute("SELECT requester, holder, created FROM repl_agreements WHERE cid = ? "
                              "ORDER BY created", (cid,)).fetchall()
        return [{"requester": r, "holder": h, "created": c} for r, h, c in rows]

    # -- audits --------------------------------------------------------------------

    def record_audit(self, cid: str, peer_id: str, outcome: str, challenged: int, error: str,
                     replica: Replica | None) -> None:
        """One audit result and (for the auditor) the replica's new state, atomically."""
        now = time.time()
        ok = outcome == "ok"
        with self.index.transaction() as db:
            db.execute("INSERT INTO repl_audits (cid, peer_id, time, ok, outcome, challenged, error) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (cid, peer_id, now, int(ok), outcome, challenged, error))
            if replica is not None:
                db.execute(
                    "UPDATE repl_holders SET state = ?, timeouts_in_a_row = ?, proven_loss = ?, "
                    "last_audit_time = ?, last_audit_ok = ?, detail = ?, "
                    "since = CASE WHEN state = ? THEN since ELSE ? END WHERE cid = ? AND peer_id = ?",
                    (replica.state.value, replica.timeouts_in_a_row, int(replica.proven_loss), now, int(ok),
                     error, replica.state.value, now, cid, peer_id),
                )
            _prune(db, "repl_audits", "id", MAX_AUDIT_ROWS)

    def audits(self, cid: str | None = None, limit: int = 1000) -> list[AuditRow]:
        sql = "SELECT cid, peer_id, time, ok, outcome, challenged, error FROM repl_audits"
        args: tuple[object, ...] = ()
        if cid is not None:
            sql += " WHERE cid = ?"
            args = (cid,)
        sql += " ORDER BY id DESC LIMIT ?"
        with self.index.snapshot() as db:
            rows = db.execute(sql, args + (limit,)).fetchall()
        return [AuditRow(c, p, t, bool(o), oc, n, e) for c, p, t, o, oc, n, e in rows]

    def passed_audits(self) -> dict[str, int]:
        """Audits each peer has passed for us (vetting new peers in placement)."""
        with self.index.snapshot() as db:
            rows = db.execute("SELECT peer_id, COUNT(*) FROM repl_audits WHERE outcome = 'ok' "
                              "GROUP BY peer_id").fetchall()
        return {str(p): int(n) for p, n in rows}

    def use_nonce(self, nonce: bytes, cid: str) -> bool:
        """Remember a nonce; False if it was seen before (a replay)."""
        with self.index.transaction() as db:
            try:
                db.execute("INSERT INTO repl_nonces (nonce, cid, time) VALUES (?, ?, ?)", (nonce, cid, time.time()))
            except sqlite3.IntegrityError:
                return False
            _prune(db, "repl_nonces", "time", MAX_NONCE_ROWS)
        return True


def _prune(db: sqlite3.Connection, table: str, order: str, keep: int) -> None:
    # Cheap check first: most commits are far below the cap.
    (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    if count > keep:
        db.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY {order} LIMIT ?)",
                   (count - keep,))
