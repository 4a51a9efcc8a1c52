"""A Shoal peer: listens, dials, says hello, exchanges peers, serves blocks.

Structured concurrency throughout: `Node.run` owns one nursery; every
listener, connection, dial and background loop is a task in it (or in a
child nursery), and readiness is reported with `task_status.started()`.
Store work (hashing, disk) runs in worker threads via `trio.to_thread`, so
the event loop never blocks on it.

Inbound sockets go through `shoal.p2p.net.admission` (per-IP and global caps on
handshakes and connections, eviction of idle strangers, room kept for peers
that proved useful); `is_protected` says which peers those are, and
`protected_peers` / `protection_checks` / `protection_sources` are the
hooks other services use to add to them (an allowlist, replica holders).
The accept loop is `trio.serve_listeners`, which rides out EMFILE, ENFILE,
ENOMEM and ENOBUFS instead of dying.
"""

from __future__ import annotations

import logging
import random
import shutil
import sqlite3
import threading
import time
from functools import partial
from typing import Any, Callable, Iterable, Sequence

import trio

from shoal.store.errors import StoreError
from shoal.store.persist.repo import Repo

from shoal.p2p.wire import limits as L, protocols
from shoal.p2p.net.admission import Admission
from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.errors import P2PError
from shoal.p2p.net.guard import StoreGuard
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.net.loop_probe import LoopProbe
from shoal.p2p.wire.messages import (
    Error, ErrorCode, GetLanes, GetPeers, Hello, Lanes, Message, Peers, Ping, Pong, WantBlock, WantHave,
)
from shoal.p2p.lanes.api import LanePool
from shoal.p2p.lanes.pool import LaneProcessPool
from shoal.p2p.lanes.routes import lanes_fetch_route
from shoal.p2p.secure.multiaddr import Dnsaddr, Multiaddr
from shoal.p2p.net.dns_txt import UdpTxtResolver
from shoal.p2p.net.dnsaddr import resolve_dnsaddr
from shoal.p2p.net.peers import Clock, PeerTable, Random
from shoal.p2p.net.block_server import BlockServer
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.net.peer_exchange import exchange_round, learn_peers, peers_reply
from shoal.p2p.net.peer_store import PeerStore
from shoal.p2p.net.reputation_store import ReputationStore
from shoal.p2p.net.hooks import (
    EnergyApi, Handler, NodeService, ReplicationApi, Route, RoutingApi, RouteHandler, ServeObserver,
)
from shoal.p2p.bitswap.driver import Bitswap
from shoal.p2p.bitswap.repo_source import RepoSource
from shoal.p2p.bitswap.service import BitswapService
from shoal.p2p.libp2p.connection import (
    Libp2pConnection, NegotiationFailed, YamuxStream, upgrade_inbound, upgrade_outbound,
)
from shoal.p2p.libp2p.host import Libp2pHost

log = logging.getLogger("shoal.node")

AGENT = "shoal/0.1"
DIAL_TIMEOUT_S = 5.0
MAX_DIALS_IN_FLIGHT = 32
"""Outgoing dials at once. Peer exchange may report up to 1024 peers (some
made up, at addresses that never answer); each dial can hang for the whole
handshake timeout, so without a cap they would pile up round after round."""

PROTECTED_REFRESH_S = 30.0
"""How often `protection_sources` (e.g. the peers holding our replicas, read
from the index in a worker thread) are read again."""

SHOAL_PROTOCOL = protocols.SESSION
"""The yamux stream that makes a libp2p connection a Shoal connection
(docs/PROTOCOL.md §3): one per connection, opened by the dialer right after
the upgrade, Hello first both ways. Every other Shoal protocol
(shoal.p2p.wire.protocols) runs on a stream of its own, opened lazily by
either side once the Hellos are through."""

LANES_REFRESH_S = 30.0
"""How often a node with lanes asks its peers again where their lanes are."""

SHOAL_STREAM_WINDOW = 16 * 1024 * 1024
"""Receive window of the streams that carry blocks (protocols.BULK: the
exchange). Blocks of up to 1 MiB flow on them, many requests at once: with
yamux's 256 KiB default the sender would stop every quarter block for a
window update. Only those streams (at most two per connection, always read)
get it; every other stream keeps the session's window."""


class Libp2pOnlyPeer(P2PError):
    """The peer speaks libp2p (identify, ping, Bitswap) but not Shoal's protocol: an IPFS node."""

    hint = "it can still serve blocks over Bitswap (shoal get asks it when no Shoal peer has the root)"


class _Inbound:
    """An inbound connection's admission slot (shoal.p2p.net.admission).

    Every inbound libp2p connection holds one from the moment it is
    authenticated, whether or not the peer ever opens the Shoal session stream: an
    IPFS node that only speaks Bitswap takes a slot and counts for its IP
    like any Shoal peer. Activity and usefulness come from its Shoal
    connection once there is one.
    """

    def __init__(self, conn: Libp2pConnection) -> None:
        self.conn = conn
        self.shoal: PeerConnection | None = None
        self.opened_at = trio.current_time()

    @property
    def remote_peer(self) -> PeerId:
        return self.conn.remote_peer

    @property
    def last_activity(self) -> float:
        return self.shoal.last_activity if self.shoal is not None else self.opened_at

    @property
    def answers(self) -> int:
        return self.shoal.answers if self.shoal is not None else 0

    async def aclose(self) -> None:
        await self.conn.aclose()



