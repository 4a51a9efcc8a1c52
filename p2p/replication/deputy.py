"""Deputy election (holder side): who takes over an object whose owner is gone.

Holders watch the owner of every object they hold: once it has been
unreachable for three checks in a row (`repair_policy.OwnerWatch`), the
lowest-id live holder among those the owner named in its last signed offer
(`repair_policy.deputy`, `signed.trusted_holders`) becomes the object's
deputy: it audits and repairs in the owner's stead, with the holder table
seeded from what it can reach. It steps down as soon as the owner is back.

Every holder computes the same election from the same signed list, so no
message is needed to agree on a deputy; a holder not in the owner's list
can never elect itself.

Not here: the audits and repairs a deputy then runs (shoal.p2p.replication.owner,
whose audit loop calls `DeputyElection.check` each round).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from shoal.store.proofs.manifest import Manifest

from shoal.p2p.net.connection import PeerConnection
from shoal.p2p.replication.agreements import Agreements
from shoal.p2p.replication.signed import trusted_holders
from shoal.p2p.replication.repair_policy import OwnerWatch, Replica, State, deputy
from shoal.p2p.secure.identity import PeerId

log = logging.getLogger("shoal.replication")

__all__ = ["DeputyElection", "Reach"]

Reach = Callable[[PeerId], Awaitable[PeerConnection | None]]
"""A live connection to a peer (dialling it if need be), or None."""


class DeputyElection:
    """One node's view of the owners of the objects it holds, and its deputy roles."""

    def __init__(self, db: Agreements, me: PeerId, reach: Reach, wake: Callable[[], None]) -> None:
        """`reach` finds a peer; `wake` tells the owner side to look for repairs now."""
        self.db = db
        self.me = me
        self._reach = reach
        self._wake = wake
        self._watch: dict[str, OwnerWatch] = {}

    async def check(self) -> None:
        """One round: elect a deputy for objects whose owner has gone; step down when it is back."""
        seen: dict[PeerId, bool] = {}
        for obj in self.db.objects(("holder", "deputy")):
            if not obj.offer or not obj.manifest:
                continue
            manifest = Manifest.decode(obj.manifest)
            owner = PeerId.from_bytes(manifest.owner)
            watch = self._watch.setdefault(obj.cid, OwnerWatch())
            if owner not in seen:  # one check per owner per round, however many objects
                seen[owner] = await self._reach(owner) is not None
            reachable = seen[owner]
            gone = watch.check(reachable)
            if obj.role == "deputy":
                if reachable:
                    await trio.to_thread.run_sync(self.db.set_role, obj.cid, "holder")
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
            await trio.to_thread.run_sync(self.db.set_role, obj.cid, "deputy")
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
                    await trio.to_thread.run_sync(self.db.set_holder, obj.cid, str(peer), state, detail)
            self._wake()
