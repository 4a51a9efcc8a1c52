"""Replication service, owner side: placement, releases, audits and repair on a node.

The trio driver around the pure parts (`placement`, `repair_policy`) and the
tables (`agreements`); the holder's side (taking replicas, answering audits)
is `shoal.p2p.replication.holder`, deputy election `deputy`, the API routes
/v1/status and /v1/audit `routes`, the signed byte formats `signed`.
`ReplicationOwner` is a NodeService (shoal.p2p.net.hooks), registered by
`shoal.p2p.net.extensions.install`: it adds the holder's handlers (StoreRequest,
AuditChallenge, ReleaseRequest), the routes, and runs one background task
(`run`) owning a nursery.

Flows (docs/PROTOCOL.md has the wire details):
- put --replicas N: the API's put calls `place`, which records the wanted
  count and returns at once. In the background: commitment (worker thread,
  leaf file beside the repo), signed manifest, then N-1 holders chosen by
  `placement.place` each get a StoreRequest; a holder pulls the DAG from the
  owner (and other holders), pins it, recomputes the commitment, checks it
  against the signed manifest, signs the agreement and answers.
- Every `audit_interval` the owner audits each holder of each object it owns
  (and checks its own copy); results go through `repair_policy.after_audit`;
  a replica that becomes lost is replaced as soon as the repair token bucket
  allows.
- Holders watch the owner: once it has been unreachable for three checks in
  a row, the lowest-id live holder (repair_policy.deputy) takes over audits
  and repairs, and steps down when the owner is back.
- Giving replicas back: `pin rm` of an object this node owns (`release_object`)
  marks it released (wanted 0) and owes every holder a ReleaseRequest;
  `put --replicas M` below the current count (`place`) owes one to each
  surplus holder, the lowest rendezvous-ranked first. Owed releases are
  rows of `repl_releases` (pending -> done): the first attempt goes out at
  once, an unanswered one is retried by the repair loop with backoff and its
  own token bucket, across restarts, until the holder answers. A released
  object leaves every loop at once (`Agreements.objects` skips it), so no
  audit or repair follows an unpin.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Iterable

import trio

from shoal.store.ipld.cid import CID, parse_cid
from shoal.store.errors import StoreError
from shoal.store.proofs.manifest import Manifest

from shoal.p2p.wire import limits as L
from shoal.p2p.replication.agreements import Agreements, HolderRow, ObjectRow
from shoal.p2p.replication.signed import Offer, agreement_bytes, offer_signing_bytes
from shoal.p2p.net.api import ApiError
from shoal.p2p.replication.audit import DEFAULT_K, AuditResult, challenge, verify_local
from shoal.store.proofs.commit_files import build_commitment
from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.errors import NotOwner, NotReplicated, P2PError, Released
from shoal.p2p.net.energy_service import measuring, replicating_to
from shoal.p2p.exchange.fetch import fetch_dag
from shoal.p2p.net.guard import KeyedLocks
from shoal.p2p.replication.holder import Holder
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import (
    AuditChallenge, ReleaseRequest, StoreRequest, StoreResponse,
)
from shoal.p2p.replication.deputy import DeputyElection
from shoal.p2p.replication.erasure import ErasureService
from shoal.p2p.replication.placement import Candidate, network_prefix, place, vetting_factor
from shoal.p2p.replication.releases import OwnerReleases
from shoal.p2p.replication.routes import ReplicationRoutes
from shoal.p2p.replication.repair_policy import (
    Outcome, Replica, State, TokenBucket, after_audit, after_store, counts_as_copy, repairs_needed,
)

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

log = logging.getLogger("shoal.replication")

DEFAULT_AUDIT_INTERVAL_S = 3600.0
# Shorter than this, audit rounds would run back to back (1e-320 s is "above 0"
# but is a busy loop that starves the node); tests use 1 s.
MIN_AUDIT_INTERVAL_S = 0.1
REPAIR_RATE_PER_S = 0.5  # steady state: one repair every 2 s per node
REPAIR_BURST = 8
REPAIR_CHECK_S = 5.0  # re-check under-replicated objects at least this often
REACH_TIMEOUT_S = 3.0
PULL_RATE_BYTES_PER_S = 4 * 1024 * 1024  # for the store request's timeout: a slow link still makes it


class ReplicationOwner:
    """One node's replication state machine driver."""

    def __init__(self, node: "Node", *, audit_interval: float | None = None, k: int = DEFAULT_K,
                 repair_rate: float = REPAIR_RATE_PER_S, repair_burst: int = REPAIR_BURST) -> None:
        self.node = node
        self.db = Agreements(node.repo.index)
        self.audit_interval = max(MIN_AUDIT_INTERVAL_S, float(audit_interval or DEFAULT_AUDIT_INTERVAL_S))
        self.k = k
        self.bucket = TokenBucket(repair_rate, repair_burst, time.monotonic())
        self.releases = OwnerReleases(self, repair_rate, repair_burst)
        self._nursery: trio.Nursery | None = None
        self._locks = KeyedLocks()  # per object; pruned when unused
        self.holder = Holder(node, self.db)
        # A lambda, not the bound method: tests stand in for `_reach` after construction.
        self.deputies = DeputyElection(self.db, node.peer_id, lambda peer: self._reach(peer), self.wake)
        self.routes = ReplicationRoutes(self)
        self.erasure = ErasureService(self)
        self.holder.co_holders = self.erasure.co_holders
        self._placing: set[str] = set()
        self._wake = trio.Event()
        self._issued: dict[str, int] = {}  # last `issued` we signed per object (strictly increasing)
        self.rounds = 0

    @property
    def me(self) -> PeerId:
        return self.node.peer_id

    def attach(self, node: "Node") -> None:
        """Hook into the node (a NodeService; `Node.register` calls this before it runs)."""
        node.provide_replication(self)
        node.add_handler(StoreRequest, self.holder.on_store_request)
        node.add_handler(AuditChallenge, self.holder.on_audit_challenge)
        node.add_handler(ReleaseRequest, self.holder.on_release_request)
        self.routes.attach(node)
        self.erasure.attach(node)
        # Peers holding our replicas keep their connection slots when strangers
        # crowd in (shoal.p2p.net.admission); read from the index in a worker thread.
        node.protection_sources.append(self.db.holder_peers)

    def held_bytes(self) -> int:
        """Bytes of replicas this node keeps for other owners (what --quota limits)."""
        return self.db.held_bytes()

    # -- lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._spawn(self._resume_pending)
            nursery.start_soon(self._audit_loop)
            nursery.start_soon(self._repair_loop)

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._nursery is None:
            raise P2PError("replication is not running yet")
        self._nursery.start_soon(_guarded, fn, *args)

    def wake(self) -> None:
        self._wake.set()

    def _lock(self, cid: str) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(cid)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)

    # -- placement (owner side) -------------------------------------------------

    def places(self, cid: CID) -> bool:
        """True if this node owns `cid` and keeps copies of it on other peers."""
        obj = self.db.get_object(str(cid))
        return obj is not None and obj.role == "owner" and not obj.is_released and obj.replicas_wanted > 1

    async def place(self, cid: CID, replicas: int) -> dict[str, Any]:
        """Record that `cid` wants `replicas` copies; placement runs in the background."""
        if replicas > L.MAX_AUDIT_CHALLENGES or replicas > 64:
            raise ApiError("at most 64 replicas")
        text = str(cid)
        if self.db.ec_object(text) is not None:
            raise ApiError(f"{text} is stored erasure-coded; pin rm it first to keep replicas instead")
        obj = self.db.get_object(text)
        if obj is not None and obj.is_released:
            # Put again after a pin rm (or after holding it for someone who
            # released it): a fresh start; releases still owed stay owed.
            await self._run(self.db.reopen, text)
            await self._run(self.db.forget_done_releases, text)
        if obj is None or obj.role != "owner":
            await self._run(self.db.put_object, text, "owner", b"", str(self.me), replicas, 0)
        else:
            await self._run(self.db.set_wanted, text, replicas)
        await self._run(self.db.set_holder, text, str(self.me), Replica(State.OK), "owner")
        released = await self.releases.release_surplus(cid, replicas)
        planned = [str(p) for p in self._choose(cid, replicas - 1, size=0, holders=[])]
        self._spawn(self._ensure_placed, text)
        doc: dict[str, Any] = {"wanted": replicas, "state": "pending", "planned": planned}
        if released:
            doc["released"] = released
            doc["planned"] = []
        return doc

    async def place_ec(self, cid: CID, k: int, m: int, drop_local: bool = False,
                       threshold: int | None = None) -> dict[str, Any]:
        """Store `cid` as K + M shards on distinct peers (shoal.p2p.replication.erasure)."""
        return await self.erasure.place(cid, k, m, drop_local, threshold)

    async def recover_ec(self, cid: CID) -> dict[str, Any]:
        """Rebuild `cid` locally from its shards (a get whose plain fetch found no holder)."""
        return await self.erasure.recover(cid)

    # -- releases (owner side: shoal.p2p.replication.releases) -----------------------

    async def release_object(self, cid: CID) -> dict[str, Any] | None:
        """`pin rm` of an object we own: give every replica back (None: not ours)."""
        if self.db.ec_object(str(cid)) is not None:
            return await self.erasure.release(cid)
        return await self.releases.release_object(cid)

    def _candidates(self) -> list[Candidate]:
        passed = self.db.passed_audits()
        out = []
        for peer in self.node.connected_peers():
            rec = self.node.peers.get(peer)
            if rec is None:
                continue
            weight = rec.reputation.score * vetting_factor(passed.get(str(peer), 0))
            out.append(Candidate(peer, rec.free_bytes, weight, network_prefix(rec.addrs)))
        return out

    def _choose(self, cid: CID, count: int, size: int, holders: list[HolderRow]) -> list[PeerId]:
        exclude = {self.me}
        for pending in self.db.pending_release_peers(str(cid)):
            try:  # a peer we still owe a release must not be offered the object again meanwhile
                exclude.add(PeerId.from_string(pending))
            except P2PError:
                continue
        return self.place_avoiding(bytes(cid), count, size, holders, exclude)

    def place_avoiding(self, key: bytes, count: int, size: int, holders: Iterable[HolderRow],
                       exclude: set[PeerId]) -> list[PeerId]:
        """`count` new holders for `key` (rendezvous order among connected candidates).

        Never a peer in `exclude` or one of `holders` (holding or held, so
        no peer is asked twice; replica and erasure placement alike), and
        network prefixes of the holders that count as a copy are taken, so
        distinct prefixes come first. Adds the holders to `exclude`.
        """
        used: set[str] = set()
        for h in holders:
            try:
                peer = PeerId.from_string(h.peer_id)
            except P2PError:
                continue
            exclude.add(peer)
            rec = self.node.peers.get(peer)
            if rec is not None and counts_as_copy(h.replica):
                used.add(network_prefix(rec.addrs))
        return place(key, self._candidates(), count, size=size, exclude=exclude, used_prefixes=used)

    async def _ensure_manifest(self, cid: str) -> tuple[ObjectRow, Manifest]:
        """The object's signed manifest, computing the commitment first if needed."""
        async with self._lock(cid):
            obj = self.db.get_object(cid)
            if obj is None:
                raise NotReplicated(f"no replication record for {cid}")
            if obj.manifest:
                return obj, Manifest.decode(obj.manifest)
            parsed = parse_cid(cid)
            store = self.node.repo.blockstore
            commitment = await self.holder.run_heavy(build_commitment, store, self.node.repo.path, parsed)
            rec = next((o for o in self.node.repo.objects() if o.cid == cid), None)
            manifest = Manifest(
                root_cid=cid, size=rec.size if rec else commitment.length,
                chunker=rec.chunker if rec else "unknown", profile=rec.profile if rec else "unknown",
                commitment=commitment, owner=self.me.to_bytes(), created=int(time.time()))
            manifest = manifest.with_signature(self.node.identity.sign(manifest.signing_bytes()))
            await self._run(self.db.put_object, cid, obj.role, manifest.encode(), obj.owner,
                            obj.replicas_wanted, commitment.length)
            log.info("commitment for %s ready (%d segments)", cid, commitment.n_segments)
            obj = self.db.get_object(cid)
            assert obj is not None
            return obj, manifest

    async def _ensure_placed(self, cid: str) -> None:
        """Bring `cid` to its wanted count (initial placement or repair)."""
        if cid in self._placing:
            return
        self._placing.add(cid)
        try:
            obj, manifest = await self._ensure_manifest(cid)
            if obj.role not in ("owner", "deputy") or obj.is_released:
                return
            holders = self.db.holders(cid)
            need = repairs_needed(obj.replicas_wanted, [h.replica for h in holders])
            if need == 0:
                return
            repair = any(h.replica.state in (State.LOST, State.FAILED) for h in holders)
            picks = self._choose(parse_cid(cid), need, obj.size, holders)
            if not picks:
                log.info("%s: %d more replicas wanted, no candidate peer yet", cid, need)
                return
            tasks = []
            for peer in picks:
                if repair and not self.bucket.take(time.monotonic()):
                    log.info("%s: repair rate limit reached, retrying later", cid)
                    break
                now = self.db.get_object(cid)
                if now is None or now.is_released:
                    return  # released while we computed: place nothing
                await self._run(self.db.forget_done_releases, cid, str(peer))
                await self._run(self.db.set_holder, cid, str(peer), Replica(State.PENDING), "store requested")
                tasks.append(peer)
            kind = "repair" if repair or obj.role == "deputy" else "replicate-out"
            async with trio.open_nursery() as nursery:
                for peer in tasks:
                    nursery.start_soon(self._store_on, obj, manifest, peer, False, kind)
            if tasks:
                await self._refresh_holders(cid)
        except (P2PError, StoreError) as exc:
            log.warning("placement of %s failed: %s", cid, exc)
        finally:
            self._placing.discard(cid)

    def _offer(self, obj: ObjectRow, extra: list[PeerId]) -> bytes:
        """The offer to send: the owner signs the holder list and count afresh;
        a deputy re-sends the owner's last signed one (it cannot sign for it)."""
        if obj.role != "owner":
            if not obj.offer:
                raise P2PError(f"{obj.cid}: no offer signed by the owner to pass on")
            return obj.offer
        peers = [self.me.to_bytes()]
        for h in self.db.holders(obj.cid):
            if counts_as_copy(h.replica) and h.peer_id != str(self.me):
                try:
                    peers.append(PeerId.from_string(h.peer_id).to_bytes())
                except P2PError:
                    continue
        for p in extra:
            if p.to_bytes() not in peers:
                peers.append(p.to_bytes())
        issued = max(time.time_ns() // 1000, self._issued.get(obj.cid, 0) + 1)
        self._issued[obj.cid] = issued
        offer = Offer(obj.manifest, obj.replicas_wanted, tuple(peers[:64]))
        return offer.with_owner_sig(issued, self.node.identity.sign).encode()

    async def _store_on(self, obj: ObjectRow, manifest: Manifest, peer: PeerId, refresh: bool = False,
                        kind: str = "replicate-out") -> bool:
        """Send one StoreRequest and record the answer. True if accepted.

        `kind` is the energy ledger's name for the blocks the peer pulls meanwhile.
        """
        offer = self._offer(obj, [peer])
        sig = self.node.identity.sign(offer_signing_bytes(offer))
        timeout = L.STORE_REQUEST_TIMEOUT_S + obj.size / PULL_RATE_BYTES_PER_S
        started = time.time()
        conn = await self._reach(peer)
        reason = "unreachable"
        accepted = False
        resp: StoreResponse | None = None
        if conn is not None:
            try:
                with replicating_to(self.node, peer, kind):
                    replies = await conn.request(
                        lambda rid: StoreRequest(rid, bytes(parse_cid(obj.cid)), obj.size, offer, sig),
                        timeout=timeout)
                resp = next((r for r in replies if isinstance(r, StoreResponse)), None)
            except RequestFailed as exc:
                reason = str(exc)
        if resp is not None:
            accepted, reason = resp.accepted, resp.reason
            if accepted and not peer.verify(resp.agreement_sig, agreement_bytes(offer, self.me.to_bytes(), peer.to_bytes())):
                accepted, reason = False, "agreement signature is not the holder's"
        if refresh:
            return accepted
        if await self._released_meanwhile(obj.cid, peer, accepted, started):
            return accepted
        verdict = after_store(accepted)
        if accepted:
            assert resp is not None
            await self._run(self.db.record_agreement, obj.cid, str(self.me), str(peer), offer, sig, resp.agreement_sig)
            log.info("%s: %s holds a replica", obj.cid, peer)
        else:
            log.info("%s: %s did not take the replica: %s", obj.cid, peer, reason)
        await self._run(self.db.set_holder, obj.cid, str(peer), verdict.replica, "" if accepted else reason)
        if verdict.repair:
            self.wake()
        return accepted

    async def _released_meanwhile(self, cid: str, peer: PeerId, accepted: bool, started: float) -> bool:
        """True if `cid` (or this peer's copy) was released while the store ran.

        Then the holder row is not written back: if the peer took the
        replica, the owner owes it a release (again: a release that reached
        the peer before the store finished found nothing to release). A
        deputy cannot release for the owner; it only stops.
        """
        now = self.db.get_object(cid)
        row = self.db.release(cid, str(peer))
        if now is None or not (now.is_released or row is not None and row.since >= started):
            return False
        if accepted and now.role == "owner":
            await self._run(self.db.owe_release, cid, str(peer))
            self._spawn(self.releases.send, cid, str(peer))
        return True

    async def _resume_pending(self) -> None:
        """After a restart, re-send store requests that were in flight (idempotent
        on the holder); otherwise a pending row would count as a copy forever."""
        for obj in self.db.objects(("owner", "deputy")):
            pending = [h for h in self.db.holders(obj.cid) if h.replica.state is State.PENDING]
            if not pending or not obj.manifest:
                continue
            _, manifest = await self._ensure_manifest(obj.cid)
            for h in pending:
                self._spawn(self._store_on, obj, manifest, PeerId.from_string(h.peer_id))

    async def _refresh_holders(self, cid: str) -> None:
        """Tell every live holder the current holder list (for deputy election)."""
        obj, manifest = await self._ensure_manifest(cid)
        if obj.is_released:
            return  # a refresh would hand the object back to holders just released
        async with trio.open_nursery() as nursery:
            for h in self.db.holders(cid):
                if h.replica.state is State.OK and h.peer_id != str(self.me):
                    nursery.start_soon(self._store_on, obj, manifest, PeerId.from_string(h.peer_id), True)

    async def _reach(self, peer: PeerId) -> PeerConnection | None:
        conn = self.node.connection_to(peer)
        if conn is not None:
            return conn
        rec = self.node.peers.get(peer)
        if rec is None:
            return None
        for addr in list(rec.addrs):
            with trio.move_on_after(REACH_TIMEOUT_S):
                try:
                    return await self.node.connect(addr.with_peer(peer))
                except (P2PError, trio.TooSlowError, OSError):
                    continue
        return None

    # -- audits (owner side) ---------------------------------------------------------

    async def audit_object(self, cid: str) -> list[AuditResult]:
        """One audit round over every holder of `cid` (and our own copy)."""
        obj, manifest = await self._ensure_manifest(cid)
        if obj.is_released:
            raise Released(f"{cid} was released: its replicas were given back")
        if obj.role not in ("owner", "deputy"):
            raise NotOwner(f"this node holds {cid} for {obj.owner} but does not own it")
        parsed = parse_cid(cid)
        results: list[AuditResult] = []

        async def one(row: HolderRow) -> None:
            peer = PeerId.from_string(row.peer_id)
            if peer == self.me:
                result = await self._self_check(obj, manifest, parsed)
            else:
                conn = await self._reach(peer)
                if row.replica.state is State.LOST and conn is None:
                    return  # gone and replaced; audited again only if it comes back
                async with measuring(self.node, "audit-verify") as op:
                    result = await challenge(conn, peer, parsed, manifest.commitment, obj.size, self.k)
                    if result.ok:
                        op.bytes_hashed += self.k * manifest.commitment.segment_size
            results.append(result)
            await self._apply(cid, peer, row, result)

        rows = [r for r in self.db.holders(cid)
                if r.replica.state in (State.OK, State.FAILED) and not r.replica.refused
                or r.replica.state is State.LOST and not r.replica.proven_loss]
        async with trio.open_nursery() as nursery:
            for row in rows:
                nursery.start_soon(one, row)
        self.rounds += 1
        return sorted(results, key=lambda r: r.peer_id)

    async def _self_check(self, obj: ObjectRow, manifest: Manifest, cid: CID) -> AuditResult:
        why = ""
        try:
            tree = await self.holder.tree(obj.cid, manifest)
            why = await self._run(verify_local, self.node.repo.blockstore, cid, tree, self.me, self.k)
        except (StoreError, OSError) as exc:
            why = f"local copy damaged: {exc}"
        if why:
            # Our own copy is damaged: fetch the missing blocks back from the holders.
            sources = [PeerId.from_string(h.peer_id) for h in self.db.holders(obj.cid)
                       if h.replica.state is State.OK and h.peer_id != str(self.me)]
            try:
                # check_local: a corrupt leaf is present, so only re-hashing finds it
                await fetch_dag(self.node, cid, holders=sources or None, check_local=True)
                why = await self._run(verify_local, self.node.repo.blockstore, cid,
                                      await self.holder.tree(obj.cid, manifest), self.me, self.k)
            except (P2PError, StoreError, OSError) as exc:
                why = f"{why}; refetch failed: {exc}"
        return AuditResult(str(self.me), Outcome.INVALID if why else Outcome.OK, self.k, why)

    async def _apply(self, cid: str, peer: PeerId, row: HolderRow, result: AuditResult) -> None:
        if peer == self.me:
            replica = Replica(State.OK) if result.ok else Replica(State.FAILED, 1, False)
            await self._run(self.db.record_audit, cid, str(peer), result.outcome.value, result.challenged,
                            result.error, replica)
            return
        verdict = after_audit(row.replica, result.outcome)
        rep = self.node.peers.ensure(peer).reputation
        if verdict.score_loss:
            rep.proven_losses += 1
        if verdict.score_timeout:
            rep.audit_timeouts += 1
        await self._run(self.db.record_audit, cid, str(peer), result.outcome.value, result.challenged,
                        result.error, verdict.replica)
        if verdict.replica.state is not row.replica.state:
            log.info("%s: holder %s %s -> %s (%s)", cid, peer, row.replica.state.value,
                     verdict.replica.state.value, result.error or result.outcome.value)
        if verdict.repair:
            self.wake()

    # -- loops -------------------------------------------------------------------------

    async def _audit_loop(self) -> None:
        while True:
            await trio.sleep(self.audit_interval)
            # Guarded as a whole too: the listing itself (an index read) may
            # fail, and this task runs in the node's nursery.
            await _guarded(self._audit_round)

    async def _audit_round(self) -> None:
        for obj in self.db.objects(("owner", "deputy")):
            if not obj.manifest:
                continue
            await _guarded(self.audit_object, obj.cid)
        # EC deputies first: stepping down drops the rows a deputy made for
        # shards it never held, before the replica election looks at them.
        await _guarded(self.erasure.check_deputies)
        await _guarded(self.deputies.check)

    async def _repair_loop(self) -> None:
        while True:
            with trio.move_on_after(min(REPAIR_CHECK_S, self.audit_interval)):
                await self._wake.wait()
            self._wake = trio.Event()
            await _guarded(self._check_all)
            wait = self.bucket.wait_time(time.monotonic())
            if wait > 0:
                await trio.sleep(wait)

    async def _check_all(self) -> None:
        for obj in self.db.objects(("owner", "deputy")):  # released objects are not listed
            # A shard of our EC object has one holder and no other copy: it is
            # rebuilt from the other shards, by the erasure service, not re-sent.
            if obj.cid not in self._placing and not self.db.is_ec_shard(obj.cid):
                self._spawn(self._ensure_placed, obj.cid)
        self.erasure.check_all()
        await self.releases.retry_due()


async def _guarded(fn: Any, *args: Any) -> None:
    """Run a background step; a failure is logged, never allowed to stop the node."""
    try:
        await fn(*args)
    except (P2PError, StoreError, OSError) as exc:
        log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)
    except Exception:  # a bug in one step must not take the node down with it
        log.exception("%s crashed", getattr(fn, "__name__", fn))


def install(node: "Node") -> ReplicationOwner:
    """Create the replication service for `node` from its options and register it."""
    service = ReplicationOwner(node, audit_interval=node.options.extra.get("audit_interval"))
    node.register(service)
    return service
