"""Replication service: placement, audits, repair and deputies on a node (owner side).

The trio driver around the pure parts (`placement`, `repair_policy`) and the
tables (`agreements`); the holder's side (taking replicas, answering audits)
is `shoal.p2p.replication.holder`. Installed on a node by `shoal.p2p.net.extensions.install`: handlers
for StoreRequest and AuditChallenge (from `Holding`), API routes /v1/status
and /v1/audit, and one background task (`run`) owning a nursery.

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

import ipaddress
import logging
import random
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import trio

from shoal.store.ipld.cid import CID, parse_cid
from shoal.store.errors import StoreError
from shoal.store.proofs.manifest import Manifest

from shoal.p2p.wire import limits as L
from shoal.p2p.replication.agreements import (
    RELEASE_DONE, RELEASE_REFUSED, Agreements, HolderRow, ObjectRow, Offer, agreement_bytes,
    offer_signing_bytes, release_bytes, trusted_holders,
)
from shoal.p2p.net.api import ApiError, param
from shoal.p2p.replication.audit import DEFAULT_K, AuditResult, challenge, verify_local
from shoal.store.proofs.commit_files import build_commitment
from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.errors import NotOwner, NotReplicated, P2PError, ProtocolError, Released
from shoal.p2p.net.energy_service import measuring, replicating_to
from shoal.p2p.exchange.fetch import fetch_dag
from shoal.p2p.net.guard import KeyedLocks
from shoal.p2p.replication.holder import Holding
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import (
    AuditChallenge, ErrorCode, ReleaseRequest, ReleaseResponse, StoreRequest, StoreResponse,
)
from shoal.p2p.replication.placement import Candidate, place, rendezvous_score, vetting_factor
from shoal.p2p.replication.repair_policy import (
    Outcome, OwnerWatch, Replica, State, TokenBucket, after_audit, after_store, counts_as_copy,
    deputy, release_delay, release_settled, repairs_needed, surplus,
)

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

log = logging.getLogger("shoal.replication")

DEFAULT_AUDIT_INTERVAL_S = 3600.0
REPAIR_RATE_PER_S = 0.5  # steady state: one repair every 2 s per node
REPAIR_BURST = 8
REPAIR_CHECK_S = 5.0  # re-check under-replicated objects at least this often
REACH_TIMEOUT_S = 3.0
PULL_RATE_BYTES_PER_S = 4 * 1024 * 1024  # for the store request's timeout: a slow link still makes it
RELEASE_BATCH = 32  # due releases looked at per repair-loop pass
RELEASE_CONCURRENCY = 16  # release requests in flight at once


class Replication:
    """One node's replication state machine driver."""

    def __init__(self, node: "Node", *, audit_interval: float | None = None, k: int = DEFAULT_K,
                 repair_rate: float = REPAIR_RATE_PER_S, repair_burst: int = REPAIR_BURST) -> None:
        self.node = node
        self.db = Agreements(node.repo.index)
        self.audit_interval = float(audit_interval or DEFAULT_AUDIT_INTERVAL_S)
        self.k = k
        self.bucket = TokenBucket(repair_rate, repair_burst, time.monotonic())
        # Retried releases get their own bucket: a mass unpin must not eat the
        # tokens that repairs of still-wanted objects need, nor the reverse.
        self.release_bucket = TokenBucket(repair_rate, repair_burst, time.monotonic())
        self._releasing: set[tuple[str, str]] = set()
        self._release_slots = trio.CapacityLimiter(RELEASE_CONCURRENCY)
        self._nursery: trio.Nursery | None = None
        self._locks = KeyedLocks()  # per object; pruned when unused
        self.holding = Holding(node, self.db)
        self._placing: set[str] = set()
        self._wake = trio.Event()
        self._owner_watch: dict[str, OwnerWatch] = {}
        self._issued: dict[str, int] = {}  # last `issued` we signed per object (strictly increasing)
        self.rounds = 0

    @property
    def me(self) -> PeerId:
        return self.node.peer_id

    def attach(self, node: "Node") -> None:
        """Hook into the node (a NodeService; `Node.register` calls this before it runs)."""
        node.provide_replication(self)
        node.add_handler(StoreRequest, self.holding.on_store_request)
        node.add_handler(AuditChallenge, self.holding.on_audit_challenge)
        node.add_handler(ReleaseRequest, self.holding.on_release_request)
        node.add_route("GET", "/v1/status", self.api_status)
        node.add_route("POST", "/v1/audit", self.api_audit)
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
        released = await self._release_surplus(cid, replicas)
        planned = [str(p) for p in self._choose(cid, replicas - 1, size=0, holders=[])]
        self._spawn(self._ensure_placed, text)
        doc: dict[str, Any] = {"wanted": replicas, "state": "pending", "planned": planned}
        if released:
            doc["released"] = released
            doc["planned"] = []
        return doc

    # -- releases (owner side) --------------------------------------------------------

    def _rank(self, cid: CID, peer_id: str) -> tuple[float, bytes]:
        """A holder's rendezvous rank for `cid` (higher = kept longer).

        The weight is the peer's current placement weight; a peer that is not
        connected weighs 0 and so is the first to be given back.
        """
        try:
            peer = PeerId.from_string(peer_id)
        except P2PError:
            return (0.0, b"")
        weight = next((c.weight for c in self._candidates() if c.peer_id == peer), 0.0)
        return (rendezvous_score(bytes(cid), peer, weight), peer.to_bytes())

    async def _release_surplus(self, cid: CID, wanted: int) -> list[str]:
        """Lowering the count: give back the lowest-ranked holders beyond `wanted`.

        Only copies other than our own are candidates (the owner's copy is
        never released here); they leave the holder table in the same
        transaction that owes them a release, so they stop counting and
        stop being audited at once.
        """
        text = str(cid)
        me = str(self.me)
        others = [h.peer_id for h in self.db.holders(text) if h.peer_id != me and counts_as_copy(h.replica)]
        victims = surplus(sorted(others, key=lambda p: self._rank(cid, p)), wanted)
        if not victims:
            return []
        owed = await self._run(self.db.begin_release, text, me, victims, wanted, False)
        log.info("%s: %d replicas wanted now; releasing %s", text, wanted, ", ".join(victims))
        for peer in owed:
            self._spawn(self._send_release, text, peer)
        self._spawn(self._refresh_holders, text)
        return list(victims)

    async def release_object(self, cid: CID) -> dict[str, Any] | None:
        """`pin rm` of an object we own: give every replica back.

        None if we do not own `cid` (nothing to release). The release is
        recorded before anything is sent (and before the caller unpins), so
        a crash at any point leaves releases owed, never forgotten.
        """
        text = str(cid)
        obj = self.db.get_object(text)
        if obj is None or obj.role != "owner":
            return None
        if not obj.is_released:
            peers = [h.peer_id for h in self.db.holders(text)]
            if str(self.me) not in peers:
                peers.append(str(self.me))
            owed = await self._run(self.db.begin_release, text, str(self.me), peers, 0, True)
            log.info("%s: unpinned by its owner; releasing %d holder(s)", text, len(owed))
            for peer in owed:
                self._spawn(self._send_release, text, peer)
        rows = self.db.releases(text)
        return {"state": "released", "new": not obj.is_released, "holders": len(rows) - 1,
                "pending": sorted(r.peer_id for r in rows if r.state == "pending")}

    async def _send_release(self, cid: str, peer_id: str) -> None:
        """One attempt to release `peer_id`'s replica of `cid`; the row records the outcome.

        An answer of any kind ends the release (ok; not-found: the holder has
        no agreement left; refused or an unknown message type: asking again
        cannot change it). No answer (unreachable, timeout, busy, internal,
        connection lost) leaves it pending with a later `next_try`.
        """
        key = (cid, peer_id)
        if key in self._releasing:
            return
        self._releasing.add(key)
        try:
            async with self._release_slots:
                row = self.db.release(cid, peer_id)
                if row is None or row.state != "pending":
                    return
                outcome = await self._release_once(cid, peer_id)
                if outcome is None:
                    return
                state, detail = outcome
                if state is not None:
                    await self._run(self.db.release_done, cid, peer_id, detail, state)
                    log.info("%s: release of %s %s (%s)", cid, peer_id, state, detail)
                else:
                    delay = release_delay(row.attempts, random.uniform(0.5, 1.0))
                    await self._run(self.db.release_retry, cid, peer_id, time.time() + delay, detail)
                    log.info("%s: release of %s not answered (%s); retrying in %.0fs", cid, peer_id, detail, delay)
        finally:
            self._releasing.discard(key)

    async def _release_once(self, cid: str, peer_id: str) -> tuple[str | None, str] | None:
        """(final state or None to retry, detail) for one ReleaseRequest; None if the id is unusable."""
        try:
            peer = PeerId.from_string(peer_id)
        except P2PError:
            await self._run(self.db.release_done, cid, peer_id, "not a peer id", RELEASE_REFUSED)
            return None
        raw = bytes(parse_cid(cid))
        sig = self.node.identity.sign(release_bytes(raw, self.me.to_bytes(), peer.to_bytes()))
        conn = await self._reach(peer)
        if conn is None:
            return None, "unreachable"
        try:
            replies = await conn.request(lambda rid: ReleaseRequest(rid, raw, sig), timeout=L.REQUEST_TIMEOUT_S)
        except RequestFailed as exc:
            answered = exc.code or None  # RequestFailed.code is 0 for timeouts and lost connections
            if not release_settled(answered):
                return None, str(exc) or "no answer"
            if exc.code == ErrorCode.NOT_FOUND:
                return RELEASE_DONE, f"holder has no agreement for it: {exc}"
            return RELEASE_REFUSED, f"holder cannot release it: {exc}"
        resp = next((r for r in replies if isinstance(r, ReleaseResponse)), None)
        if resp is None or resp.root_cid != raw:
            return None, "answer is not about this object"
        return RELEASE_DONE, "unpinned" if resp.unpinned else "released; the holder keeps its own pin"

    async def _retry_releases(self) -> None:
        """Background: resend due releases, as fast as the release bucket allows."""
        for row in self.db.due_releases(time.time(), RELEASE_BATCH):
            if (row.cid, row.peer_id) in self._releasing:
                continue
            if not self.release_bucket.take(time.monotonic()):
                break
            self._spawn(self._send_release, row.cid, row.peer_id)

    def _candidates(self) -> list[Candidate]:
        passed = self.db.passed_audits()
        out = []
        for peer in self.node.connected_peers():
            rec = self.node.peers.get(peer)
            if rec is None:
                continue
            weight = rec.reputation.score * vetting_factor(passed.get(str(peer), 0))
            out.append(Candidate(peer, rec.free_bytes, weight, _prefix(rec.addrs)))
        return out

    def _choose(self, cid: CID, count: int, size: int, holders: list[HolderRow]) -> list[PeerId]:
        exclude = {self.me}
        for pending in self.db.pending_release_peers(str(cid)):
            try:  # a peer we still owe a release must not be offered the object again meanwhile
                exclude.add(PeerId.from_string(pending))
            except P2PError:
                continue
        used = set()
        for h in holders:
            try:
                peer = PeerId.from_string(h.peer_id)
            except P2PError:
                continue
            exclude.add(peer)
            rec = self.node.peers.get(peer)
            if rec is not None and counts_as_copy(h.replica):
                used.add(_prefix(rec.addrs))
        return place(bytes(cid), self._candidates(), count, size=size, exclude=exclude, used_prefixes=used)

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
            commitment = await self.holding.run_heavy(build_commitment, store, self.node.repo.path, parsed)
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
            self._spawn(self._send_release, cid, str(peer))
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
            tree = await self.holding.tree(obj.cid, manifest)
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
                                      await self.holding.tree(obj.cid, manifest), self.me, self.k)
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
            for obj in self.db.objects(("owner", "deputy")):
                if not obj.manifest:
                    continue
                await _guarded(self.audit_object, obj.cid)
            await _guarded(self._watch_owners)

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
            if obj.cid not in self._placing:
                self._spawn(self._ensure_placed, obj.cid)
        await self._retry_releases()

    async def _watch_owners(self) -> None:
        """Holder side: elect a deputy for objects whose owner has gone."""
        seen: dict[PeerId, bool] = {}
        for obj in self.db.objects(("holder", "deputy")):
            if not obj.offer or not obj.manifest:
                continue
            manifest = Manifest.decode(obj.manifest)
            owner = PeerId.from_bytes(manifest.owner)
            watch = self._owner_watch.setdefault(obj.cid, OwnerWatch())
            if owner not in seen:  # one check per owner per round, however many objects
                seen[owner] = await self._reach(owner) is not None
            reachable = seen[owner]
            gone = watch.check(reachable)
            if obj.role == "deputy":
                if reachable:
                    await self._run(self.db.set_role, obj.cid, "holder")
                    log.info("%s: owner %s is back, stepping down as deputy", obj.cid, owner)
                continue
            if not gone:
                continue
            signed = trusted_holders(obj.offer, owner)  # only holders the owner named
            if self.me.to_bytes() not in signed:
                continue
            live = [self.me]
            for raw in signed:
                peer = PeerId.from_bytes(raw)
                if peer not in (owner, self.me) and await self._reach(peer) is not None:
                    live.append(peer)
            if deputy(live) != self.me:
                continue
            log.info("%s: owner %s gone; taking over as deputy", obj.cid, owner)
            await self._run(self.db.set_role, obj.cid, "deputy")
            for raw in signed:
                peer = PeerId.from_bytes(raw)
                if peer == owner:
                    state = Replica(State.LOST, watch.misses, False)
                    detail = "owner unreachable"
                elif peer == self.me or peer in live:
                    state, detail = Replica(State.OK), "co-holder (deputy's view)"
                else:
                    state, detail = Replica(State.FAILED, 1), "unreachable at takeover"
                if self.db.holder(obj.cid, str(peer)) is None or peer == owner:
                    await self._run(self.db.set_holder, obj.cid, str(peer), state, detail)
            self.wake()

    def _prefix_of(self, peer_id: str) -> str:
        """Network prefix of a holder (ours from our listen addresses)."""
        if peer_id == str(self.me):
            return _prefix(self.node.listen_addrs)
        try:
            rec = self.node.peers.get(PeerId.from_string(peer_id))
        except P2PError:
            return ""
        return _prefix(rec.addrs) if rec is not None else ""

    # -- API -----------------------------------------------------------------------------

    async def api_status(self, p: dict[str, Any]) -> Any:
        cid = str(parse_cid(param(p, "cid")))
        obj = self.db.get_object(cid)
        me = str(self.me)
        if obj is None:
            if not self.node.repo.index.is_pinned(cid):
                raise NotReplicated(f"{cid} is neither stored nor replicated by this node")
            return {"cid": cid, "role": "local", "owner": me, "replicas_wanted": 1, "replicas_ok": 1,
                    "holders": [{"peer_id": me, "state": "ok", "last_audit": None}]}
        doc: dict[str, Any] = {"cid": cid, "role": obj.role, "owner": obj.owner,
                               "replicas_wanted": obj.replicas_wanted, "size": obj.size,
                               "commitment_ready": bool(obj.manifest), "released": obj.is_released}
        if obj.role in ("owner", "deputy"):
            rows = self.db.holders(cid)
            releases = self.db.releases(cid)
            # Holders being given back stay listed, in state "releasing" until
            # they answered and "released" after: replicas_ok counts only "ok".
            doc["holders"] = [r.as_json() for r in rows] + [r.as_json() for r in releases]
            doc["replicas_ok"] = sum(1 for r in rows if r.replica.state is State.OK)
            doc["distinct_prefixes"] = len({self._prefix_of(r.peer_id) for r in rows
                                            if r.replica.state is State.OK})
            doc["releases_pending"] = sum(1 for r in releases if r.state == "pending")
        else:
            audits = self.db.audits(cid, limit=1)
            last = {"time": audits[0].time, "ok": audits[0].outcome == "answered"} if audits else None
            state = "ok" if self.node.repo.index.is_pinned(cid) else "lost"
            doc["holders"] = [{"peer_id": me, "state": "released" if obj.is_released else state,
                               "last_audit": last}]
            doc["replicas_ok"] = None  # only the owner (or deputy) knows
            doc["agreements"] = self.db.agreements(cid)
            doc["known_holders"] = _offer_holders(obj.offer)
        return doc

    async def api_audit(self, p: dict[str, Any]) -> Any:
        cid = str(parse_cid(param(p, "cid")))
        if self.db.get_object(cid) is None:
            raise NotReplicated(f"no replication record for {cid}")
        results = await self.audit_object(cid)
        return {"cid": cid, "results": [r.as_json() for r in results]}


def _offer_holders(offer: bytes | None) -> list[str]:
    """The holder list of the last offer we accepted (for status and tests)."""
    if not offer:
        return []
    try:
        return [str(PeerId.from_bytes(h)) for h in Offer.decode(offer).holders]
    except (ProtocolError, P2PError):
        return []


async def _guarded(fn: Any, *args: Any) -> None:
    """Run a background step; a failure is logged, never allowed to stop the node."""
    try:
        await fn(*args)
    except (P2PError, StoreError, OSError) as exc:
        log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)
    except Exception:  # a bug in one step must not take the node down with it
        log.exception("%s crashed", getattr(fn, "__name__", fn))


def _prefix(addrs: list[Any]) -> str:
    """The network prefix used to spread replicas: /24 for IPv4, /48 for IPv6."""
    for addr in addrs:
        try:
            ip = ipaddress.ip_address(addr.host)
        except ValueError:
            continue
        bits = 24 if ip.version == 4 else 48
        return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
    return ""


def install(node: "Node") -> Replication:
    """Create the replication service for `node` from its options and register it."""
    service = Replication(node, audit_interval=node.options.extra.get("audit_interval"))
    node.register(service)
    return service
