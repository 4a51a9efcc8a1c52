"""The lanes' internal control-API route: `POST /v1/lanes/fetch {cid, holder[, holder_addrs, timeout]}`.

One block from one holder through this node's lanes, stored in our
blockstore: for tests and bench/transfer.py to exercise the lanes before (and
beside) the laned get. Answers `{"outcome", "size", "detail"}`; the block is
not pinned (gc may take it, as any cached block). `holder_addrs` (multiaddr
texts) replaces what the holder told us of its lanes: tests point the lanes at
a lying holder with it. Registered only when the node runs lanes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.store.ipld.cid import parse_cid

from shoal.p2p.errors import P2PError
from shoal.p2p.lanes.api import LaneJob
from shoal.p2p.lanes.control import MAX_HOLDER_ADDRS
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.net.api import ApiError, param
from shoal.p2p.net.hooks import RouteHandler
from shoal.p2p.secure.identity import PeerId

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

__all__ = ["lanes_fetch_route"]


def lanes_fetch_route(node: "Node") -> RouteHandler:
    """The handler of `POST /v1/lanes/fetch` for `node`."""

    async def lanes_fetch(p: dict[str, Any]) -> Any:
        cid = parse_cid(param(p, "cid"))
        holder = PeerId.from_string(param(p, "holder"))
        timeout = p.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
            raise ApiError("timeout must be a number of seconds in (0, 600]")
        addrs = node.peer_lane_addrs(holder)
        given = p.get("holder_addrs")
        if given is not None:
            if not isinstance(given, list) or len(given) > MAX_HOLDER_ADDRS or not all(isinstance(a, str) for a in given):
                raise ApiError(f"holder_addrs must be a list of at most {MAX_HOLDER_ADDRS} multiaddrs")
            try:
                addrs = tuple(Multiaddr.parse(a).with_peer(holder) for a in given)
            except P2PError as exc:
                raise ApiError(f"holder_addrs: {exc}") from None
        pool = node.lanes
        if pool is None:
            raise ApiError("this node runs no lanes (--lanes 1)")
        # Shared with gc's exclusive hold, as a fetch: the block is unpinned
        # until a caller pins it, and gc must not run under the lane's write.
        async with node.store_guard.shared():
            result = await pool.run_job(LaneJob(cid, holder, addrs, (), timeout=float(timeout)))
        return {"outcome": result.outcome.value, "size": result.size, "detail": result.detail}

    return lanes_fetch