class Node:
    """One running peer over one repo (whose lock it holds)."""

    def __init__(self, repo: Repo, identity: Identity, options: NodeOptions, *,
                 clock: Clock = time.time, rng: Random = random.random) -> None:
        """`clock` and `rng` drive the peer table's dial backoff (tests pass fakes)."""
        self.repo = repo
        self.identity = identity
        self.options = options
        self.peers = PeerTable(identity.peer_id, clock=clock, rng=rng)
        self.reputation_store = ReputationStore(repo.index)
        self._reputation_lock = trio.Lock()
        self._reputation_flushed_at = float("-inf")  # trio clock
        self.peer_store = PeerStore(repo.index)
        self._peer_store_lock = trio.Lock()
        self._peer_table_flushed_at = float("-inf")  # trio clock
        self.connections: dict[PeerId, list[PeerConnection]] = {}
        self.listen_addrs: list[Multiaddr] = []
        self._nursery: trio.Nursery | None = None
        self.admission = Admission(options.limits.admission)
        self._handshake_scopes: dict[object, trio.CancelScope] = {}
        self._inbound_conns: set[_Inbound] = set()
        # The libp2p layer (created when the node runs): every connection is a
        # libp2p connection; Shoal's messages ride its /shoal/<family>/1.0.0 streams.
        self.host: Libp2pHost | None = None
        self.bitswap: BitswapService | None = None
        self._libp2p_slots: dict[Libp2pConnection, _Inbound | None] = {}
        self._shoal_streams: set[Libp2pConnection] = set()  # connections whose session stream is taken
        self._shoal_conns: dict[Libp2pConnection, PeerConnection] = {}  # ... and their Shoal connection
        self.libp2p_only: dict[PeerId, Libp2pConnection] = {}  # peers without the Shoal session (IPFS nodes)
        # Peers that keep a slot when strangers crowd in (see is_protected).
        self.protected_peers: set[PeerId] = {a.peer_id for a in options.bootstrap if a.peer_id is not None}
        self.protection_checks: list[Callable[[PeerId], bool]] = []
        self.protection_sources: list[Callable[[], Iterable[str]]] = []
        self._sourced_protected: frozenset[PeerId] = frozenset()
        self.stalled_connections = 0
        self._conn_changed = trio.Event()
        self._dialing: set[PeerId] = set()
        # Extension points (shoal.p2p.net.hooks): filled by `register`ed services.
        self.services: list[NodeService] = []
        self.handlers: dict[type[Message], Handler] = {}
        self.routes: list[Route] = []
        self.serve_observers: list[ServeObserver] = []
        self._replication: ReplicationApi | None = None
        self._routing: RoutingApi | None = None
        self._energy: EnergyApi | None = None
        self.store_guard = StoreGuard()
        self.blocks = BlockServer(repo, self.serve_observers)
        self.received_bytes = 0
        self.loop_probe = LoopProbe()
        self.started_at: float | None = None  # wall clock, set when the node runs
        # Lane processes (options.lanes > 1, started when the node runs) and
        # where each connected peer's lanes listen (asked with GET_LANES).
        self.lane_pool: LaneProcessPool | None = None
        self._peer_lanes: dict[PeerId, tuple[Multiaddr, ...]] = {}
        # Who hears of block bytes the lanes served (bytes, their CPU-s): energy accounting.
        self.lane_serve_observers: list[Callable[[int, float], None]] = []
        if options.lanes > 1:
            self.add_route("POST", "/v1/lanes/fetch", lanes_fetch_route(self))

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    @property
    def served_bytes(self) -> int:
        """Block bytes sent to peers since the node started, by its lanes too (for `/v1/stats`)."""
        lanes = self.lane_pool.served_bytes() if self.lane_pool is not None else 0
        return self.blocks.served_bytes + lanes

    @property
    def lanes(self) -> LanePool | None:
        """The lane processes that move block bytes; None with `--lanes 1` (all in this process)."""
        return self.lane_pool

    def _lane_served(self, nbytes: int, cpu_s: float) -> None:
        for observer in self.lane_serve_observers:
            observer(nbytes, cpu_s)

    def peer_lane_addrs(self, peer: PeerId) -> tuple[Multiaddr, ...]:
        """Where `peer`'s lanes listen (with its peer id), as it told us; () if none or not known yet."""
        return self._peer_lanes.get(peer, ())

    # -- extension points (shoal.p2p.net.hooks) ---------------------------------

    def register(self, service: NodeService) -> None:
        """Attach `service` (it adds its hooks now) and run it with the node."""
        if self._nursery is not None:
            raise P2PError("services are registered before the node runs")
        if any(s is service for s in self.services):
            raise P2PError(f"{type(service).__name__} is registered already")
        self.services.append(service)
        service.attach(self)

    def add_handler(self, kind: type[Message], handler: Handler) -> None:
        """Serve requests of type `kind` (one handler per type)."""
        if kind in self.handlers:
            raise P2PError(f"{kind.__name__} already has a handler")
        self.handlers[kind] = handler
        if self.host is not None:  # running already: serve its protocol from now on
            for protocol in protocols.served([kind]):
                self.host.handlers.setdefault(protocol, self._family_stream)

    def wrap_handler(self, kind: type[Message], wrap: Callable[[Handler], Handler]) -> bool:
        """Replace the handler of `kind` by `wrap(handler)`; False if it has none."""
        handler = self.handlers.get(kind)
        if handler is None:
            return False
        self.handlers[kind] = wrap(handler)
        return True

    def add_route(self, method: str, path: str, handler: RouteHandler) -> None:
        """Serve `method path` on the control API (JSON in, JSON out)."""
        if any(r.method == method and r.path == path for r in self.routes):
            raise P2PError(f"{method} {path} already has a handler")
        self.routes.append(Route(method, path, handler))

    def add_serve_observer(self, observer: ServeObserver) -> None:
        """Let `observer` watch every WANT_BLOCK this node serves."""
        self.serve_observers.append(observer)

    def provide_replication(self, service: ReplicationApi) -> None:
        if self._replication is not None:
            raise P2PError("this node has a replication service already")
        self._replication = service

    def provide_routing(self, service: RoutingApi) -> None:
        if self._routing is not None:
            raise P2PError("this node has a routing service already")
        self._routing = service

    @property
    def routing(self) -> RoutingApi | None:
        """Content routing (the DHT service), if one is attached: `get` asks it for providers."""
        return self._routing

    def provide_energy(self, service: EnergyApi) -> None:
        if self._energy is not None:
            raise P2PError("this node has an energy service already")
        self._energy = service

    @property
    def replication(self) -> ReplicationApi | None:
        """The owner side of replication, if a service provides it."""
        return self._replication

    @property
    def energy(self) -> EnergyApi | None:
        """Energy accounting, if a service provides it."""
        return self._energy

    # -- lifecycle -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus["Node"] = trio.TASK_STATUS_IGNORED) -> None:
        # No index write may run on this thread (the loop would stop for as
        # long as it waits for another writer); shoal.store.persist.index logs any that does.
        self.repo.index.loop_thread = threading.get_ident()
        await self.load_peer_table()
        await self.load_reputation()
        self._reputation_flushed_at = self._peer_table_flushed_at = trio.current_time()
        try:
            await self._run_nursery(task_status)
        finally:
            # Clean shutdown (cancel, signal): write what changed since the last flush.
            with trio.CancelScope(shield=True):
                await self.flush_reputation()
                await self.flush_peer_table()
            self.repo.index.loop_thread = None

    async def _run_nursery(self, task_status: trio.TaskStatus["Node"]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.loop_probe.run)
            self.started_at = time.time()
            self.host = Libp2pHost(self.identity, nursery, swarm_key=self.options.swarm_key,
                                   handshake_timeout=L.HANDSHAKE_TIMEOUT_S)
            self.host.listen_addrs = self.listen_addrs  # identify reports what we listen on
            self.host.handlers[SHOAL_PROTOCOL] = self._shoal_stream
            # One protocol id per message family, each on its own stream; a
            # family no service here handles is not registered, so a peer
            # asking for it gets `na` from multistream-select.
            for protocol in protocols.served(self.handlers):
                if protocol != SHOAL_PROTOCOL:
                    self.host.handlers[protocol] = self._family_stream
            self.bitswap = BitswapService(self.host, Bitswap(RepoSource(self.repo)))
            for addr in self.options.listen:
                listeners = await trio.open_tcp_listeners(addr.port, host=addr.host)
                for listener in listeners:
                    host, port = listener.socket.getsockname()[:2]
                    self.listen_addrs.append(Multiaddr(host, port, None, addr.family))
                # serve_listeners, not a bare accept loop: out of file
                # descriptors or socket memory (EMFILE, ENFILE, ENOMEM,
                # ENOBUFS), it logs, waits a moment and accepts again.
                nursery.start_soon(partial(trio.serve_listeners, self._handle_inbound, listeners,
                                           handler_nursery=nursery))
            if self.options.lanes > 1:
                pool = LaneProcessPool(
                    self.options.lanes, repo=self.repo.path, peer_id=self.peer_id,
                    host=self.options.listen[0].host, admits=self.admits, swarm_key=self.options.swarm_key,
                    send_budget=self.options.limits.send_budget_bytes,
                    stall_timeout=self.options.limits.send_stall_timeout_s,
                    on_stored=self.repo.blockstore.note_written, on_served=self._lane_served)
                await nursery.start(pool.run)  # every lane listening before any peer is told of them
                self.lane_pool = pool
            nursery.start_soon(self._refresh_protected_loop)
            for entry in self.options.bootstrap:
                if isinstance(entry, Dnsaddr):
                    nursery.start_soon(self._bootstrap_dnsaddr, entry)
                    continue
                if entry.peer_id is not None:
                    self.peers.learn(entry.peer_id, [entry])
                self._start_dial(entry)
            # The peers saved by earlier runs (load_peer_table), past their
            # backoff: a restart without --bootstrap finds its swarm again.
            self._dial_ready()
            nursery.start_soon(self._peer_exchange_loop)
            for service in self.services:
                nursery.start_soon(service.run)
            task_status.started(self)

    def cancel(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def status(self) -> dict[str, Any]:
        """What `shoal node status` shows: identity, uptime, peers and loop health."""
        return {
            "peer_id": str(self.peer_id),
            "addrs": self.addrs_with_id(),
            "agent": AGENT,
            "uptime_s": round(time.time() - self.started_at, 3) if self.started_at is not None else 0.0,
            "connected_peers": len(self.connected_peers()),
            "known_peers": len(self.peers.all()),
            "loop": self.loop_probe.report(),
            "lanes": self.lane_pool.describe() if self.lane_pool is not None else [],
        }

    def addrs_with_id(self) -> list[str]:
        return [str(a.with_peer(self.peer_id)) for a in self.listen_addrs]

    # -- reputation persistence ------------------------------------------------

    async def load_reputation(self) -> int:
        """Put back the counters saved by earlier runs; returns how many peers.

        Never fails the start: a damaged row or table only costs its counts.
        """
        async with self._reputation_lock:
            try:
                saved = await trio.to_thread.run_sync(self.reputation_store.load)
            except (StoreError, sqlite3.Error) as exc:
                log.warning("cannot load peer reputation: %s", exc)
                return 0
            for peer, counts in saved.items():
                self.peers.restore_reputation(peer, counts)
            return len(saved)

    async def flush_reputation(self) -> int:
        """Write every changed counter in one transaction (in a worker thread)."""
        async with self._reputation_lock:
            changes = self.reputation_store.pending(self.peers.reputations())
            if not changes and not self.reputation_store.has_damaged_rows:
                return 0
            try:
                written: int = await trio.to_thread.run_sync(self.reputation_store.write, changes)
            except (StoreError, sqlite3.Error) as exc:
                log.warning("cannot save peer reputation (retrying later): %s", exc)
                return 0
            return written

    async def _maybe_flush(self) -> None:
        """Write reputation and the peer table if their batch intervals have passed."""
        now = trio.current_time()
        if now - self._reputation_flushed_at >= self.options.reputation_flush_interval:
            self._reputation_flushed_at = now
            await self.flush_reputation()
        if now - self._peer_table_flushed_at >= self.options.peer_table_flush_interval:
            self._peer_table_flushed_at = now
            await self.flush_peer_table()

    # -- peer table persistence ------------------------------------------------

    async def load_peer_table(self) -> int:
        """Put back the peers saved by earlier runs; returns how many.

        Peers the allowlist refuses are left out (a peer never remembered is
        never dialled); their rows stay, in case the allowlist changes back.
        Never fails the start: a damaged row or table only costs its peers.
        """
        async with self._peer_store_lock:
            try:
                saved = await trio.to_thread.run_sync(self.peer_store.load)
            except (StoreError, sqlite3.Error) as exc:
                log.warning("cannot load the saved peer table: %s", exc)
                return 0
            restored = 0
            for peer, state in saved.items():
                if self.admits(peer) and self.peers.restore(peer, state) is not None:
                    restored += 1
            if restored:
                log.info("%d known peers restored from the index", restored)
            return restored

    async def flush_peer_table(self) -> int:
        """Write every changed peer record in one transaction (in a worker thread)."""
        async with self._peer_store_lock:
            changes = self.peer_store.pending(self.peers.all())
            if not changes and not self.peer_store.has_damaged_rows:
                return 0
            try:
                written: int = await trio.to_thread.run_sync(self.peer_store.write, changes)
            except (StoreError, sqlite3.Error) as exc:
                log.warning("cannot save the peer table (retrying later): %s", exc)
                return 0
            return written

    # -- connections -----------------------------------------------------------

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        try:
            ip = str(stream.socket.getpeername()[0])
        except OSError:  # gone before we looked
            await trio.aclose_forcefully(stream)
            return
        key = object()
        decision = self.admission.begin_handshake(key, ip, trio.current_time())
        if not decision.admit:
            log.debug("inbound socket refused: %s", decision.reason)
            await trio.aclose_forcefully(stream)
            return
        for victim in decision.evict:  # the oldest strangers make room
            scope = self._handshake_scopes.pop(victim, None)
            if scope is not None:
                scope.cancel()
        assert self.host is not None
        try:
            conn = None
            with trio.CancelScope() as scope:
                self._handshake_scopes[key] = scope
                try:
                    # The whole libp2p upgrade ([pnet], mss /noise, Noise XX, mss
                    # /yamux/1.0.0) is the handshake: one timeout, one admission slot.
                    conn = await upgrade_inbound(stream, self.identity, self.host.handlers,
                                                 swarm_key=self.options.swarm_key,
                                                 timeout=L.HANDSHAKE_TIMEOUT_S)
                except (P2PError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                        OSError) as exc:
                    log.debug("inbound handshake failed: %s", exc)
            self._handshake_scopes.pop(key, None)
            self.admission.end_handshake(key)
            if conn is None:
                await trio.aclose_forcefully(stream)  # dropped for a newer one, or failed
                return
            if not self.admits(conn.remote_peer):
                log.info("refused %s: not on the allowlist", conn.remote_peer)
                await trio.aclose_forcefully(conn.secure)
                return
            slot = _Inbound(conn)
            if not self._admit(slot, ip):
                await trio.aclose_forcefully(conn.secure)
                return
            await self._serve_libp2p(conn, slot)
        except Exception:
            # Whatever a stranger's bytes trigger, only this connection may
            # die: this task runs in the node's nursery, so an escape here
            # would stop every other connection and the API with it.
            log.exception("inbound connection failed")
            await trio.aclose_forcefully(stream)
        finally:
            self._handshake_scopes.pop(key, None)
            self.admission.end_handshake(key)

    # -- who keeps a slot ------------------------------------------------------------

    def is_protected(self, peer: PeerId) -> bool:
        """Has `peer` proved useful, so that strangers may not take its slot?

        Yes if it is in `protected_peers` (bootstrap peers, `protect()`) or on
        the allowlist (`--allow-peers`), if a `protection_checks` callable says so, if it is
        among the peers `protection_sources` report (replica holders), or if
        it delivered valid data to us and never corrupt data. Merely having
        connected does not count: keys cost nothing.
        """
        if peer in self.protected_peers or peer in self._sourced_protected:
            return True
        allowed = self.options.allow_peers
        if allowed is not None and peer in allowed:
            return True
        rec = self.peers.get(peer)
        if rec is not None and rec.reputation.delivered > 0 and rec.reputation.corrupt == 0:
            return True
        return any(check(peer) for check in self.protection_checks)

    def protect(self, peers: Iterable[PeerId]) -> None:
        """Keep room for these peers from now on (e.g. an allowlist)."""
        self.protected_peers.update(peers)

    async def _refresh_protected_loop(self) -> None:
        while True:
            found: set[PeerId] = set()
            for source in list(self.protection_sources):
                try:
                    ids: list[str] = await trio.to_thread.run_sync(lambda: list(source()))
                except (StoreError, sqlite3.Error, P2PError, OSError) as exc:
                    log.warning("cannot read protected peers: %s", exc)
                    continue
                for text in ids:
                    try:
                        found.add(PeerId.from_string(text))
                    except (P2PError, ValueError):
                        continue
            self._sourced_protected = frozenset(found)
            await trio.sleep(PROTECTED_REFRESH_S)

    def _admit(self, conn: _Inbound, ip: str) -> bool:
        """Give an authenticated inbound connection a slot, evicting if need be."""
        now = trio.current_time()
        protected: dict[object, bool] = {}
        for other in self._inbound_conns:
            self.admission.touch(other, other.last_activity)
            entry = self.admission.entry(other)
            if entry is not None:
                entry.useful = other.answers
            protected[other] = self.is_protected(other.remote_peer)
        decision = self.admission.admit(conn, ip, self.is_protected(conn.remote_peer), now, protected)
        if not decision.admit:
            log.info("refusing inbound connection from %s at %s: %s", conn.remote_peer, ip, decision.reason)
            return False
        assert self._nursery is not None
        for victim in decision.evict:
            assert isinstance(victim, _Inbound)
            log.info("evicting idle connection from %s to make room for %s", victim.remote_peer, conn.remote_peer)
            self._inbound_conns.discard(victim)
            self._nursery.start_soon(victim.aclose)
        self._inbound_conns.add(conn)
        return True

    def connection_stats(self) -> dict[str, int]:
        """Admission counters, stuck sends and libp2p connections (those without
        a Shoal session stream: IPFS nodes), for `/v1/stats` (operators and tests)."""
        libp2p = [c for c in self._libp2p_slots if not c.closed]
        return {**self.admission.stats(), "stalled": self.stalled_connections,
                "libp2p": len(libp2p),  # every connection, Shoal peers and IPFS nodes alike
                "libp2p_only": sum(1 for c in libp2p if c not in self._shoal_streams)}

    async def connect(self, addr: Multiaddr) -> PeerConnection:
        """Dial `addr` (proving its /p2p/ id if given) and return a live connection."""
        if addr.peer_id is not None:
            existing = self.connection_to(addr.peer_id)
            if existing is not None:
                return existing
            if addr.peer_id == self.peer_id:
                raise P2PError("refusing to dial ourselves")
            if not self.admits(addr.peer_id):
                raise P2PError(f"not dialling {addr.peer_id}: not on the allowlist")
            only = self.libp2p_only.get(addr.peer_id)
            if only is not None and not only.closed:
                raise Libp2pOnlyPeer(f"{addr.peer_id} is connected, but speaks no {SHOAL_PROTOCOL}")
        with trio.fail_after(DIAL_TIMEOUT_S + L.HANDSHAKE_TIMEOUT_S):
            try:
                tcp = await trio.open_tcp_stream(addr.host, addr.port)
            except OSError as exc:
                raise P2PError(f"cannot reach {addr}: {exc.strerror or exc}") from None
            if self.host is None or self._nursery is None:
                await trio.aclose_forcefully(tcp)
                raise P2PError("the node is not running")
            conn = await upgrade_outbound(tcp, self.identity, self.host.handlers, expected_peer=addr.peer_id,
                                          swarm_key=self.options.swarm_key, timeout=L.HANDSHAKE_TIMEOUT_S)
        peer = conn.remote_peer
        if peer == self.peer_id:
            await trio.aclose_forcefully(conn.secure)
            raise P2PError("dialled ourselves")
        if not self.admits(peer):
            await trio.aclose_forcefully(conn.secure)
            raise P2PError(f"{addr} is {peer}, which is not on the allowlist")
        assert self._nursery is not None
        await self._nursery.start(self._serve_libp2p, conn, None)
        try:
            with trio.fail_after(L.HANDSHAKE_TIMEOUT_S):
                stream = await conn.open_stream(SHOAL_PROTOCOL)
        except NegotiationFailed:
            # An IPFS node (Helia, kubo): keep the connection for Bitswap.
            self.libp2p_only[peer] = conn
            assert self.bitswap is not None
            try:
                await self.bitswap.connect(conn)
            except (P2PError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("%s: no Bitswap either (%s)", addr, exc)
                await conn.aclose()
            self._notify()
            raise Libp2pOnlyPeer(f"{addr} speaks libp2p but not {SHOAL_PROTOCOL}: "
                                 "connected for Bitswap only") from None
        except (P2PError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await conn.aclose()
            raise P2PError(f"{addr}: cannot open the {SHOAL_PROTOCOL} stream: {exc}") from None
        self._shoal_streams.add(conn)
        send, receive = trio.open_memory_channel[PeerConnection](1)
        self._nursery.start_soon(partial(self._run_connection, stream, peer, send, libp2p=conn))
        async with receive:
            try:
                shoal = await receive.receive()
            except trio.EndOfChannel:
                raise P2PError(f"{addr} closed the connection during hello") from None
        self.peers.learn(shoal.remote_peer, [addr])
        return shoal

    async def _bootstrap_dnsaddr(self, addr: Dnsaddr) -> None:
        """Resolve a `/dnsaddr/` bootstrap entry, then dial each peer it names once.

        In the background: a slow or dead DNS server delays only this entry.
        Every peer found is protected, as a literal bootstrap peer is.
        """
        found = await resolve_dnsaddr(addr, self.options.resolver or UdpTxtResolver())
        log.info("bootstrap %s resolved to %d address(es)", addr, len(found))
        by_peer: dict[PeerId | None, list[Multiaddr]] = {}
        for a in found:
            by_peer.setdefault(a.peer_id, []).append(a)
        for peer, addrs in by_peer.items():
            if peer is None:
                for a in addrs:
                    self._start_dial(a)
                continue
            self.protected_peers.add(peer)
            self.peers.learn(peer, addrs)
            self._start_dial(addrs[0])

    def _start_dial(self, addr: Multiaddr) -> bool:
        """Dial in the background unless that peer is already being dialled."""
        if addr.peer_id is not None:
            if addr.peer_id in self._dialing:
                return False
            self._dialing.add(addr.peer_id)  # now, not in the task: the next round must see it
        assert self._nursery is not None
        self._nursery.start_soon(self._dial_quietly, addr)
        return True

    async def _dial_quietly(self, addr: Multiaddr) -> None:
        try:
            await self.connect(addr)
        except Libp2pOnlyPeer as exc:
            log.info("dial %s: %s", addr, exc)  # not a failure: no backoff
        except (P2PError, trio.TooSlowError, OSError) as exc:
            log.info("dial %s failed: %s", addr, exc)
            if addr.peer_id is not None:
                self.peers.dial_failed(addr.peer_id)  # backs off its next dial
        finally:
            if addr.peer_id is not None:
                self._dialing.discard(addr.peer_id)

    async def _serve_libp2p(self, conn: Libp2pConnection, slot: _Inbound | None, *,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run one libp2p connection until it ends (its streams: Shoal's, Bitswap, identify, ping)."""
        assert self.host is not None
        self._libp2p_slots[conn] = slot
        try:
            await self.host.run_connection(conn, task_status=task_status)
        finally:
            del self._libp2p_slots[conn]
            self._shoal_streams.discard(conn)
            if self.libp2p_only.get(conn.remote_peer) is conn:
                del self.libp2p_only[conn.remote_peer]
            if slot is not None:
                self._inbound_conns.discard(slot)
                self.admission.forget(slot)
            self._notify()

    async def _shoal_stream(self, stream: YamuxStream) -> None:
        """The dialer opened the session stream: Hello, then the connection lives as long as it does."""
        conn = stream.conn
        slot = self._libp2p_slots.get(conn)
        if slot is None or conn in self._shoal_streams:
            # Only the dialer opens it (slot None: we dialled, or not a node
            # connection), and only once per connection.
            stream.reset()
            return
        self._shoal_streams.add(conn)
        await self._run_connection(stream, conn.remote_peer, ready=None, libp2p=conn, slot=slot)

    async def _family_stream(self, stream: YamuxStream) -> None:
        """The peer opened the stream of one Shoal protocol (exchange, replication...).

        It belongs to the connection's Shoal session: refused (reset) on a
        connection without one, before the peer's Hello came (bounded wait),
        or when the peer already has a live stream of that protocol.
        """
        shoal = self._shoal_conns.get(stream.conn)
        if shoal is None:
            stream.reset()
            return
        if stream.protocol in protocols.BULK:
            stream.grow_window(SHOAL_STREAM_WINDOW)
        if not await shoal.accept_stream(stream, stream.protocol):
            stream.reset()

    async def _open_family(self, conn: Libp2pConnection, protocol: str) -> YamuxStream | None:
        """Open the stream of one Shoal protocol to the peer; None if it answers `na`."""
        try:
            stream = await conn.open_stream(protocol, timeout=L.HANDSHAKE_TIMEOUT_S)
        except NegotiationFailed:
            return None
        if protocol in protocols.BULK:
            stream.grow_window(SHOAL_STREAM_WINDOW)
        return stream

    async def _run_connection(
        self, stream: trio.abc.Stream, peer: PeerId, ready: "trio.MemorySendChannel[PeerConnection] | None",
        *, libp2p: Libp2pConnection | None = None, slot: _Inbound | None = None,
    ) -> None:
        """Shoal's protocols on `stream` (the session stream of `libp2p`, which ends with it) and
        the streams of the other Shoal protocols opened on `libp2p`."""
        try:
            await self._run_peer_connection(stream, peer, ready, slot, libp2p)
        finally:
            if libp2p is not None:
                # The Shoal connection is over (closed, evicted, stalled, malformed):
                # so is the libp2p connection under it, as when it was one socket.
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await libp2p.aclose()

    async def _run_peer_connection(
        self, stream: trio.abc.Stream, peer: PeerId, ready: "trio.MemorySendChannel[PeerConnection] | None",
        slot: _Inbound | None, libp2p: Libp2pConnection | None = None,
    ) -> None:
        conns = self.connections.setdefault(peer, [])
        limits = self.options.limits
        opener = partial(self._open_family, libp2p) if libp2p is not None else None
        conn = PeerConnection(stream, peer, self._handle_request, send_budget=limits.send_budget_bytes,
                              stall_timeout=limits.send_stall_timeout_s,
                              protocol=SHOAL_PROTOCOL if libp2p is not None else None, open_stream=opener)
        if len(conns) >= L.MAX_CONNECTIONS_PER_PEER:
            if not conns:
                self.connections.pop(peer, None)
            await trio.aclose_forcefully(stream)
            if ready is not None:
                await ready.aclose()
            return
        if slot is not None:
            slot.shoal = conn
        if libp2p is not None:
            self._shoal_conns[libp2p] = conn
        conns.append(conn)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.run)
                await conn.send(self._hello())
                with trio.move_on_after(L.HELLO_TIMEOUT_S):
                    await conn.hello_received.wait()
                if conn.remote_hello is None:
                    await conn.aclose()
                    return
                self._on_hello(conn, libp2p)
                if self.lane_pool is not None:
                    nursery.start_soon(self._learn_lanes, conn)
                if ready is not None:
                    await ready.send(conn)
                    await ready.aclose()
                    ready = None
                self._notify()
        # except*: errors from a nursery body arrive as an ExceptionGroup.
        except* (trio.BrokenResourceError, trio.ClosedResourceError, P2PError):
            pass
        finally:
            if ready is not None:
                await ready.aclose()
            if conn.stalled:
                self.stalled_connections += 1
            if libp2p is not None and self._shoal_conns.get(libp2p) is conn:
                del self._shoal_conns[libp2p]
            conns.remove(conn)
            if not conns:
                if self.connections.get(peer) is conns:
                    self.connections.pop(peer, None)
                self._peer_lanes.pop(peer, None)
                self.peers.mark_connected(peer, False)
            self._notify()

    def _hello(self) -> Hello:
        total, free = self._capacity()
        return Hello(0, (L.PROTOCOL_VERSION,), tuple(str(a) for a in self.listen_addrs[: L.MAX_LISTEN_ADDRS]),
                     AGENT, total, min(free, total))

    def _capacity(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.repo.path)
        quota = self.options.quota_bytes
        if quota is None:
            return usage.total, usage.free
        used = self.held_for_others()
        return quota, max(0, min(quota - used, usage.free))

    def held_for_others(self) -> int:
        """Bytes of replicas this node keeps for other owners (what --quota limits)."""
        return self._replication.held_bytes() if self._replication is not None else 0

    def _on_hello(self, conn: PeerConnection, libp2p: Libp2pConnection | None) -> None:
        hello = conn.remote_hello
        assert isinstance(hello, Hello)
        addrs = []
        for text in hello.listen_addrs:
            try:
                addrs.append(Multiaddr.parse(text))
            except P2PError:
                continue
        rec = self.peers.learn(conn.remote_peer, addrs)
        if rec is not None:
            rec.capacity_bytes, rec.free_bytes, rec.agent = hello.capacity_bytes, hello.free_bytes, hello.agent
            if libp2p is not None:
                rec.security = libp2p.secure.cipher.protocol_name.decode()
        self.peers.mark_connected(conn.remote_peer, True)

    async def _learn_lanes(self, conn: PeerConnection) -> None:
        """Ask the peer where its lanes listen (GET_LANES); an older peer's UNKNOWN_TYPE means none.

        An unspecified host (a lane on 0.0.0.0) is replaced by the address
        the peer's connection comes from, as that is where its lanes are.
        """
        try:
            replies = await conn.request(GetLanes, timeout=L.REQUEST_TIMEOUT_S)
        except RequestFailed as exc:
            log.debug("%s: no lanes (%s)", conn.remote_peer, exc)
            return
        seen = getattr(getattr(conn.stream, "conn", None), "remote_addr", None)
        addrs: list[Multiaddr] = []
        for reply in replies:
            if not isinstance(reply, Lanes):
                continue
            for text in reply.addrs:
                try:
                    addr = Multiaddr.parse(text)
                except P2PError:
                    continue
                if addr.host in ("0.0.0.0", "::") and seen is not None:
                    addr = Multiaddr(seen[0], addr.port, None, "ip6" if ":" in seen[0] else "ip4")
                addrs.append(addr.with_peer(conn.remote_peer))
        if not conn.closed and self.connection_to(conn.remote_peer) is not None:
            self._peer_lanes[conn.remote_peer] = tuple(addrs)

    def _notify(self) -> None:
        self._conn_changed.set()
        self._conn_changed = trio.Event()

    def connection_to(self, peer: PeerId) -> PeerConnection | None:
        for conn in self.connections.get(peer, []):
            if not conn.closed and conn.remote_hello is not None:
                return conn
        return None

    async def bitswap_peers(self, timeout: float = 5.0) -> list[PeerId]:
        """Connected peers to fetch from over Bitswap: the libp2p-only ones (IPFS nodes).

        Bitswap is started on each such connection that does not run it yet
        (an IPFS node that dialled us may not have opened a Bitswap stream).
        """
        if self.bitswap is None:
            return []
        service = self.bitswap
        for conn in list(self._libp2p_slots):
            if conn.closed or conn in self._shoal_streams or service.bitswap.has_peer(conn.remote_peer):
                continue
            with trio.move_on_after(timeout):
                try:
                    await service.connect(conn)
                except (P2PError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    log.debug("no Bitswap with %s: %s", conn.remote_peer, exc)
        shoal = set(self.connected_peers())
        return [p for p in service.bitswap.peers() if isinstance(p, PeerId) and p not in shoal]

    def connected_peers(self) -> list[PeerId]:
        return [p for p in list(self.connections) if self.connection_to(p) is not None]

    async def wait_for_peers(self, count: int, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while len(self.connected_peers()) < count:
                await self._conn_changed.wait()
            return True
        return False

    # -- peer exchange -------------------------------------------------------------

    async def _peer_exchange_loop(self) -> None:
        lanes_asked = trio.current_time()
        while True:
            await trio.sleep(self.options.pex_interval)
            await self._maybe_flush()
            if self.options.peer_exchange:
                await self._exchange_peers()
            self._dial_ready()
            if self.lane_pool is not None and trio.current_time() - lanes_asked >= LANES_REFRESH_S:
                # A peer's replacement lane may have had to take a new port.
                lanes_asked = trio.current_time()
                assert self._nursery is not None
                for peer in self.connected_peers():
                    conn = self.connection_to(peer)
                    if conn is not None:
                        self._nursery.start_soon(self._learn_lanes, conn)

    def _dial_ready(self) -> int:
        """Dial known peers past their backoff, up to MAX_DIALS_IN_FLIGHT; returns how many started.

        In `PeerTable.dialable` order: those that failed least first (made-up
        addresses cannot starve real peers of dial slots), then the best
        reputation, then the most recently connected. Peers the allowlist
        refuses are not dialled (and so do not count as failures); the
        swarm key is applied by `connect` as for every dial.
        """
        started = 0
        for rec in self.peers.dialable():
            if len(self._dialing) >= MAX_DIALS_IN_FLIGHT:
                break
            if self.admits(rec.peer_id) and self._start_dial(rec.dial_addr()):
                started += 1
        return started

    async def _exchange_peers(self, deadline: float = L.PEER_EXCHANGE_DEADLINE_S) -> None:
        conns = [c for c in map(self.connection_to, self.connected_peers()) if c is not None]
        await exchange_round(conns, self._learn_peers, deadline)

    def _learn_peers(self, reply: Peers) -> None:
        learn_peers(self.peers, reply, self.admits)

    def admits(self, peer: PeerId) -> bool:
        """Whether the allowlist, if the node has one, lets `peer` connect."""
        allowed = self.options.allow_peers
        return allowed is None or peer in allowed

    # -- serving requests ---------------------------------------------------------------

    async def _handle_request(self, conn: PeerConnection, msg: Message) -> Sequence[Message]:
        rid = msg.request_id
        if isinstance(msg, Ping):
            return [Pong(rid, msg.payload)]
        if isinstance(msg, GetPeers):
            return [peers_reply(self.peers, conn.remote_peer, rid, msg.max_peers)]
        if isinstance(msg, GetLanes):
            lanes = self.lane_pool.addrs() if self.lane_pool is not None else []
            return [Lanes(rid, tuple(dict.fromkeys(str(a) for a in lanes)))]
        if isinstance(msg, WantHave):
            return await self.blocks.want_have(rid, msg.cids)
        if isinstance(msg, WantBlock):
            await self.blocks.serve(conn, rid, msg.cids)
            return []  # sent one by one as they were read
        handler = self.handlers.get(type(msg))
        if handler is not None:
            return await handler(conn, msg)
        return [Error(rid, ErrorCode.UNKNOWN_TYPE, f"{type(msg).__name__} is not served here")]
