"""The DHT on a running node: `[routing]` settings, providing, `get` through the DHT, the API.

`RoutingService` is a `NodeService` (shoal.p2p.net.hooks): attached by
`shoal node start` (shoal.p2p.net.extensions), it runs a `DHTService` on the
node's libp2p host with the node's own dial (so the allowlist, the swarm key
and admission apply to DHT dials as to any other), and

* provides what the repo holds: kubo's "roots" strategy by default (every
  object put or pinned recursively), or every block of those DAGs
  (`provide = "all"`); it scans the repo every `scan_interval` and announces
  what is new; the DHT service re-announces on its schedule;
* offers itself as the node's `routing` slot: `get` (shoal.p2p.exchange.fetch)
  asks it to connect to providers when no connected peer has the root;
* serves `/v1/routing/findprovs`, `/findpeer` and `/table` for
  `shoal routing ...`.

`[routing] bootstrap` names DHT-only bootstrap peers: multiaddrs, `/dnsaddr/`
ones (resolved through TXT records, shoal.p2p.net.dnsaddr, with
`[routing] dns_server` or resolv.conf's server), or `"ipfs"` for kubo's
default list (`IPFS_BOOTSTRAP`), to join the public IPFS DHT. They are dialled
by the DHT alone (not made Shoal peers), only when asked: the default is none.

Mode `off` runs nothing (the routes say so). The default mode is decided in
`RoutingSettings.from_config`: server in a private swarm or when every listen
address is loopback/private (a lab: every node is reachable, and a DHT of
clients only finds nothing), client otherwise (a node on the internet may be
behind NAT; kubo's auto mode makes the same call from reachability).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import trio

from shoal.store.errors import StoreError
from shoal.store.ipld.cid import CID, parse_cid
from shoal.p2p.errors import InvalidMultiaddr, P2PError
from shoal.p2p.net.api import ApiError, param
from shoal.p2p.net.node import Libp2pOnlyPeer
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.net.dns_txt import UdpTxtResolver
from shoal.p2p.net.dnsaddr import TxtResolver, resolve_dnsaddr
from shoal.p2p.secure.multiaddr import Dnsaddr, Multiaddr, parse_address

from . import K
from .providers import PROVIDER_EXPIRY, PROVIDER_REPUBLISH
from .routing_table import REFRESH_INTERVAL
from .service import DHTConfig, DHTService, ProviderInfo

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

__all__ = ["RoutingSettings", "RoutingService", "install"]

log = logging.getLogger("shoal.routing")

RoutingMode = Literal["server", "client", "off"]
ProvideStrategy = Literal["roots", "all"]

IPFS_BOOTSTRAP: tuple[str, ...] = (
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/dnsaddr/va1.bootstrap.libp2p.io/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
)
"""kubo's default `Bootstrap` list (its QUIC entry left out: Shoal dials TCP)."""
MAX_BOOTSTRAP = 64
BOOTSTRAP_RETRY = 60.0
"""While the routing table is empty, the bootstrap list is tried again this often."""
SELF_LOOKUP_INTERVAL = 300.0
"""A self-lookup every 5 min (js-libp2p's querySelf): new close peers join our table."""
PROVIDERS_TO_DIAL = 5
"""Providers `get` connects to at most (it fetches from several at once)."""
MAX_CONCURRENT_PROVIDES = 4

_FLOAT_KEYS = ("reprovide_interval", "provider_expiry", "scan_interval", "refresh_interval")


