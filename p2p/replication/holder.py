"""The holder's side of replication: take a replica, answer audits.

A StoreRequest is checked before any byte moves: the manifest must be signed
by its owner, the offer by the requester, the requester must be the owner or
a holder listed in the offer, and the object must fit the quota
(`--quota`, bytes held for others) and the disk. Then the holder pulls the
DAG (from the requester and the other listed holders), pins it, recomputes
the Merkle commitment and refuses if it is not the manifest's, records the
object and both signatures, and signs the agreement.

An AuditChallenge is answered only for an object under agreement, only to
its owner or a co-holder (a deputy), only once per nonce (replays refused,
persistently), within the challenge's deadline; a missing or corrupt block
is admitted as ERROR not-found, never papered over.

A ReleaseRequest ends an agreement. It is accepted only from the owner
recorded for the object (the Noise handshake authenticated the sender; the
owner's signature over `release_bytes` is checked and kept as evidence, as
the agreement's own signatures are). The holder then drops the pin it took
for the agreement — only that one: if its own user pinned the object
independently (before the replica was taken, or again since), the pin
stays — marks the object and its agreements released, and answers. Blocks
go at the holder's next `shoal gc`. A release for an object already
released is answered the same way again (the owner retries until it hears
an answer), so the exchange is idempotent.

Not here: placement, policy, loops (shoal.p2p.replication.owner).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import OrderedDict
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Callable

import trio

from shoal.store.ipld.cid import CID, block_key, cid_from_bytes, parse_cid
from shoal.store.errors import StorageFull, StoreError
from shoal.store.proofs.manifest import Manifest
from shoal.store.cancel import Cancelled
from shoal.store.proofs.challenge import MAX_K
from shoal.store.proofs.commitment import NodeSource, ShouldStop, check_stop
from shoal.store.proofs.proof import max_challenges

from shoal.p2p.wire import limits as L
from shoal.p2p.replication.agreements import Agreements, ObjectRow
from shoal.p2p.replication.signed import (
    Offer, agreement_bytes, offer_signing_bytes, release_bytes, trusted_holders,
)
from shoal.p2p.replication.audit import prove
from shoal.p2p.net.thread_work import CancellableStore, run_sync_cancellable
from shoal.store.proofs.commit_files import (
    build_commitment, committed_length, has_leaves, load_tree, remove_leaves, stored_dag_bytes,
)
from shoal.p2p.net.connection import PeerConnection
from shoal.p2p.errors import P2PError, ProtocolError
from shoal.p2p.exchange.fetch import fetch_dag
from shoal.p2p.net.guard import KeyedLocks
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import (
    AuditChallenge, AuditProof, Error, ErrorCode, Message, ReleaseRequest, ReleaseResponse,
    StoreRequest, StoreResponse,
)

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

log = logging.getLogger("shoal.holder")

MAX_CACHED_TREES = 64
PULL_SLACK_BYTES = 1 << 20
PULL_SLACK_DIVISOR = 64  # dag-pb nodes above the leaves: ~0.004 % for 1 MiB chunks, far less than 1/64
MAX_EXPANSION = 64  # declared bytes per distinct stored byte; a file repeating itself more is refused
EXPANSION_FLOOR = 64 << 20
HEAVY_THREADS = 2  # commitment passes at once; trio's other 40 threads stay free for everything else
TAKE_BASE_S = 60.0  # as the requester's STORE_REQUEST_TIMEOUT_S
TAKE_RATE_BYTES_PER_S = 4 << 20  # as the requester's PULL_RATE_BYTES_PER_S


def pull_budget(declared: int) -> int:
    """Bytes a replica of `declared` committed bytes may add to the disk:
    the declared size plus a small slack for the DAG's inner nodes."""
    return declared + PULL_SLACK_BYTES + declared // PULL_SLACK_DIVISOR


def take_deadline(declared: int) -> float:
    """Seconds a holder spends taking a replica before it gives up (and
    undoes it): the time the requester waits for the answer."""
    return TAKE_BASE_S + declared / TAKE_RATE_BYTES_PER_S


def _committed_length(store: Any, cid: CID, should_stop: ShouldStop | None = None) -> int:
    check_stop(should_stop)
    return committed_length(store, cid)


