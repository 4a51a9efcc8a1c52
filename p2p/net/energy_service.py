"""Energy accounting on a running node: hooks, the ledger exchange, /v1/energy.

`install(node)` (called after the replication service's install, so it can
wrap that service's handlers) registers an `EnergyService`, which attaches
through the node's extension points (shoal.p2p.net.hooks):
- block serving (WANT_BLOCK), watched as a serve observer, aggregated as
  `serve`, or as `replicate-out`
  while an outgoing store request to that peer is open (`replicating_to`);
  totals stay in memory and a background task flushes them every
  `FLUSH_INTERVAL_S` and at shutdown;
- the holder's StoreRequest handler measured as `replicate-in`, its
  AuditChallenge handler as `audit-prove`;
- a LedgerSummaryRequest handler answering this node's totals;
- `GET /v1/energy`: the report over this node's objects with every connected
  peer's summary merged in (asked in parallel, each bounded by a timeout).

User-driven fetches (`get`, `cat`) are recorded only where the blocks are
served, as `serve`: the issue's kinds have no "fetch", and charging both
sides would count one transfer twice in swarm totals.

Not here: the arithmetic (shoal.store.energy.report) or the measuring itself
(shoal.store.energy.accounting); this module only wires them to trio and the wire.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Mapping, Sequence

import trio

from shoal.store.ipld.cid import cid_from_bytes
from shoal.store.energy import ledger
from shoal.store.energy.accounting import Bytes, EnergyAccount, account_for
from shoal.store.energy.coefficients import Coefficients
from shoal.store.energy.model import Layout
from shoal.store.energy.report import Report, build_report
from shoal.store.errors import StoreError

from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.net.hooks import Handler
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import (
    AuditChallenge, AuditProof, LedgerEntry, LedgerSummary, LedgerSummaryRequest, Message,
    StoreRequest, StoreResponse,
)

if TYPE_CHECKING:
    from shoal.store.persist.repo import Repo
    from shoal.p2p.net.node import Node

log = logging.getLogger("shoal.energy")

FLUSH_INTERVAL_S = 5.0
PEER_SUMMARY_TIMEOUT_S = 3.0

__all__ = [
    "EnergyService", "install", "measuring", "replicating_to", "repo_facts", "repo_scheme", "local_report",
    "summary_from_message", "FLUSH_INTERVAL_S",
]


def _ec_tables(repo: "Repo") -> tuple[dict[str, Layout], set[str]]:
    """The erasure-coded objects this node owns (cid -> scheme, the owner's
    copy kept unless `--ec-drop-local`) and every shard CID, from the
    replication service's `repl_ec` tables; nothing in a repo without them."""
    try:
        with repo.index.snapshot() as db:
            ec = {str(cid): Layout.ec(int(k), int(m), owner_copy=not bool(drop))
                  for cid, k, m, drop in db.execute(
                      # A deputy's rows are the gone owner's objects, not this node's.
                      "SELECT cid, k, m, drop_local FROM repl_ec WHERE deputy_for IS NULL")}
            shards = {str(s) for (s,) in db.execute("SELECT shard_cid FROM repl_ec_shards")}
    except sqlite3.OperationalError:
        return {}, set()  # no erasure-coding tables in this repo
    return ec, shards


def repo_scheme(repo: "Repo") -> tuple[int, int, int, Layout]:
    """(stored_bytes, copies, objects, scheme) for the report, from the repo's index.

    stored_bytes = sum of the sizes of the objects put here (an EC object's
    shards, imported as objects of their own, are not counted twice: the
    scheme counts their bytes); copies = the replicas each wants (the
    replication service's `repl_objects`), weighted by size and rounded, 1
    where unknown or without that table. The scheme is EC K+M when
    erasure-coded objects hold at least half the bytes (the K+M holding
    most), else replicas `copies`.
    """
    ec, shards = _ec_tables(repo)
    objects = [o for o in repo.objects() if o.cid not in shards]
    stored = sum(o.size for o in objects)
    wanted: dict[str, int] = {}
    try:
        with repo.index.snapshot() as db:
            for cid, n in db.execute(
                "SELECT cid, replicas_wanted FROM repl_objects WHERE role IN ('owner', 'deputy')"
            ):
                wanted[str(cid)] = max(1, int(n))
    except sqlite3.OperationalError:
        pass  # no replication tables in this repo: every object has one copy
    if not objects:
        copies = max(wanted.values(), default=1)
        return 0, copies, 0, Layout.replicas(copies)
    if stored == 0:
        copies = max(wanted.get(o.cid, 1) for o in objects)
        return 0, copies, len(objects), Layout.replicas(copies)
    weighted = sum(o.size * wanted.get(o.cid, 1) for o in objects if o.cid not in ec) / stored
    copies = max(1, round(weighted))
    by_scheme: dict[Layout, int] = {}
    for o in objects:
        if o.cid in ec:
            by_scheme[ec[o.cid]] = by_scheme.get(ec[o.cid], 0) + o.size
    if by_scheme and 2 * sum(by_scheme.values()) >= stored:
        return stored, copies, len(objects), max(by_scheme, key=lambda lay: by_scheme[lay])
    return stored, copies, len(objects), Layout.replicas(copies)


