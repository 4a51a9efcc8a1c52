"""The node's typed extension points: what a service may hook into, and how.

A service (replication, energy accounting) is a `NodeService`: the node calls
its `attach(node)` once, from `Node.register`, before it runs; there the
service adds message handlers (`Node.add_handler` / `Node.wrap_handler`),
control-API routes (`Node.add_route`), observers of block serving
(`Node.add_serve_observer`), protection sources, and offers itself through
one of the typed slots (`Node.provide_replication`, `Node.provide_energy`).
When the node runs it starts each service's `run` in its nursery and cancels
it when it stops (a service cleans up in a `finally`).

Why this way: the node must not import its services (they build on it), but
it and its API do call into them (the quota counts replica bytes, `put
--replicas` places, `pin rm` releases). The slots are Protocols defined here,
so those calls are type-checked without an import cycle, and nothing needs
`getattr(node, ...)` or replaces a node method from outside.

Not here: the services themselves (shoal.p2p.replication.owner,
shoal.p2p.net.energy_service) or which ones a node gets
(shoal.p2p.net.extensions).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, Sequence

from shoal.store.energy.accounting import Bytes
from shoal.store.ipld.cid import CID

from shoal.p2p.net.connection import PeerConnection
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import Message

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

__all__ = [
    "Handler", "RouteHandler", "Route", "SentBytes", "ServeObserver", "NodeService",
    "ReplicationApi", "EnergyApi", "RoutingApi",
]

Handler = Callable[[PeerConnection, Message], Awaitable[Sequence[Message]]]
"""Answers one request of a peer; the replies go back in order."""

RouteHandler = Callable[[dict[str, Any]], Awaitable[Any]]
"""A JSON control-API route: query or body parameters in, a JSON document out."""


@dataclass(frozen=True)
class Route:
    """A control-API route a service adds (served beside the node's own)."""

    method: str
    path: str
    handler: RouteHandler


class SentBytes(Protocol):
    """What a serve observer hands the node to count into while blocks go out."""

    bytes_sent: int


class ServeObserver(Protocol):
    """Watches the node serve blocks (WANT_BLOCK), e.g. to account their energy."""

    def serving(self, peer: PeerId) -> AbstractContextManager[SentBytes]:
        """Open for one WANT_BLOCK request of `peer`; the node adds each block's size
        to the yielded counter as the block is sent, and closes it when done."""
        ...


class NodeService(Protocol):
    """Something that runs on a node: hooks itself in, then runs with it."""

    def attach(self, node: "Node") -> None:
        """Called once by `Node.register`, before the node runs: add handlers, routes..."""
        ...

    async def run(self) -> None:
        """Started in the node's nursery when it runs; cancelled when it stops."""
        ...


class ReplicationApi(Protocol):
    """The owner side of replication, as the node and its control API use it."""

    def held_bytes(self) -> int:
        """Bytes of replicas this node keeps for other owners (what --quota limits)."""
        ...

    def places(self, cid: CID) -> bool:
        """True if this node owns `cid` and keeps copies of it on other peers."""
        ...

    async def place(self, cid: CID, replicas: int) -> dict[str, Any]:
        """Record that `cid` wants `replicas` copies; placement runs in the background."""
        ...

    async def release_object(self, cid: CID) -> dict[str, Any] | None:
        """`pin rm` of an object we own: give every replica back (None: not ours)."""
        ...

    async def place_ec(self, cid: CID, k: int, m: int, drop_local: bool = False,
                       threshold: int | None = None) -> dict[str, Any]:
        """Store `cid` as K + M erasure-coded shards on distinct peers (in the background)."""
        ...

    async def recover_ec(self, cid: CID) -> dict[str, Any]:
        """Rebuild `cid` into the local store from K of its shards; P2PError if it cannot."""
        ...


class EnergyApi(Protocol):
    """Energy accounting, as other node code measures its work with it."""

    def measuring(self, kind: str) -> AbstractAsyncContextManager[Bytes]:
        """Meter the block as one ledger row of `kind`; the caller adds its byte counts."""
        ...

    def replicating_to(self, peer: PeerId, kind: str = "replicate-out") -> AbstractContextManager[None]:
        """While open, blocks served to `peer` count as `kind`, not `serve`."""
        ...


class RoutingApi(Protocol):
    """Content routing (the DHT), as `get` uses it when no connected peer has a root."""

    async def connect_providers(self, root: CID, want: int = 5) -> int:
        """Find providers of `root` and connect to up to `want` of them; how many are connected."""
        ...