def _offer_issued(offer: bytes | None, owner: PeerId) -> int:
    """`issued` of a recorded offer the owner signed (0 if none)."""
    if not offer:
        return 0
    try:
        parsed = Offer.decode(offer)
    except ProtocolError:
        return 0
    return parsed.issued if parsed.signed_by(owner) else 0


class Holder:
    """Handlers for StoreRequest, ReleaseRequest and AuditChallenge, and the prover's tree cache."""

    def __init__(self, node: "Node", db: Agreements) -> None:
        self.node = node
        self.db = db
        self._locks = KeyedLocks()  # per object; pruned when unused
        self._trees: OrderedDict[str, NodeSource] = OrderedDict()
        self._reserved: dict[tuple[str, int], int] = {}  # bytes promised to replicas being taken
        self._heavy = trio.CapacityLimiter(HEAVY_THREADS)
        # Peer ids the owner named beside us for an object (the holders of the
        # other shards of an EC object, shoal.p2p.replication.erasure): they may
        # audit us as a deputy would. Set by the replication service.
        self.co_holders: Callable[[str], set[bytes]] = lambda cid: set()

    @property
    def me(self) -> PeerId:
        return self.node.peer_id

    def _lock(self, cid: str) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(cid)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)

    # -- store request (holder side) --------------------------------------------

    async def on_store_request(self, conn: PeerConnection, msg: Message) -> list[Message]:
        assert isinstance(msg, StoreRequest)
        rid = msg.request_id

        def refuse(why: str) -> list[Message]:
            return [StoreResponse(rid, False, why[: L.MAX_REASON_BYTES], b"")]

        requester = conn.remote_peer
        try:
            cid = cid_from_bytes(msg.root_cid)
            offer = Offer.decode(msg.manifest)
            manifest = Manifest.decode(offer.manifest)
            owner = PeerId.from_bytes(manifest.owner)
        except (StoreError, ProtocolError, P2PError) as exc:
            return [Error(rid, ErrorCode.MALFORMED, f"bad store request: {exc}"[:500])]
        text = str(cid)
        if manifest.root_cid != text or manifest.commitment.length != msg.size:
            return refuse("manifest does not describe this object")
        if not owner.verify(manifest.signature, manifest.signing_bytes()):
            return refuse("manifest is not signed by its owner")
        if not requester.verify(msg.owner_sig, offer_signing_bytes(msg.manifest)):
            return refuse("offer is not signed by the requester")
        if not offer.signed_by(owner):
            # The holder list decides who may audit us and who may act for
            # the owner: only the owner's word counts, not the requester's.
            return refuse("holder list is not signed by the owner")
        if requester != owner and requester.to_bytes() not in offer.holders:
            return refuse("requester is neither the owner nor a holder")
        async with self._lock(text):
            existing = self.db.get_object(text)
            released = existing is not None and existing.role != "owner" and existing.is_released
            if released and requester != owner:
                # The owner gave this replica back; a deputy that missed the
                # release must not put it back here (no repair of a released object).
                return refuse("released by its owner")
            if existing is not None and existing.role != "owner" and not released:
                held = _offer_issued(existing.offer, owner)
                if offer.issued < held:
                    return refuse("an older holder list than the one held")
            # A refresh of an offer we already hold only updates the holder
            # list: pulling again would silently patch over lost blocks, and
            # losses are for audits to find (and for the owner to repair).
            refresh = (existing is not None and not released and existing.manifest == offer.manifest
                       and self.node.repo.index.is_pinned(text))
            if existing is None or released:
                room = self._room()
                if room is not None and msg.size > room:
                    return refuse(f"over quota: {msg.size} bytes asked, {room} free")
            pinned_before = await self._run(self.db.pin_created, text)
            reservation = (text, id(msg))
            self._reserved[reservation] = 0 if refresh else msg.size
            try:
                if not refresh:
                    with trio.fail_after(take_deadline(msg.size)):
                        await self._take(cid, manifest, offer, requester, pinned_before)
            except trio.TooSlowError:
                log.info("store of %s for %s took too long", text, requester)
                return refuse("could not take the replica in time")
            except (P2PError, StoreError, OSError) as exc:
                log.info("store of %s for %s failed: %s", text, requester, exc)
                return refuse(f"could not take the replica: {exc}")
            finally:
                self._reserved.pop(reservation, None)
            role = existing.role if existing is not None and existing.role in ("owner", "deputy") else "holder"
            if role == "deputy" and requester == owner:
                role = "holder"  # the owner is back: the deputy steps down
            if existing is None or existing.role != "owner":
                await self._run(self.db.put_object, text, role, offer.manifest, str(owner),
                                offer.replicas_wanted, manifest.commitment.length, msg.manifest)
                if not refresh:
                    await self._run(self.db.set_pin_taken, text,
                                    await self._pin_taken(text, existing, pinned_before, released))
                if released:
                    await self._run(self.db.reopen, text)
            sig = self.node.identity.sign(agreement_bytes(msg.manifest, requester.to_bytes(), self.me.to_bytes()))
            await self._run(self.db.record_agreement, text, str(requester), str(self.me), msg.manifest,
                            msg.owner_sig, sig)
        return [StoreResponse(rid, True, "", sig)]

    async def _pin_taken(self, cid: str, existing: ObjectRow | None, pinned_before: float | None,
                         released: bool) -> float | None:
        """The pin time to record as "ours" after `_take` pinned `cid`.

        Ours if nothing was pinned before, or if what was pinned was our own
        earlier pin for this agreement (a re-take replaces it with a fresh
        one). A pin that existed for any other reason is the holder's user's
        (None): a release must leave it alone.
        """
        ours_before = (existing is not None and not released and existing.pin_taken is not None
                       and pinned_before == existing.pin_taken)
        if pinned_before is not None and not ours_before:
            return None
        now_pinned: float | None = await self._run(self.db.pin_created, cid)
        return now_pinned

    # -- release (holder side) ---------------------------------------------------------

    async def on_release_request(self, conn: PeerConnection, msg: Message) -> list[Message]:
        """End an agreement at its owner's request (see the module docstring)."""
        assert isinstance(msg, ReleaseRequest)
        rid = msg.request_id
        cid = _root_cid(rid, msg.root_cid)
        if isinstance(cid, Error):
            return [cid]
        text = str(cid)
        requester = conn.remote_peer
        async with self._lock(text):
            obj = self.db.get_object(text)
            if obj is None or obj.role == "owner":
                return [Error(rid, ErrorCode.NOT_FOUND, "no storage agreement for this object")]
            if obj.owner != str(requester):
                return [Error(rid, ErrorCode.REFUSED, "only the object's owner may release it")]
            if not requester.verify(msg.owner_sig, release_bytes(msg.root_cid, requester.to_bytes(),
                                                                 self.me.to_bytes())):
                return [Error(rid, ErrorCode.REFUSED, "release is not signed by the owner")]
            if obj.is_released:
                return [ReleaseResponse(rid, msg.root_cid, False)]  # answered before; nothing left to drop
            unpinned = False
            current = await self._run(self.db.pin_created, text)
            if obj.pin_taken is not None and current == obj.pin_taken:
                # Unpin before marking released: a crash in between leaves an
                # active agreement without a pin, which the owner's retried
                # release then finishes; the other order could leak the pin.
                async with self.node.store_guard.shared():
                    try:
                        # Only the pin taken for the agreement: a `pin add` by the
                        # user since then has a new `created`, and stays.
                        await self._run(self.node.repo.pin_rm, cid, obj.pin_taken)
                        unpinned = True
                    except StoreError as exc:  # NotPinned: unpinned or re-pinned meanwhile
                        log.info("release of %s: %s", text, exc)
            await self._run(self.db.mark_released, text, msg.owner_sig)
            self._trees.pop(text, None)
        log.info("%s: released by its owner %s (%s)", text, requester,
                 "pin dropped" if unpinned else "no pin of ours to drop")
        return [ReleaseResponse(rid, msg.root_cid, unpinned)]

    def _room(self) -> int | None:
        """Bytes we may still accept for others (None = no quota), bounded by
        the disk, less what replicas being taken right now may still write."""
        free = shutil.disk_usage(self.node.repo.path).free
        quota: int | None = self.node.options.quota_bytes
        pending = sum(self._reserved.values())
        if quota is None:
            return max(0, free - pending)
        return max(0, min(free, quota - self.db.held_bytes()) - pending)

    async def run_heavy(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run hashing work that may be long in a worker thread, stoppably.

        Its own small limiter: the threads trio lends everyone else (block
        serving, index calls) can never all be taken by commitment passes.
        `fn` checks `should_stop` between pieces, so a cancelled caller (a
        deadline, the node shutting down) stops it within one piece and
        nothing it writes outlives the call
        (shoal.p2p.net.thread_work.run_sync_cancellable).
        """
        return await run_sync_cancellable(lambda flag: fn(*args, should_stop=flag.is_set, **kwargs),
                                          limiter=self._heavy, reason="the replica's work was cancelled")

    async def _take(self, cid: CID, manifest: Manifest, offer: Offer, requester: PeerId,
                    pinned_before: float | None) -> None:
        """Pull, pin, and check the commitment against the signed manifest.

        Every failure undoes what this take did before it raises: the pin it
        made is removed and the blocks it wrote that no pin protects are
        deleted at once (no waiting for a gc), so a refused offer leaves no
        trace on the disk.
        """
        text = str(cid)
        length = manifest.commitment.length
        budget = pull_budget(length)
        written: list[str] = []
        used = 0
        count_lock = threading.Lock()

        def on_verified(block: CID, data: bytes) -> None:
            # Store thread, before the write: the replica may add at most
            # `budget` bytes to the disk, whatever its DAG turns out to be.
            nonlocal used
            with count_lock:
                if used + len(data) > budget:
                    raise StorageFull(f"over quota: the DAG is bigger than the {length} bytes declared")
                used += len(data)
                written.append(block_key(block))

        sources = [requester]
        for raw in offer.holders:
            try:
                peer = PeerId.from_bytes(raw)
            except P2PError:
                continue
            if peer not in sources and peer != self.me and self.node.connection_to(peer) is not None:
                sources.append(peer)
        pinned = False
        try:
            # One shared hold of the store guard from the pull to the pin:
            # released in between, a gc waiting for it would go first and
            # delete every block just pulled (none is pinned yet).
            async with self.node.store_guard.shared():
                await fetch_dag(self.node, cid, holders=sources, on_verified=on_verified, guard=False)
                await self._check_size(cid, manifest)
                await self._run(self.node.repo.pin_add, cid)
            pinned = True
            repo_path = self.node.repo.path
            if has_leaves(repo_path, cid, manifest.commitment):
                try:
                    self._remember_tree(text, await self.run_heavy(load_tree, repo_path, cid, manifest.commitment))
                    return
                except Cancelled:
                    raise
                except StoreError:
                    pass  # a stale or damaged leaf file: recompute it below
            commitment = await self.run_heavy(build_commitment, self.node.repo.blockstore, repo_path, cid,
                                              manifest.commitment.segment_size, max_length=length)
            if commitment != manifest.commitment:
                raise P2PError("the object's bytes do not match the manifest's commitment")
            self._trees.pop(text, None)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._undo_take(cid, pinned, pinned_before, written)
            raise

    async def _check_size(self, cid: CID, manifest: Manifest) -> None:
        """Refuse, before any hashing, a DAG whose bytes the commitment pass
        would have to invent: a file root declaring another length than the
        manifest, or far more bytes than its distinct blocks hold (one block
        linked a billion times declares an exabyte from a few MiB)."""
        length = manifest.commitment.length
        declared = await self.run_heavy(_committed_length, self.node.repo.blockstore, cid)
        if declared != length:
            raise P2PError(f"the DAG holds {declared} bytes, the manifest states {length}")
        stored = await self.run_heavy(stored_dag_bytes, self.node.repo.blockstore, cid)
        if length > MAX_EXPANSION * stored + EXPANSION_FLOOR:
            raise P2PError(f"the DAG declares {length} bytes from {stored} stored: refused "
                           f"(at most {MAX_EXPANSION}x repetition)")

    async def _undo_take(self, cid: CID, pinned: bool, pinned_before: float | None, written: list[str]) -> None:
        text = str(cid)
        repo = self.node.repo
        try:
            if pinned and pinned_before is None:
                created = await self._run(self.db.pin_created, text)
                if created is not None:
                    await self._run(repo.pin_rm, cid, created)
            if pinned_before is None:
                await self._run(remove_leaves, repo.path, cid)
            doomed = await self._run(self.db.unprotected, written)
            for key in doomed:
                await self._run(repo.blockstore.delete_key, key)
            if doomed:
                log.info("refused %s: removed the %d block(s) it had written", text, len(doomed))
        except (StoreError, OSError) as exc:
            log.warning("cleaning up the refused replica %s failed: %s", text, exc)

    # -- audits (holder side) ------------------------------------------------------

    async def on_audit_challenge(self, conn: PeerConnection, msg: Message) -> list[Message]:
        assert isinstance(msg, AuditChallenge)
        rid = msg.request_id
        cid = _root_cid(rid, msg.root_cid)
        if isinstance(cid, Error):
            return [cid]
        text = str(cid)
        obj = self.db.get_object(text)
        if obj is None or not obj.manifest:
            return [Error(rid, ErrorCode.NOT_FOUND, "no storage agreement for this object")]
        if obj.role != "owner" and obj.is_released:
            # Policy, not loss: REFUSED is scored as a timeout, never as a proven loss.
            return [Error(rid, ErrorCode.REFUSED, "the owner released this replica")]
        manifest = Manifest.decode(obj.manifest)
        if not self._may_audit(obj, manifest, conn.remote_peer):
            return [Error(rid, ErrorCode.REFUSED, "only the owner or a co-holder may audit")]
        most = max_challenges(manifest.commitment, L.MAX_PROOF_BYTES, len(self.me.to_bytes()), MAX_K)
        if msg.count > most:
            # The answer must fit one AuditProof; a bigger count could only
            # end in a proof the wire refuses (and work for nothing).
            return [Error(rid, ErrorCode.REFUSED, f"at most {most} challenges for this object")]
        if not await self._run(self.db.use_nonce, msg.nonce, text):
            return [Error(rid, ErrorCode.REFUSED, "replayed nonce")]
        try:
            # Both steps read through a CancellableStore: the deadline stops the
            # thread's work, not only the wait for it.
            with trio.fail_after(msg.deadline_ms / 1000):
                tree = await self.tree(text, manifest)
                proof = await run_sync_cancellable(lambda flag: prove(
                    CancellableStore(self.node.repo.blockstore, flag), cid, tree, msg.nonce, self.me, msg.count))
        except (StoreError, OSError) as exc:
            await self._run(self.db.record_audit, text, str(conn.remote_peer), "lost", msg.count, str(exc), None)
            return [Error(rid, ErrorCode.NOT_FOUND, f"cannot prove: {exc}"[:500])]
        except trio.TooSlowError:
            return [Error(rid, ErrorCode.BUSY, "could not build the proof in time")]
        sig = self.node.identity.sign(proof.signing_bytes())
        await self._run(self.db.record_audit, text, str(conn.remote_peer), "answered", msg.count, "", None)
        return [AuditProof(rid, msg.root_cid, msg.nonce, proof.encode(), sig)]

    def _may_audit(self, obj: ObjectRow, manifest: Manifest, peer: PeerId) -> bool:
        """The owner, a co-holder the owner signed, or a holder we placed (as deputy)."""
        if peer.to_bytes() == manifest.owner:
            return True
        if peer.to_bytes() in trusted_holders(obj.offer, PeerId.from_bytes(manifest.owner)):
            return True
        if peer.to_bytes() in self.co_holders(obj.cid):
            return True
        return self.db.holder(obj.cid, str(peer)) is not None

    async def tree(self, cid: str, manifest: Manifest) -> NodeSource:
        """The prover's tree for `cid` (cached; rebuilt from the data if the leaf file is gone)."""
        tree = self._trees.get(cid)
        if tree is not None and tree.commitment == manifest.commitment:
            self._trees.move_to_end(cid)
            return tree
        repo_path = self.node.repo.path
        parsed = parse_cid(cid)
        if not has_leaves(repo_path, parsed, manifest.commitment):
            # A pass over the whole object, in the heavy-work threads: stopped
            # by the caller's deadline or cancellation, bounded by the length.
            await self.run_heavy(build_commitment, self.node.repo.blockstore, repo_path, parsed,
                                 manifest.commitment.segment_size, max_length=manifest.commitment.length)
        loaded: NodeSource = await self.run_heavy(load_tree, repo_path, parsed, manifest.commitment)
        self._remember_tree(cid, loaded)
        return loaded

    def _remember_tree(self, cid: str, tree: NodeSource) -> None:
        self._trees[cid] = tree
        self._trees.move_to_end(cid)
        while len(self._trees) > MAX_CACHED_TREES:
            self._trees.popitem(last=False)


def _root_cid(rid: int, raw: bytes) -> CID | Error:
    """The CID a request names, or the MALFORMED error to answer with."""
    try:
        return cid_from_bytes(raw)
    except StoreError:
        return Error(rid, ErrorCode.MALFORMED, "bad CID")