def repo_facts(repo: "Repo") -> tuple[int, int, int]:
    """(stored_bytes, copies, objects): `repo_scheme` without the scheme."""
    stored, copies, objects, _ = repo_scheme(repo)
    return stored, copies, objects


def local_report(
    repo: "Repo",
    summary: Mapping[str, Mapping[str, Any]],
    coefficients: Coefficients,
    peers: list[Mapping[str, Mapping[str, Any]]] | None = None,
) -> Report:
    """The report for this repo's objects, in their scheme; `peers`' summaries make it swarm-wide."""
    stored, copies, objects, scheme = repo_scheme(repo)
    return build_report(summary, stored, copies, coefficients, peers or [], objects=max(objects, 1),
                        scheme=scheme)


def summary_to_message(request_id: int, summary: Mapping[str, Mapping[str, Any]]) -> LedgerSummary:
    """kind -> (joules, the kind's primary byte count), as the wire carries it."""
    entries = tuple(
        LedgerEntry(kind, float(t["joules"]), int(t[ledger.PRIMARY_BYTES[kind]]))
        for kind, t in sorted(summary.items()) if kind in ledger.PRIMARY_BYTES
    )
    return LedgerSummary(request_id, entries)


def summary_from_message(msg: LedgerSummary) -> dict[str, ledger.Totals]:
    """A peer's entries in `ledger.summary` form. Kinds we do not know (a newer
    peer) are dropped; counts and methods do not travel, so they are 0 / {}."""
    out: dict[str, ledger.Totals] = {}
    for e in msg.entries:
        field = ledger.PRIMARY_BYTES.get(e.kind)
        if field is None:
            continue
        t: ledger.Totals = {"count": 0, "joules": e.joules, "duration_s": 0.0, "methods": {}}
        for f in ledger.BYTE_FIELDS:
            t[f] = 0
        t[field] = e.nbytes
        out[e.kind] = t
    return out