@dataclass(frozen=True)
class RoutingSettings:
    """The `[routing]` table of config.toml (and the `node start` flags over it)."""

    mode: RoutingMode = "server"
    provide: ProvideStrategy = "roots"
    reprovide_interval: float = PROVIDER_REPUBLISH
    provider_expiry: float = PROVIDER_EXPIRY
    scan_interval: float = 10.0
    refresh_interval: float = REFRESH_INTERVAL
    bootstrap: tuple[str, ...] = ()
    """DHT bootstrap addresses (canonical text), `/dnsaddr/` ones included."""
    dns_server: tuple[str, int] | None = None
    """Where `/dnsaddr` TXT lookups go; None: the first nameserver of resolv.conf."""

    @classmethod
    def from_config(cls, table: object, *, mode: str | None = None, provide: str | None = None,
                    private: bool) -> "RoutingSettings":
        """Merge `[routing]` and flags; `private`: a swarm key, or only loopback/private listen addresses.

        P2PError naming the key for a bad value.
        """
        if table is None:
            table = {}
        if not isinstance(table, dict):
            raise P2PError("config: [routing] must be a table")
        known = ("mode", "provide", "bootstrap", "dns_server", *_FLOAT_KEYS)
        for key in table:
            if key not in known:
                raise P2PError(f"config: unknown key {key!r} in [routing]; known: {', '.join(known)}")
        chosen = mode if mode is not None else table.get("mode", "auto")
        if chosen == "auto":
            chosen = "server" if private else "client"
        if chosen not in ("server", "client", "off"):
            raise P2PError(f"config: [routing] mode must be \"server\", \"client\", \"off\" or \"auto\", "
                           f"not {chosen!r}")
        strategy = provide if provide is not None else table.get("provide", "roots")
        if strategy not in ("roots", "all"):
            raise P2PError(f"config: [routing] provide must be \"roots\" or \"all\", not {strategy!r}")
        times: dict[str, float] = {}
        for key in _FLOAT_KEYS:
            if key in table:
                value = table[key]
                if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                        or value <= 0):
                    raise P2PError(f"config: [routing] {key} must be a positive number of seconds, not {value!r}")
                times[key] = float(value)
        return cls(mode=cast(RoutingMode, chosen), provide=cast(ProvideStrategy, strategy),
                   bootstrap=parse_bootstrap(table.get("bootstrap", [])),
                   dns_server=parse_dns_server(table.get("dns_server")), **times)


def parse_bootstrap(value: object) -> tuple[str, ...]:
    """`[routing] bootstrap`: "ipfs", or a list of multiaddrs where "ipfs" stands for kubo's list."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise P2PError("config: [routing] bootstrap must be \"ipfs\" or a list of multiaddrs")
    out: list[str] = []
    for item in items:
        for text in (IPFS_BOOTSTRAP if item == "ipfs" else (item,)):
            try:
                canonical = str(parse_address(text))
            except InvalidMultiaddr as exc:
                raise P2PError(f"config: [routing] bootstrap: {exc}") from None
            if canonical not in out:
                out.append(canonical)
    if len(out) > MAX_BOOTSTRAP:
        raise P2PError(f"config: [routing] bootstrap lists {len(out)} addresses, at most {MAX_BOOTSTRAP}")
    return tuple(out)


def parse_dns_server(value: object) -> tuple[str, int] | None:
    """`[routing] dns_server = "HOST[:PORT]"` (an IP address; port 53 by default)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise P2PError("config: [routing] dns_server must be \"IP[:PORT]\"")
    if value.startswith("[") and "]:" in value:  # [IPv6]:PORT
        host, _, port = value[1:].partition("]:")
    elif value.count(":") == 1:  # IPv4:PORT
        host, _, port = value.partition(":")
    else:  # a bare address, IPv6 ones included
        host, port = value.strip("[]"), "53"
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(port)
    except ValueError:
        raise P2PError(f"config: [routing] dns_server must be \"IP[:PORT]\", not {value!r}") from None
    return host, number


def is_private_setup(listen: list[Multiaddr], swarm_key: object | None) -> bool:
    """A lab or private swarm: a swarm key, or every listen address loopback/private."""
    if swarm_key is not None:
        return True
    for addr in listen:
        try:
            ip = ipaddress.ip_address(addr.host)
        except ValueError:
            return False  # a DNS name: meant to be reached from elsewhere
        if not (ip.is_loopback or ip.is_private or ip.is_link_local):
            return False
    return True


