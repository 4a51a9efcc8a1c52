"""The replication service's control-API routes: GET /v1/status and POST /v1/audit.

They read the owner's view (holders, releases, audits) from the agreements
tables, or, on a holder, its own agreements and the holder list of the last
offer it accepted. Added to the node by `ReplicationOwner.attach`.

Not here: the state machine they show (shoal.p2p.replication.owner).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from shoal.store.ipld.cid import parse_cid

from shoal.p2p.errors import NotReplicated, P2PError, ProtocolError
from shoal.p2p.net.api import param
from shoal.p2p.replication.placement import network_prefix
from shoal.p2p.replication.repair_policy import State
from shoal.p2p.replication.signed import Offer
from shoal.p2p.secure.identity import PeerId

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node
    from shoal.p2p.replication.owner import ReplicationOwner

__all__ = ["ReplicationRoutes"]


class ReplicationRoutes:
    """The routes over one node's replication service."""

    def __init__(self, owner: "ReplicationOwner") -> None:
        self.owner = owner

    def attach(self, node: "Node") -> None:
        node.add_route("GET", "/v1/status", self.status)
        node.add_route("POST", "/v1/audit", self.audit)

    def _prefix_of(self, peer_id: str) -> str:
        """Network prefix of a holder (ours from our listen addresses)."""
        if peer_id == str(self.owner.me):
            return network_prefix(self.owner.node.listen_addrs)
        try:
            rec = self.owner.node.peers.get(PeerId.from_string(peer_id))
        except P2PError:
            return ""
        return network_prefix(rec.addrs) if rec is not None else ""

    async def status(self, p: dict[str, Any]) -> Any:
        """GET /v1/status?cid=: the object's role, wanted and live copies, its holders."""
        cid = str(parse_cid(param(p, "cid")))
        me = str(self.owner.me)
        ec = self.owner.db.ec_object(cid)
        if ec is not None:  # an erasure-coded object we own: its shards, not copies
            ec_doc: dict[str, Any] = {"cid": cid, "role": "deputy" if ec.deputy_for else "owner",
                                      "owner": ec.deputy_for or me}
            ec_doc.update(await trio.to_thread.run_sync(self.owner.erasure.status, ec))
            return ec_doc
        obj = self.owner.db.get_object(cid)
        if obj is None:
            if not self.owner.node.repo.index.is_pinned(cid):
                raise NotReplicated(f"{cid} is neither stored nor replicated by this node")
            return {"cid": cid, "role": "local", "owner": me, "scheme": {"replicas": 1},
                    "replicas_wanted": 1, "replicas_ok": 1,
                    "holders": [{"peer_id": me, "state": "ok", "last_audit": None}]}
        doc: dict[str, Any] = {"cid": cid, "role": obj.role, "owner": obj.owner,
                               "scheme": {"replicas": obj.replicas_wanted},
                               "replicas_wanted": obj.replicas_wanted, "size": obj.size,
                               "commitment_ready": bool(obj.manifest), "released": obj.is_released}
        if obj.role in ("owner", "deputy"):
            rows = self.owner.db.holders(cid)
            releases = self.owner.db.releases(cid)
            # Holders being given back stay listed, in state "releasing" until
            # they answered and "released" after: replicas_ok counts only "ok".
            doc["holders"] = [r.as_json() for r in rows] + [r.as_json() for r in releases]
            doc["replicas_ok"] = sum(1 for r in rows if r.replica.state is State.OK)
            doc["distinct_prefixes"] = len({self._prefix_of(r.peer_id) for r in rows
                                            if r.replica.state is State.OK})
            doc["releases_pending"] = sum(1 for r in releases if r.state == "pending")
        else:
            audits = self.owner.db.audits(cid, limit=1)
            last = {"time": audits[0].time, "ok": audits[0].outcome == "answered"} if audits else None
            state = "ok" if self.owner.node.repo.index.is_pinned(cid) else "lost"
            doc["holders"] = [{"peer_id": me, "state": "released" if obj.is_released else state,
                               "last_audit": last}]
            doc["replicas_ok"] = None  # only the owner (or deputy) knows
            doc["agreements"] = self.owner.db.agreements(cid)
            doc["known_holders"] = _offer_holders(obj.offer)
        return doc

    async def audit(self, p: dict[str, Any]) -> Any:
        """POST /v1/audit {cid}: one audit round now (owner or deputy); its results."""
        cid = str(parse_cid(param(p, "cid")))
        if self.owner.db.ec_object(cid) is not None:  # one round over every placed shard
            shard_results: list[dict[str, object]] = []
            for shard in self.owner.db.ec_shards(cid):
                obj = self.owner.db.get_object(shard.shard_cid)
                if obj is not None and obj.manifest:
                    for r in await self.owner.audit_object(shard.shard_cid):
                        shard_results.append(dict(r.as_json(), shard=shard.idx))
            return {"cid": cid, "results": shard_results}
        if self.owner.db.get_object(cid) is None:
            raise NotReplicated(f"no replication record for {cid}")
        results = await self.owner.audit_object(cid)
        return {"cid": cid, "results": [r.as_json() for r in results]}


def _offer_holders(offer: bytes | None) -> list[str]:
    """The holder list of the last offer we accepted (for status and tests)."""
    if not offer:
        return []
    try:
        return [str(PeerId.from_bytes(h)) for h in Offer.decode(offer).holders]
    except (ProtocolError, P2PError):
        return []