class EnergyService:
    """The node's energy hooks (a NodeService); `node.energy` once registered."""

    def __init__(self, node: "Node", account: EnergyAccount | None = None) -> None:
        self.node = node
        self.account = account if account is not None else account_for(node.repo)
        self._outgoing: dict[PeerId, list[str]] = {}  # peer -> kinds of open store requests to it

    def attach(self, node: "Node") -> None:
        """Hook into the node; registered after every service whose handlers it wraps."""
        node.provide_energy(self)
        # The lanes (shoal.p2p.lanes) do the node's hashing, Noise and writes
        # in other processes: every meter adds their CPU to the node's own.
        self.account.extra_cpu = lambda: node.lane_pool.live_cpu_seconds() if node.lane_pool is not None else 0.0
        # What the lanes served never passes the node's serve hooks: their
        # reports become serve totals (bytes and their share of lane CPU).
        node.lane_serve_observers.append(self.account.add_served)
        node.wrap_handler(StoreRequest, self._wrap_store_request)
        node.wrap_handler(AuditChallenge, self._wrap_audit_challenge)
        node.add_handler(LedgerSummaryRequest, self.on_summary_request)
        node.add_serve_observer(self)
        node.add_route("GET", "/v1/energy", self.api_energy)

    async def run(self) -> None:
        await self.flush_loop()

    # -- serving ------------------------------------------------------------------

    @contextmanager
    def serving(self, peer: PeerId) -> Iterator[Bytes]:
        """Around one WANT_BLOCK of `peer`: `replicate-out` (or the open store
        request's kind) while we asked it to take a replica, else `serve`."""
        kinds = self._outgoing.get(peer)
        with self.account.serving(kinds[-1] if kinds else "serve") as op:
            yield op

    @asynccontextmanager
    async def measuring(self, kind: str) -> AsyncIterator[Bytes]:
        """One ledger row of `kind` (written from a worker thread) when the block ends normally."""
        op = Bytes()
        meter = self.account.meter(kind)
        with meter:
            yield op
        await trio.to_thread.run_sync(self.account.record, meter.result, op)

    @contextmanager
    def replicating_to(self, peer: PeerId, kind: str = "replicate-out") -> Iterator[None]:
        """While open, blocks served to `peer` count as `kind`, not `serve`."""
        self._outgoing.setdefault(peer, []).append(kind)
        try:
            yield
        finally:
            kinds = self._outgoing[peer]
            kinds.remove(kind)
            if not kinds:
                del self._outgoing[peer]

    async def flush_loop(self) -> None:
        """Background: write aggregated serve totals now and then, and at shutdown."""
        try:
            while True:
                await trio.sleep(FLUSH_INTERVAL_S)
                await trio.to_thread.run_sync(self.account.flush)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self.account.flush)
                except (StoreError, sqlite3.Error) as exc:
                    log.warning("energy: final flush failed: %s", exc)

    # -- holder-side replication and audits ----------------------------------------------

    def _wrap_store_request(self, handler: Handler) -> Handler:
        async def on_store_request(conn: PeerConnection, msg: Message) -> Sequence[Message]:
            assert isinstance(msg, StoreRequest)
            held_before = await trio.to_thread.run_sync(self._holds, msg.root_cid)
            meter = self.account.meter("replicate-in")
            with meter:
                replies = await handler(conn, msg)
            if any(isinstance(r, StoreResponse) and r.accepted for r in replies):
                # A refresh of a replica we already hold moves no data; a new
                # one pulls the whole object (a resumed pull overstates a bit).
                n = 0 if held_before else msg.size
                await trio.to_thread.run_sync(self.account.record, meter.result, Bytes(n, n, 0, n))
            return replies

        return on_store_request

    def _holds(self, root_cid: bytes) -> bool:
        try:
            return bool(self.node.repo.index.is_pinned(str(cid_from_bytes(root_cid))))
        except StoreError:
            return False

    def _wrap_audit_challenge(self, handler: Handler) -> Handler:
        async def on_audit_challenge(conn: PeerConnection, msg: Message) -> Sequence[Message]:
            meter = self.account.meter("audit-prove")
            with meter:
                replies = await handler(conn, msg)
            proofs = [r for r in replies if isinstance(r, AuditProof)]
            if proofs:  # refusals and replays are not audits
                sent = sum(len(p.proof) + len(p.sig) for p in proofs)
                await trio.to_thread.run_sync(
                    self.account.record, meter.result, Bytes(sum(len(p.proof) for p in proofs), 0, sent, 0))
            return replies

        return on_audit_challenge

    # -- summaries ------------------------------------------------------------------------

    async def on_summary_request(self, conn: PeerConnection, msg: Message) -> list[Message]:
        summary = await trio.to_thread.run_sync(self.account.summary)
        return [summary_to_message(msg.request_id, summary)]

    async def peer_summaries(self, timeout: float = PEER_SUMMARY_TIMEOUT_S) -> dict[str, dict[str, Any]]:
        """Every connected peer's summary, asked in parallel; peer id -> summary
        (absent: no answer in time, or an invalid one)."""
        got: dict[str, dict[str, Any]] = {}

        async def ask(peer: PeerId) -> None:
            conn = self.node.connection_to(peer)
            if conn is None:
                return
            try:
                replies = await conn.request(lambda rid: LedgerSummaryRequest(rid), timeout=timeout)
            except RequestFailed as exc:
                log.info("energy: no ledger summary from %s: %s", peer, exc)
                return
            for r in replies:
                if isinstance(r, LedgerSummary):
                    summary = summary_from_message(r)
                    try:
                        ledger.merge_summaries([summary])  # validate before trusting
                    except StoreError as exc:
                        log.info("energy: bad ledger summary from %s: %s", peer, exc)
                        return
                    got[str(peer)] = summary

        async with trio.open_nursery() as nursery:
            for peer in self.node.connected_peers():
                nursery.start_soon(ask, peer)
        return got

    async def api_energy(self, p: dict[str, Any]) -> Any:
        """GET /v1/energy: this node's objects, with the swarm's operation totals."""
        peers = await self.peer_summaries()
        summary = await trio.to_thread.run_sync(self.account.summary)
        report = await trio.to_thread.run_sync(
            lambda: local_report(self.node.repo, summary, self.account.coefficients, list(peers.values())))
        report["node"] = {"peer_id": str(self.node.peer_id), "operations": _compact(summary)}
        report["swarm_peers"] = {pid: _compact(s) for pid, s in sorted(peers.items())}
        return report


def _compact(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {"joules": float(t["joules"]), "bytes": int(t[ledger.PRIMARY_BYTES[k]])}
            for k, t in summary.items() if k in ledger.PRIMARY_BYTES}


def install(node: "Node") -> EnergyService:
    """Register energy accounting on `node` (after replication's install)."""
    service = EnergyService(node)
    node.register(service)
    return service


@asynccontextmanager
async def measuring(node: "Node", kind: str) -> AsyncIterator[Bytes]:
    """For async node code: `async with measuring(node, "audit-verify") as op:`.

    Records one ledger row (written from a worker thread) when the block ends
    normally; a no-op when the node has no energy service.
    """
    service = node.energy
    if service is None:
        yield Bytes()
        return
    async with service.measuring(kind) as op:
        yield op


@contextmanager
def replicating_to(node: "Node", peer: PeerId, kind: str = "replicate-out") -> Iterator[None]:
    """Owner side: `with replicating_to(node, peer): await conn.request(StoreRequest...)`,
    so the blocks `peer` pulls meanwhile count as `kind`. No-op without the service."""
    service = node.energy
    if service is None:
        yield
        return
    with service.replicating_to(peer, kind):
        yield