class RoutingService:
    """The node's DHT: provides its roots, finds providers for `get`, serves `shoal routing`."""

    def __init__(self, settings: RoutingSettings) -> None:
        self.settings = settings
        self.node: "Node | None" = None
        self.dht: DHTService | None = None
        self.provided: set[bytes] = set()
        self._dag_blocks: dict[bytes, frozenset[bytes]] = {}  # root multihash -> its blocks ("all")
        server = settings.dns_server
        self.resolver: TxtResolver = (UdpTxtResolver(server[0], server[1]) if server is not None
                                      else UdpTxtResolver())

    # -- NodeService -----------------------------------------------------------

    def attach(self, node: "Node") -> None:
        self.node = node
        node.add_route("GET", "/v1/routing/findprovs", self.api_findprovs)
        node.add_route("GET", "/v1/routing/findpeer", self.api_findpeer)
        node.add_route("GET", "/v1/routing/table", self.api_table)
        node.provide_routing(self)

    async def run(self) -> None:
        node = self._node()
        if self.settings.mode == "off":
            return
        if node.host is None:
            raise P2PError("the routing service needs the node's libp2p host")
        config = DHTConfig(refresh_interval=self.settings.refresh_interval,
                           provider_expiry=self.settings.provider_expiry,
                           republish=self.settings.reprovide_interval)
        self.dht = DHTService(node.host, mode=self.settings.mode, config=config, dial=self._dial)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.dht.run)
            nursery.start_soon(self._self_lookups)
            nursery.start_soon(self._provide_loop)
            if self.settings.bootstrap:
                nursery.start_soon(self._bootstrap_loop)

    def _node(self) -> "Node":
        if self.node is None:
            raise P2PError("the routing service is not attached to a node")
        return self.node

    async def _dial(self, addr: Multiaddr) -> object:
        """A libp2p connection for DHT requests only: the node's allowlist and swarm key apply.

        Not `Node.connect`: a lookup talks to ~20 peers, and each would become a
        Shoal peer (hello, peer table, `get`'s holders); a query connection is
        a plain libp2p one, closed by the DHT once idle.
        """
        node = self._node()
        if addr.peer_id is not None and not node.admits(addr.peer_id):
            raise P2PError(f"not dialling {addr.peer_id}: not on the allowlist")
        if node.host is None:
            raise P2PError("the node is not running")
        return await node.host.dial(addr)  # the host applies the swarm key

    def _running(self) -> DHTService:
        if self.settings.mode == "off":
            raise ApiError("routing is off on this node ([routing] mode = \"off\")")
        if self.dht is None:
            raise P2PError("the DHT is not running yet")
        return self.dht

    # -- background work ---------------------------------------------------------

    async def bootstrap_addrs(self) -> list[Multiaddr]:
        """`[routing] bootstrap` with every `/dnsaddr/` resolved (a failed one drops out)."""
        out: list[Multiaddr] = []
        for text in self.settings.bootstrap:
            addr = parse_address(text)
            found = await resolve_dnsaddr(addr, self.resolver) if isinstance(addr, Dnsaddr) else [addr]
            out.extend(a for a in found if a not in out)
        return out[:MAX_BOOTSTRAP]

    async def _bootstrap_loop(self) -> None:
        """Dial the bootstrap peers through the DHT; again while the table stays empty."""
        assert self.dht is not None
        while True:
            addrs = await self.bootstrap_addrs()
            size = await self.dht.bootstrap(addrs) if addrs else len(self.dht.table)
            log.info("routing: bootstrap through %d address(es): %d peer(s) in the table", len(addrs), size)
            while True:
                await trio.sleep(BOOTSTRAP_RETRY)
                if not len(self.dht.table):
                    break

    async def _wait_for_table(self, dht: DHTService) -> None:
        while not len(dht.table):
            await trio.sleep(0.25)

    async def _self_lookups(self) -> None:
        """Once the table has a peer, look ourselves up (join); again every few minutes."""
        assert self.dht is not None
        dht = self.dht
        while True:
            await self._wait_for_table(dht)
            await dht.lookup_peers(dht.local_id)
            with trio.move_on_after(SELF_LOOKUP_INTERVAL):
                while len(dht.table):
                    await trio.sleep(1.0)

    def _holdings(self) -> set[bytes]:
        """Multihashes to provide (in a worker thread: it reads the index, and the DAGs for "all")."""
        repo = self._node().repo
        roots: list[CID] = []
        for obj in repo.objects():
            roots.append(parse_cid(obj.cid))
        for pin in repo.pins():
            if pin.recursive:
                roots.append(parse_cid(pin.cid))
        out = {bytes(cid.digest) for cid in roots}
        if self.settings.provide == "all":
            walked: dict[bytes, frozenset[bytes]] = {}
            for cid in roots:
                mh = bytes(cid.digest)
                blocks = self._dag_blocks.get(mh)
                if blocks is None:  # each DAG is walked once, not on every scan
                    try:
                        blocks = frozenset(_multihash_of_key(k) for k in repo.dag_keys(cid))
                    except StoreError as exc:  # not (yet) complete here: walked again next scan
                        log.debug("routing: cannot walk %s: %s", cid, exc)
                        continue
                walked[mh] = blocks
                out.update(blocks)
            self._dag_blocks = walked
        return out

    async def _provide_loop(self) -> None:
        assert self.dht is not None
        dht = self.dht
        limit = trio.Semaphore(MAX_CONCURRENT_PROVIDES)

        async def provide(mh: bytes) -> None:
            async with limit:
                try:
                    told = await dht.provide(mh)
                except (P2PError, OSError, trio.TooSlowError) as exc:
                    log.info("routing: provide failed: %s", exc)
                    return
                if told:
                    self.provided.add(mh)
                else:
                    dht.stop_providing(mh)  # nobody heard it: the next scan tries again

        while True:
            await self._wait_for_table(dht)
            held = await trio.to_thread.run_sync(self._holdings)
            for gone in self.provided - held:
                dht.stop_providing(gone)
                self.provided.discard(gone)
            async with trio.open_nursery() as nursery:
                for mh in held - self.provided:
                    nursery.start_soon(provide, mh)
            await trio.sleep(self.settings.scan_interval)

    # -- the node's routing slot (used by get) -----------------------------------------

    async def connect_providers(self, root: CID, want: int = PROVIDERS_TO_DIAL) -> int:
        """Find providers of `root` in the DHT and connect to up to `want` of them; how many connected.

        Providers whose reputation shows corrupt blocks or lost data are
        skipped, as are peers still in their dial backoff; dials go through
        the node (allowlist, swarm key, admission).
        """
        if self.settings.mode == "off" or self.dht is None:
            return 0
        node = self._node()
        dht = self.dht
        providers = await dht.find_providers(bytes(root.digest), count=want * 2)
        dialable = {r.peer_id for r in node.peers.dialable()}
        chosen: list[ProviderInfo] = []
        for prov in providers:
            rec = node.peers.get(prov.peer_id)
            if rec is not None:
                if rec.reputation.corrupt or rec.reputation.proven_losses:
                    continue
                if not rec.connected and rec.dial_failures and prov.peer_id not in dialable:
                    continue  # backing off
            if prov.addrs or node.connection_to(prov.peer_id) is not None:
                chosen.append(prov)
            if len(chosen) >= want:
                break
        connected = 0

        async def dial(prov: ProviderInfo) -> None:
            nonlocal connected
            if node.connection_to(prov.peer_id) is not None:
                connected += 1
                return
            for addr in prov.addrs[:4]:
                try:
                    await node.connect(addr.with_peer(prov.peer_id))  # a Shoal peer: get asks it
                    connected += 1
                    return
                except Libp2pOnlyPeer:
                    connected += 1  # an IPFS node: connected for Bitswap, which get asks next
                    return
                except (P2PError, OSError, trio.TooSlowError) as exc:
                    log.info("routing: provider %s at %s unreachable: %s", prov.peer_id, addr, exc)

        async with trio.open_nursery() as nursery:
            for prov in chosen:
                nursery.start_soon(dial, prov)
        log.info("routing: %d provider(s) of %s found, %d connected", len(providers), root, connected)
        return connected

    # -- API -----------------------------------------------------------------------------

    async def api_findprovs(self, p: dict[str, Any]) -> Any:
        """GET /v1/routing/findprovs?cid=CID[&count=N]: providers as [{peer_id, addrs}]."""
        dht = self._running()
        cid = parse_cid(param(p, "cid", str))
        count = param(p, "count", int, K)
        if not 1 <= count <= 100:
            raise ApiError("count must be 1..100")
        found = await dht.find_providers(bytes(cid.digest), count=count)
        return [prov.as_json() for prov in found]

    async def api_findpeer(self, p: dict[str, Any]) -> Any:
        """GET /v1/routing/findpeer?peer=ID: {peer_id, addrs}."""
        dht = self._running()
        try:
            peer = PeerId.from_string(param(p, "peer", str))
        except (P2PError, ValueError) as exc:
            raise ApiError(f"not a peer id: {exc}") from None
        found = await dht.find_peer(peer)
        if found is None or not found.addrs:
            raise P2PError(f"peer {peer} not found in the DHT")
        return found.as_json()

    async def api_table(self, p: dict[str, Any]) -> Any:
        """GET /v1/routing/table: the mode and every peer of the routing table."""
        if self.settings.mode == "off":
            return {"mode": "off", "size": 0, "peers": []}
        dht = self._running()
        peers = dht.table_json()
        return {"mode": dht.mode, "size": len(peers), "provided": len(self.provided), "peers": peers}


def _multihash_of_key(key: str) -> bytes:
    """A blockstore key (base32 of the multihash, no padding) back to multihash bytes."""
    import base64

    return base64.b32decode(key + "=" * (-len(key) % 8))


def install(node: "Node") -> RoutingService:
    """Register the routing service on `node` with the settings `node start` put in `options.extra`."""
    settings = node.options.extra.get("routing")
    if not isinstance(settings, RoutingSettings):
        settings = RoutingSettings.from_config(None, private=is_private_setup(node.options.listen,
                                                                            node.options.swarm_key))
    service = RoutingService(settings)
    node.register(service)
    return service
