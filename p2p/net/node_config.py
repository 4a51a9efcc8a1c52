"""A node's configuration: `NodeOptions` (what `shoal node start` passes) and
`NodeLimits` (the `[node.limits]` table of config.toml, validated) and
`FetchConfig` (the `[fetch]` table: HTTP gateways as a block source).

Kept apart from the node so reading and checking configuration needs no
sockets or trio, and the CLI can build options before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from shoal.p2p.errors import P2PError
from shoal.p2p.lanes.api import MAX_LANES
from shoal.p2p.exchange.gateway_source import Gateway, GatewayUrlError, parse_gateway_url
from shoal.p2p.net.admission import AdmissionLimits
from shoal.p2p.net.dnsaddr import TxtResolver
from shoal.p2p.net.peer_store import PEER_TABLE_FLUSH_INTERVAL_S
from shoal.p2p.net.reputation_store import REPUTATION_FLUSH_INTERVAL_S
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Dnsaddr, Multiaddr
from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.wire import limits as L

__all__ = ["FetchConfig", "NodeLimits", "NodeOptions", "MAX_GATEWAYS", "MAX_EC_SHARDS", "parse_gateways",
           "parse_ec_scheme"]

MAX_EC_SHARDS = 32
"""K + M at most for `put --ec K+M`: one distinct holder per shard, and a swarm
rarely has more peers on distinct network prefixes."""


def parse_ec_scheme(text: str) -> tuple[int, int]:
    """"K+M" (put --ec, [replication] ec) -> (K, M); ValueError with a one-line reason."""
    parts = str(text).strip().split("+")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"erasure scheme must look like K+M (e.g. 4+2), not {text!r}")
    k, m = (int(p) for p in parts)
    if k < 1 or m < 1:
        raise ValueError(f"erasure scheme {k}+{m}: need K >= 1 and M >= 1")
    if k + m > MAX_EC_SHARDS:
        raise ValueError(f"erasure scheme {k}+{m}: K + M must be at most {MAX_EC_SHARDS}")
    return k, m

MAX_GATEWAYS = 16
"""Gateways one fetch asks at most (config and request together): each is a
holder with its own in-flight requests, so the count bounds the fetch's
connections."""


# `[node.limits]` key -> (AdmissionLimits field or None for NodeLimits, type)
_LIMIT_KEYS: dict[str, tuple[str | None, str, type]] = {
    "max_handshakes": ("admission", "max_handshakes", int),
    "max_handshakes_per_ip": ("admission", "max_handshakes_per_ip", int),
    "max_connections": ("admission", "max_connections", int),
    "max_connections_per_ip": ("admission", "max_connections_per_ip", int),
    "reserved_connections": ("admission", "reserved_for_protected", int),
    "new_connection_grace": ("admission", "grace_s", float),
    "send_budget": (None, "send_budget_bytes", int),
    "send_stall_timeout": (None, "send_stall_timeout_s", float),
}


@dataclass(frozen=True)
class NodeLimits:
    """Connection caps a node enforces; defaults from shoal.p2p.wire.limits.

    Set in config.toml under `[node.limits]` (keys in `_LIMIT_KEYS`, e.g.
    `max_connections_per_ip = 4`, `send_stall_timeout = 5.0`): an operator
    behind a NAT that many peers share raises the per-IP caps; tests lower
    them to attack a node on loopback in seconds.
    """

    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    send_budget_bytes: int = L.SEND_BUDGET_BYTES
    send_stall_timeout_s: float = L.SEND_STALL_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.send_budget_bytes < L.MAX_FRAME_BYTES:
            raise P2PError(f"send_budget must be at least one frame ({L.MAX_FRAME_BYTES} bytes)")
        if not self.send_stall_timeout_s > 0:
            raise P2PError("send_stall_timeout must be positive")

    @classmethod
    def from_config(cls, table: object) -> "NodeLimits":
        """From the `[node.limits]` table of config.toml (None: every default)."""
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise P2PError("config: [node.limits] must be a table")
        admission: dict[str, Any] = {}
        top: dict[str, Any] = {}
        for key, value in table.items():
            spec = _LIMIT_KEYS.get(key)
            if spec is None:
                raise P2PError(f"config: unknown key {key!r} in [node.limits]; known: {', '.join(_LIMIT_KEYS)}")
            where, name, kind = spec
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
                raise P2PError(f"config: [node.limits] {key} must be {'an integer' if kind is int else 'a number'}, "
                               f"got {value!r}")
            (admission if where else top)[name] = kind(value)
        return cls(AdmissionLimits(**admission), **top)


def parse_gateways(urls: object, where: str) -> tuple[Gateway, ...]:
    """A list of gateway URLs, checked and deduplicated (P2PError naming `where`)."""
    if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
        raise P2PError(f"{where} must be a list of URLs")
    try:
        gateways = tuple(dict.fromkeys(parse_gateway_url(u) for u in urls))
    except GatewayUrlError as exc:
        raise P2PError(f"{where}: {exc}") from None
    if len(gateways) > MAX_GATEWAYS:
        raise P2PError(f"{where}: at most {MAX_GATEWAYS} gateways, got {len(gateways)}")
    return gateways


@dataclass(frozen=True)
class FetchConfig:
    """The `[fetch]` table of config.toml.

    `gateways = ["http://HOST:PORT", ...]`: IPFS trustless gateways that
    `shoal get` asks for blocks beside the connected peers (every block
    hash-checked; see shoal.p2p.exchange.gateway_source).
    """

    gateways: tuple[Gateway, ...] = ()

    @classmethod
    def from_config(cls, table: object) -> "FetchConfig":
        """From the `[fetch]` table of config.toml (None: no gateways)."""
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise P2PError("config: [fetch] must be a table")
        for key in table:
            if key != "gateways":
                raise P2PError(f"config: unknown key {key!r} in [fetch]; known: gateways")
        return cls(parse_gateways(table.get("gateways", []), "config: [fetch] gateways"))


@dataclass
class NodeOptions:
    """How a node runs: where it listens, whom it dials first, its quota and limits.

    `extra` carries service settings (`audit_interval`, `default_replicas`)
    the node itself does not read.
    """

    listen: list[Multiaddr] = field(default_factory=lambda: [Multiaddr("127.0.0.1", 0)])
    bootstrap: list[Multiaddr | Dnsaddr] = field(default_factory=list)
    """Shoal peers dialled at start; `/dnsaddr/` entries are resolved first (in the background)."""
    resolver: TxtResolver | None = None
    """TXT lookups for `/dnsaddr/` bootstrap entries; None: UDP to resolv.conf's server."""
    pex_interval: float = 2.0
    peer_exchange: bool = True
    """False (`[node] peer_exchange = false`): peers are found only through
    bootstrap and the DHT, as in a large swarm where learning and dialling
    every peer a neighbour knows is no longer wanted."""
    quota_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    reputation_flush_interval: float = REPUTATION_FLUSH_INTERVAL_S
    peer_table_flush_interval: float = PEER_TABLE_FLUSH_INTERVAL_S
    """Changed peer records (addresses, times, backoff) are written to the
    index at most this often, and once more at a clean shutdown."""
    swarm_key: SwarmKey | None = None
    """A private swarm: every connection goes through the pre-shared-key
    protector (p2p/secure/pnet.py) before Noise. None: a public swarm, as before."""
    allow_peers: frozenset[PeerId] | None = None
    """Only these peers may connect, either way (checked after Noise). None: anyone."""
    limits: NodeLimits = field(default_factory=NodeLimits)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    lanes: int = 1
    """Processes that move block bytes (shoal.p2p.lanes): 1 = none, every
    transfer in the node's own process; N > 1 = N lane processes."""

    def __post_init__(self) -> None:
        if isinstance(self.lanes, bool) or not isinstance(self.lanes, int) or not 1 <= self.lanes <= MAX_LANES:
            raise P2PError(f"lanes must be a whole number from 1 to {MAX_LANES}, not {self.lanes!r}")
