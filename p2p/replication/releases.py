"""Giving replicas back (owner side): releases owed to holders, sent and retried.

`pin rm` of an object this node owns (`release_object`) marks it released
(wanted 0) and owes every holder a ReleaseRequest; `put --replicas M` below
the current count (`release_surplus`) owes one to each surplus holder, the
lowest rendezvous-ranked first. Owed releases are rows of `repl_releases`
(pending -> done): the first attempt goes out at once, an unanswered one is
retried by the owner's repair loop (`retry_due`) with backoff and its own
token bucket, across restarts, until the holder answers.

A part of the owner (shoal.p2p.replication.owner), split out because it is
its own job; it uses the owner's tables, nursery and peer reach.
Not here: the holder's side of a release (shoal.p2p.replication.holder) or
the signed bytes (shoal.p2p.replication.signed.release_bytes).
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

import trio

from shoal.store.ipld.cid import CID, parse_cid

from shoal.p2p.errors import P2PError
from shoal.p2p.net.connection import RequestFailed
from shoal.p2p.replication.agreements import RELEASE_DONE, RELEASE_REFUSED
from shoal.p2p.replication.placement import rendezvous_score
from shoal.p2p.replication.repair_policy import (
    TokenBucket, counts_as_copy, release_delay, release_settled, surplus,
)
from shoal.p2p.replication.signed import release_bytes
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import ErrorCode, ReleaseRequest, ReleaseResponse

if TYPE_CHECKING:
    from shoal.p2p.replication.owner import ReplicationOwner

log = logging.getLogger("shoal.replication")

__all__ = ["OwnerReleases", "RELEASE_BATCH", "RELEASE_CONCURRENCY"]

RELEASE_BATCH = 32  # due releases looked at per repair-loop pass
RELEASE_CONCURRENCY = 16  # release requests in flight at once


class OwnerReleases:
    """The releases one owner owes, and the sending of them."""

    def __init__(self, owner: "ReplicationOwner", rate: float, burst: int) -> None:
        self.owner = owner
        # Retried releases get their own bucket: a mass unpin must not eat the
        # tokens that repairs of still-wanted objects need, nor the reverse.
        self.bucket = TokenBucket(rate, burst, time.monotonic())
        self._releasing: set[tuple[str, str]] = set()
        self._slots = trio.CapacityLimiter(RELEASE_CONCURRENCY)

    def rank(self, cid: CID, peer_id: str) -> tuple[float, bytes]:
        """A holder's rendezvous rank for `cid` (higher = kept longer).

        The weight is the peer's current placement weight; a peer that is not
        connected weighs 0 and so is the first to be given back.
        """
        try:
            peer = PeerId.from_string(peer_id)
        except P2PError:
            return (0.0, b"")
        weight = next((c.weight for c in self.owner._candidates() if c.peer_id == peer), 0.0)
        return (rendezvous_score(bytes(cid), peer, weight), peer.to_bytes())

    async def release_surplus(self, cid: CID, wanted: int) -> list[str]:
        """Lowering the count: give back the lowest-ranked holders beyond `wanted`.

        Only copies other than our own are candidates (the owner's copy is
        never released here); they leave the holder table in the same
        transaction that owes them a release, so they stop counting and
        stop being audited at once.
        """
        text = str(cid)
        me = str(self.owner.me)
        others = [h.peer_id for h in self.owner.db.holders(text) if h.peer_id != me and counts_as_copy(h.replica)]
        victims = surplus(sorted(others, key=lambda p: self.rank(cid, p)), wanted)
        if not victims:
            return []
        owed = await self.owner._run(self.owner.db.begin_release, text, me, victims, wanted, False)
        log.info("%s: %d replicas wanted now; releasing %s", text, wanted, ", ".join(victims))
        for peer in owed:
            self.owner._spawn(self.send, text, peer)
        self.owner._spawn(self.owner._refresh_holders, text)
        return list(victims)

    async def release_object(self, cid: CID) -> dict[str, Any] | None:
        """`pin rm` of an object we own: give every replica back.

        None if we do not own `cid` (nothing to release). The release is
        recorded before anything is sent (and before the caller unpins), so
        a crash at any point leaves releases owed, never forgotten.
        """
        text = str(cid)
        obj = self.owner.db.get_object(text)
        if obj is None or obj.role != "owner":
            return None
        if not obj.is_released:
            peers = [h.peer_id for h in self.owner.db.holders(text)]
            if str(self.owner.me) not in peers:
                peers.append(str(self.owner.me))
            owed = await self.owner._run(self.owner.db.begin_release, text, str(self.owner.me), peers, 0, True)
            log.info("%s: unpinned by its owner; releasing %d holder(s)", text, len(owed))
            for peer in owed:
                self.owner._spawn(self.send, text, peer)
        rows = self.owner.db.releases(text)
        return {"state": "released", "new": not obj.is_released, "holders": len(rows) - 1,
                "pending": sorted(r.peer_id for r in rows if r.state == "pending")}

    async def send(self, cid: str, peer_id: str) -> None:
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
            async with self._slots:
                row = self.owner.db.release(cid, peer_id)
                if row is None or row.state != "pending":
                    return
                outcome = await self._once(cid, peer_id)
                if outcome is None:
                    return
                state, detail = outcome
                if state is not None:
                    await self.owner._run(self.owner.db.release_done, cid, peer_id, detail, state)
                    log.info("%s: release of %s %s (%s)", cid, peer_id, state, detail)
                else:
                    delay = release_delay(row.attempts, random.uniform(0.5, 1.0))
                    await self.owner._run(self.owner.db.release_retry, cid, peer_id, time.time() + delay, detail)
                    log.info("%s: release of %s not answered (%s); retrying in %.0fs", cid, peer_id, detail, delay)
        finally:
            self._releasing.discard(key)

    async def _once(self, cid: str, peer_id: str) -> tuple[str | None, str] | None:
        """(final state or None to retry, detail) for one ReleaseRequest; None if the id is unusable."""
        try:
            peer = PeerId.from_string(peer_id)
        except P2PError:
            await self.owner._run(self.owner.db.release_done, cid, peer_id, "not a peer id", RELEASE_REFUSED)
            return None
        raw = bytes(parse_cid(cid))
        sig = self.owner.node.identity.sign(release_bytes(raw, self.owner.me.to_bytes(), peer.to_bytes()))
        conn = await self.owner._reach(peer)
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

    async def retry_due(self) -> None:
        """Background: resend due releases, as fast as the release bucket allows."""
        for row in self.owner.db.due_releases(time.time(), RELEASE_BATCH):
            if (row.cid, row.peer_id) in self._releasing:
                continue
            if not self.bucket.take(time.monotonic()):
                break
            self.owner._spawn(self.send, row.cid, row.peer_id)
