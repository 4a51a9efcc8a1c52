"""The trio driver of the sans-IO DHT on a `Libp2pHost`: `/ipfs/kad/1.0.0` for real.

`DHTService(host, mode=...)` is started with `await nursery.start(dht.run)`.

* **Server mode** registers the `/ipfs/kad/1.0.0` handler, so identify
  advertises it and other peers add us to their tables; requests are
  answered from the routing table and the provider store: FIND_NODE,
  GET_PROVIDERS, ADD_PROVIDER (only the sender may name itself a provider),
  PING; GET_VALUE/PUT_VALUE get an empty answer (we keep no value records).
* **Client mode** never registers the handler: it asks, it does not answer.
  In both modes only peers that advertise `/ipfs/kad/1.0.0` in identify (or
  answered one of our kad requests) enter the routing table; a client-mode
  peer we meet is never added.

The routing table is fed by connections: every connection the host makes or
accepts is identified once. Lookups are `query.Lookup` driven by trio: each
`SendRequest` is a task in the lookup's nursery (α in flight is the
Lookup's rule), answers and failures are fed back, and the Lookup's own
deadlines (slow after 2 s, timeout 5 s) are ticked with `trio.current_time`.
Timers: bucket refresh, liveness checks (PING of a full bucket's oldest
peer), re-providing (`ProvideSchedule`) and provider-record expiry.

Bounds against a hostile peer: the message caps of `messages.py` (4 MiB
frames, 200 peers per list...), a per-peer token bucket on requests, at most
`MAX_STREAMS_PER_PEER` kad streams of one peer served at once, an idle
timeout per stream, and a peer that sends a malformed message is dropped:
removed from the table, its connection closed, ignored for `ban_time`.

Deliberately not here: the node (p2p/net wires this in), value records,
reputation and persistence of the table.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Literal
from weakref import WeakKeyDictionary

import trio

from shoal.p2p.errors import P2PError
from shoal.p2p.libp2p.connection import Libp2pConnection, YamuxStream
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.libp2p.identify import (
    IDENTIFY_PROTOCOL, decode_multiaddr, encode_multiaddr, identify,
)
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Multiaddr

from . import ALPHA, BETA, K, PROTOCOL_ID
from .keys import kad_key
from .messages import (
    DHTMessageError, FrameReader, Message, MessageType, PeerInfo, frame,
)
from .providers import PROVIDER_EXPIRY, PROVIDER_REPUBLISH, ProvideSchedule, ProviderStore
from .query import REQUEST_TIMEOUT, SLOW_AFTER, Done, Lookup, SendRequest
from .routing_table import REFRESH_INTERVAL, RoutingTable

__all__ = ["DHTService", "DHTConfig", "Mode", "ProviderInfo"]

log = logging.getLogger("shoal.dht")

Mode = Literal["server", "client"]
Dialer = Callable[[Multiaddr], Awaitable[object]]
"""Dials a /p2p/-pinned address; the connection must end up in the host's `connections`
(the node passes its own dial, which applies its allowlist, swarm key and admission)."""

MAX_STREAMS_PER_PEER = 8
"""Kad streams of one peer served at once (more are reset at once)."""
MAX_KNOWN_PEERS = 10_000
"""Peers whose addresses we remember (LRU): what a lookup can dial."""
MAX_DIAL_ADDRS = 4
"""Addresses of one peer tried per dial (a peer cannot make us dial its whole list)."""

_NET_ERRORS = (P2PError, OSError, trio.TooSlowError, trio.BrokenResourceError,
               trio.ClosedResourceError)


@dataclass(frozen=True)
class DHTConfig:
    """The DHT's parameters (defaults: libp2p's; tests scale the times down)."""

    k: int = K
    alpha: int = ALPHA
    beta: int = BETA
    request_timeout: float = REQUEST_TIMEOUT
    slow_after: float = SLOW_AFTER
    dial_timeout: float = 5.0
    refresh_interval: float = REFRESH_INTERVAL
    provider_expiry: float = PROVIDER_EXPIRY
    republish: float = PROVIDER_REPUBLISH
    stream_idle_timeout: float = 60.0
    rate: float = 20.0  # requests per second one peer may send us, sustained
    burst: float = 100.0  # and in a burst
    ban_time: float = 600.0
    idle_close: float = 60.0  # a connection the DHT dialled is closed after this long unused by it
    exempt_private: bool = True  # diversity limit off for loopback/LAN addresses


@dataclass(frozen=True)
class ProviderInfo:
    """A provider found in the DHT: its peer id and the addresses it can be dialled at."""

    peer_id: PeerId
    addrs: tuple[Multiaddr, ...]

    def as_json(self) -> dict[str, object]:
        return {"peer_id": str(self.peer_id), "addrs": [str(a) for a in self.addrs]}


class _TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _text_addrs(raw: Iterable[bytes]) -> list[Multiaddr]:
    """The TCP multiaddrs we can dial among binary ones (others skipped), without /p2p/."""
    out: list[Multiaddr] = []
    for item in raw:
        try:
            addr = Multiaddr.parse(decode_multiaddr(item)).with_peer(None)
        except P2PError:
            continue
        if addr not in out:
            out.append(addr)
    return out


async def _read_message(stream: YamuxStream, reader: FrameReader) -> Message | None:
    """The next message on `stream` (None at a clean end of stream)."""
    while True:
        msg = reader.next_message()
        if msg is not None:
            return msg
        data = await stream.receive_some(65536)
        if not data:
            if reader.buffered:
                raise DHTMessageError("stream ended inside a kad frame")
            return None
        reader.feed(data)


class DHTService:
    """Kademlia on a libp2p host (server or client mode)."""

    def __init__(self, host: Libp2pHost, *, mode: Mode = "server",
                 config: DHTConfig | None = None, dial: Dialer | None = None) -> None:
        if mode not in ("server", "client"):
            raise ValueError("DHT mode is 'server' or 'client'")
        self.host = host
        self._dial: Dialer = dial or self._host_dial
        self.mode: Mode = mode
        self.config = config or DHTConfig()
        self.local_id = host.peer_id.to_bytes()
        now = trio.current_time()
        self.table = RoutingTable(self.local_id, k=self.config.k, now=now,
                                  refresh_interval=self.config.refresh_interval,
                                  exempt_private=self.config.exempt_private)
        self.providers = ProviderStore(expiry=self.config.provider_expiry)
        self.schedule = ProvideSchedule(republish=self.config.republish)
        self._addrs: OrderedDict[bytes, tuple[Multiaddr, ...]] = OrderedDict()
        self._buckets: dict[bytes, _TokenBucket] = {}
        self._serving: dict[bytes, int] = {}
        self._banned: dict[bytes, float] = {}
        self._dialing: dict[bytes, trio.Event] = {}
        self._identifying: WeakKeyDictionary[Libp2pConnection, trio.Event] = WeakKeyDictionary()
        self._dialled: WeakKeyDictionary[Libp2pConnection, float] = WeakKeyDictionary()  # -> last use
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self.ready = trio.Event()
        self.dropped = 0  # peers dropped for protocol violations (observable in tests)

    # -- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve (server mode), feed the table from connections and run the timers until cancelled."""
        previous: Callable[[Libp2pConnection], None] | None = self.host.on_connection

        def on_connection(conn: Libp2pConnection) -> None:
            if previous is not None:
                previous(conn)
            self._spawn_identify(conn)

        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.host.on_connection = on_connection
                if self.mode == "server":
                    self.host.handlers[PROTOCOL_ID] = self._handle
                for conn in list(self.host.connections):
                    self._spawn_identify(conn)
                nursery.start_soon(self._timers)
                self.ready.set()
                task_status.started()
        finally:
            self._nursery = None
            if self.host.on_connection is on_connection:
                self.host.on_connection = previous
            if self.host.handlers.get(PROTOCOL_ID) == self._handle:
                del self.host.handlers[PROTOCOL_ID]

    async def bootstrap(self, addrs: Iterable[Multiaddr | str]) -> int:
        """Dial `addrs`, add those that serve the DHT, then look ourselves up; peers in the table."""
        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(self._bootstrap_one, addr)
        await self.lookup_peers(self.local_id)
        return len(self.table)

    async def _bootstrap_one(self, addr: Multiaddr | str) -> None:
        if isinstance(addr, str):
            addr = Multiaddr.parse(addr)
        try:
            with trio.fail_after(self.config.dial_timeout + self.config.request_timeout):
                if addr.peer_id is None:
                    conn = await self.host.dial(addr)
                else:
                    conn = await self.connect(addr.peer_id.to_bytes(), [addr.with_peer(None)])
                await self._identify(conn)
        except _NET_ERRORS as exc:
            log.info("dht: bootstrap peer %s unusable: %s", addr, exc)

    # -- the routing table, fed by connections -------------------------------------

    def _spawn_identify(self, conn: Libp2pConnection) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._identify_quietly, conn)

    async def _identify_quietly(self, conn: Libp2pConnection) -> None:
        try:
            with trio.fail_after(self.config.request_timeout * 2):
                await self._identify(conn)
        except _NET_ERRORS as exc:
            log.debug("dht: identify of %s failed: %s", conn.remote_peer, exc)

    async def _identify(self, conn: Libp2pConnection) -> None:
        """Identify `conn`'s peer once (js-libp2p resets a second concurrent identify stream)."""
        running = self._identifying.get(conn)
        if running is not None:
            await running.wait()
            return
        done = self._identifying[conn] = trio.Event()
        try:
            await self._identify_once(conn)
        finally:
            done.set()

    async def _identify_once(self, conn: Libp2pConnection) -> None:
        info = await identify(await conn.open_stream(IDENTIFY_PROTOCOL), conn.remote_peer,
                              timeout=self.config.request_timeout)
        peer = conn.remote_peer.to_bytes()
        addrs = _text_addrs(info.listen_addrs)
        if addrs:
            self._remember(peer, addrs, authoritative=True)
        if PROTOCOL_ID in info.protocols:
            self._offer(peer, conn)

    def _offer(self, peer: bytes, conn: Libp2pConnection | None) -> None:
        """A peer that serves the DHT: into the table (if not banned), checks asked as needed."""
        if self._is_banned(peer):
            return
        ip = conn.remote_addr[0] if conn is not None and conn.remote_addr else None
        self.table.add(peer, trio.current_time(), ip=ip, server=True)
        self._wake.set()

    def _remember(self, peer: bytes, addrs: Iterable[Multiaddr], *, authoritative: bool = False) -> None:
        addrs = tuple(addrs)[: 32]
        if not addrs:
            return
        if peer in self._addrs:
            if not authoritative and self._addrs[peer]:
                self._addrs.move_to_end(peer)
                return
            self._addrs.move_to_end(peer)
        self._addrs[peer] = addrs
        while len(self._addrs) > MAX_KNOWN_PEERS:
            self._addrs.popitem(last=False)

    def addrs_of(self, peer: bytes) -> tuple[Multiaddr, ...]:
        """Addresses known for `peer` (identify's, else those a DHT answer gave)."""
        return self._addrs.get(peer, ())

    def _peer_info(self, peer: bytes) -> PeerInfo:
        return PeerInfo(peer, tuple(encode_multiaddr(a) for a in self.addrs_of(peer)))

    def self_info(self) -> PeerInfo:
        """How we name ourselves as a provider: our id and listen addresses."""
        return PeerInfo(self.local_id, tuple(encode_multiaddr(a) for a in self.host.listen_addrs))

    def _is_banned(self, peer: bytes) -> bool:
        until = self._banned.get(peer)
        if until is None:
            return False
        if until <= trio.current_time():
            del self._banned[peer]
            return False
        return True

    def drop(self, peer: bytes, reason: str) -> None:
        """A peer broke the protocol: out of the table, its connections closed, ignored a while."""
        log.info("dht: dropping %s: %s", PeerId.from_bytes(peer), reason)
        self.dropped += 1
        self._banned[peer] = trio.current_time() + self.config.ban_time
        self.table.remove(peer, trio.current_time())
        self._addrs.pop(peer, None)
        for conn in list(self.host.connections):
            if conn.remote_peer.to_bytes() == peer and self._nursery is not None:
                self._nursery.start_soon(conn.aclose)

    # -- server side ---------------------------------------------------------------------

    async def _handle(self, stream: YamuxStream) -> None:
        """An inbound `/ipfs/kad/1.0.0` stream: answer its requests one by one."""
        peer = stream.conn.remote_peer.to_bytes()
        if self._is_banned(peer) or self._serving.get(peer, 0) >= MAX_STREAMS_PER_PEER:
            stream.reset()
            return
        self._serving[peer] = self._serving.get(peer, 0) + 1
        try:
            reader = FrameReader()
            while True:
                with trio.move_on_after(self.config.stream_idle_timeout):
                    try:
                        request = await _read_message(stream, reader)
                    except DHTMessageError as exc:
                        self.drop(peer, str(exc))
                        raise
                    if request is None:
                        return
                    bucket = self._buckets.get(peer)
                    now = trio.current_time()
                    if bucket is None:
                        bucket = self._buckets[peer] = _TokenBucket(self.config.rate, self.config.burst, now)
                        if len(self._buckets) > MAX_KNOWN_PEERS:
                            self._buckets.pop(next(iter(self._buckets)))
                    if not bucket.take(now):
                        log.info("dht: %s over its request rate", stream.conn.remote_peer)
                        stream.reset()
                        return
                    self.table.seen(peer, now)
                    response = self.answer(peer, request, now)
                    if response is not None:
                        await stream.send_all(frame(response))
                    continue
                return  # idle
        finally:
            self._serving[peer] -= 1
            if not self._serving[peer]:
                del self._serving[peer]

    def answer(self, sender: bytes, request: Message, now: float) -> Message | None:
        """The response to one request from `sender` (None: nothing to send back)."""
        kind = request.type
        if kind is MessageType.PING:
            return Message(MessageType.PING)
        if kind is MessageType.ADD_PROVIDER:
            for info in request.provider_peers:
                if info.id != sender:  # the spec: a peer may only announce itself
                    continue
                addrs = info.addrs or tuple(encode_multiaddr(a) for a in self.addrs_of(sender))
                self.providers.add(request.key, sender, addrs, now)
            return None
        closer = self._closer(request.key, exclude=sender)
        if kind is MessageType.GET_PROVIDERS:
            found = tuple(
                PeerInfo(r.peer_id, r.addrs) for r in self.providers.get(request.key, now)
            )
            return Message(kind, key=request.key, closer_peers=closer, provider_peers=found)
        if kind is MessageType.FIND_NODE:
            return Message(kind, key=request.key, closer_peers=closer)
        # GET_VALUE / PUT_VALUE: no value records here; an empty answer (with closer peers).
        return Message(kind, key=request.key, closer_peers=closer if kind is MessageType.GET_VALUE else ())

    def _closer(self, key: bytes, *, exclude: bytes) -> tuple[PeerInfo, ...]:
        out = []
        target = kad_key(key)
        if key == self.local_id and self.mode == "server":
            out.append(self.self_info())
        for entry in self.table.closest(target, self.config.k + 1):
            if entry.peer_id == exclude or not self.addrs_of(entry.peer_id):
                continue  # as go: a peer without addresses is of no use to the asker
            out.append(self._peer_info(entry.peer_id))
        return tuple(out[: self.config.k])

    # -- client side ------------------------------------------------------------------------

    def _connection(self, peer: bytes) -> Libp2pConnection | None:
        for conn in self.host.connections:
            if not conn.closed and conn.remote_peer.to_bytes() == peer:
                return conn
        return None

    async def connect(self, peer: bytes, addrs: Iterable[Multiaddr] = ()) -> Libp2pConnection:
        """A connection to `peer`: an open one, else a dial of its known addresses (deduplicated)."""
        while True:
            conn = self._connection(peer)
            if conn is not None:
                return conn
            pending = self._dialing.get(peer)
            if pending is None:
                break
            await pending.wait()
        candidates = list(addrs) + [a for a in self.addrs_of(peer) if a not in addrs]
        if not candidates:
            raise P2PError("no address known for this peer")
        pid = PeerId.from_bytes(peer)
        done = self._dialing[peer] = trio.Event()
        try:
            last: BaseException | None = None
            for addr in candidates[:MAX_DIAL_ADDRS]:
                try:
                    with trio.fail_after(self.config.dial_timeout):
                        await self._dial(addr.with_peer(pid))
                except _NET_ERRORS as exc:
                    last = exc  # the node's dial may fail *and* keep the connection (an IPFS peer)
                conn = self._connection(peer)
                if conn is not None:
                    self._dialled[conn] = trio.current_time()
                    return conn
            raise P2PError(f"cannot dial {pid}: {last}")
        finally:
            del self._dialing[peer]
            done.set()

    async def _host_dial(self, addr: Multiaddr) -> object:
        return await self.host.dial(addr)

    async def request(self, peer: PeerInfo, message: Message, *, expect_answer: bool = True) -> Message | None:
        """Send one request to `peer` on a fresh kad stream; its answer (None when none is expected).

        Raises on any failure (dial, negotiation, timeout, malformed answer);
        a malformed answer also drops the peer.
        """
        conn = await self.connect(peer.id, _text_addrs(peer.addrs))
        if conn in self._dialled:
            self._dialled[conn] = trio.current_time()
        with trio.fail_after(self.config.request_timeout):
            stream = await conn.open_stream(PROTOCOL_ID, timeout=self.config.request_timeout)
            try:
                await stream.send_all(frame(message))
                if not expect_answer:
                    await stream.send_eof()
                    return None
                try:
                    answer = await _read_message(stream, FrameReader())
                except DHTMessageError as exc:
                    self.drop(peer.id, str(exc))
                    raise
                if answer is None:
                    raise P2PError("kad stream closed without an answer")
                return answer
            finally:
                await stream.aclose()

    async def ping(self, peer: bytes) -> bool:
        """A kad PING: is `peer` still answering the DHT?"""
        try:
            answer = await self.request(self._peer_info(peer), Message(MessageType.PING))
        except _NET_ERRORS:
            return False
        return answer is not None and answer.type is MessageType.PING

    # -- lookups ----------------------------------------------------------------------------

    def _seeds(self, key: bytes) -> list[PeerInfo]:
        return [self._peer_info(e.peer_id) for e in self.table.closest(kad_key(key), self.config.k)]

    async def _lookup(self, kind: MessageType, key: bytes, *, followup: bool = False,
                      want_providers: int = K) -> Done:
        lookup = Lookup(self.local_id, kind, key, self._seeds(key), alpha=self.config.alpha,
                        beta=self.config.beta, k=self.config.k,
                        request_timeout=self.config.request_timeout,
                        want_providers=want_providers, followup=followup,
                        slow_after=self.config.slow_after)
        send, receive = trio.open_memory_channel[tuple[bytes, Message | None]](1000)

        async def ask(event: SendRequest) -> None:
            try:
                answer = await self.request(event.peer, event.message)
            except _NET_ERRORS as exc:
                log.debug("dht: %s did not answer: %s", PeerId.from_bytes(event.peer.id), exc)
                answer = None
            if answer is not None:
                conn = self._connection(event.peer.id)
                self._offer(event.peer.id, conn)  # it answered kad: it is a server
                for info in (*answer.closer_peers, *answer.provider_peers):
                    if info.id != self.local_id:
                        self._remember(info.id, _text_addrs(info.addrs))
            else:
                self.table.remove(event.peer.id, trio.current_time())
            await send.send((event.peer.id, answer))

        async with trio.open_nursery() as nursery:
            events = lookup.start(trio.current_time())
            while True:
                for event in events:
                    if isinstance(event, SendRequest):
                        nursery.start_soon(ask, event)
                if lookup.done is not None:
                    break
                deadline = lookup.next_deadline()
                result: tuple[bytes, Message | None] | None = None
                with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 1):
                    result = await receive.receive()
                now = trio.current_time()
                if result is None:
                    events = lookup.on_tick(now)
                elif result[1] is None:
                    events = lookup.on_failure(result[0], now)
                else:
                    events = lookup.on_response(result[0], result[1], now)
            nursery.cancel_scope.cancel()
        self.table.mark_refreshed(lookup.target, trio.current_time())
        return lookup.done

    async def lookup_peers(self, key: bytes) -> list[PeerInfo]:
        """FIND_NODE: the k closest DHT servers to `key` that answered, closest first."""
        done = await self._lookup(MessageType.FIND_NODE, key)
        return list(done.closest)

    async def find_peer(self, peer_id: PeerId) -> ProviderInfo | None:
        """The addresses of `peer_id`: connected or known, else a FIND_NODE lookup for it."""
        peer = peer_id.to_bytes()
        if peer == self.local_id:
            return ProviderInfo(peer_id, tuple(self.host.listen_addrs))
        known = self.addrs_of(peer)
        if known and self._connection(peer) is not None:
            return ProviderInfo(peer_id, known)
        await self._lookup(MessageType.FIND_NODE, peer)
        found = self.addrs_of(peer)
        return ProviderInfo(peer_id, found) if found else None

    async def provide(self, multihash: bytes) -> int:
        """Announce that we hold `multihash` to the k closest peers; how many accepted the message.

        The multihash is also scheduled for re-providing every `republish`.
        """
        now = trio.current_time()
        self.schedule.provide(multihash, now)
        # Take this announce off the schedule (it is made now); others due go to the timer.
        for other in self.schedule.due(now):
            if other != multihash:
                self.schedule.stop(other)
                self.schedule.provide(other, now)
        self._wake.set()
        return await self._announce(multihash)

    async def _announce(self, multihash: bytes) -> int:
        me = self.self_info()
        self.providers.add(multihash, self.local_id, me.addrs, trio.current_time())
        done = await self._lookup(MessageType.FIND_NODE, multihash, followup=True)
        message = Message(MessageType.ADD_PROVIDER, key=multihash, provider_peers=(me,))
        told = 0

        async def tell(peer: PeerInfo) -> None:
            nonlocal told
            try:
                await self.request(peer, message, expect_answer=False)
                told += 1
            except _NET_ERRORS as exc:
                log.debug("dht: ADD_PROVIDER to %s failed: %s", PeerId.from_bytes(peer.id), exc)

        async with trio.open_nursery() as nursery:
            for peer in done.closest:
                nursery.start_soon(tell, peer)
        return told

    def stop_providing(self, multihash: bytes) -> None:
        """No more re-announces (records elsewhere expire on their own)."""
        self.schedule.stop(multihash)

    async def find_providers(self, multihash: bytes, count: int = K) -> list[ProviderInfo]:
        """Up to `count` providers of `multihash` (ourselves excluded) with dialable addresses."""
        now = trio.current_time()
        found: dict[bytes, tuple[Multiaddr, ...]] = {}
        for rec in self.providers.get(multihash, now):
            if rec.peer_id != self.local_id:
                found[rec.peer_id] = tuple(_text_addrs(rec.addrs)) or self.addrs_of(rec.peer_id)
        if len(found) < count:
            done = await self._lookup(MessageType.GET_PROVIDERS, multihash,
                                      want_providers=count + 1)
            for info in done.providers:
                if info.id != self.local_id and info.id not in found:
                    found[info.id] = tuple(_text_addrs(info.addrs)) or self.addrs_of(info.id)
        out = []
        for peer, addrs in found.items():
            try:
                out.append(ProviderInfo(PeerId.from_bytes(peer), addrs))
            except (P2PError, ValueError):
                continue  # not a peer id we can use
        return out[:count]

    def table_json(self) -> list[dict[str, object]]:
        """The routing table for `shoal routing table --json`: one entry per peer."""
        out: list[dict[str, object]] = []
        for entry in self.table.peers():
            out.append({
                "peer_id": str(PeerId.from_bytes(entry.peer_id)),
                "bucket": self.table.cpl(entry.key),
                "addrs": [str(a) for a in self.addrs_of(entry.peer_id)],
                "last_seen_ago": round(trio.current_time() - entry.last_seen, 3),
            })
        return out

    # -- timers -----------------------------------------------------------------------------

    async def _timers(self) -> None:
        """Liveness checks, bucket refresh, re-providing and record expiry, each when due."""
        assert self._nursery is not None
        nursery = self._nursery
        refreshing = False

        async def refresh(cpls: list[int]) -> None:
            nonlocal refreshing
            try:
                for cpl in cpls:
                    await self.lookup_peers(self.table.refresh_id(cpl, os.urandom))
            finally:
                refreshing = False

        async def check(peer: bytes) -> None:
            alive = await self.ping(peer)
            self.table.liveness_result(peer, alive, trio.current_time())

        async def republish(mh: bytes) -> None:
            try:
                await self._announce(mh)
            except _NET_ERRORS as exc:
                log.info("dht: re-provide failed: %s", exc)

        next_expire = trio.current_time()
        while True:
            now = trio.current_time()
            for peer in self.table.liveness_checks():
                nursery.start_soon(check, peer)
            if not refreshing and len(self.table):
                stale = self.table.stale_buckets(now)
                if stale:
                    refreshing = True
                    nursery.start_soon(refresh, stale)
            for mh in self.schedule.due(now):
                nursery.start_soon(republish, mh)
            if now >= next_expire:
                self.providers.expire(now)
                next_expire = now + min(self.config.provider_expiry, 600.0) / 4
            for conn, used in list(self._dialled.items()):
                if conn.closed:
                    del self._dialled[conn]
                elif now - used >= self.config.idle_close:
                    # Ours, and idle: lookups touch many peers, and the connections
                    # they open would otherwise pile up (go trims with its connmgr).
                    del self._dialled[conn]
                    nursery.start_soon(conn.aclose)
            wake = min(next_expire, now + max(1.0, self.config.refresh_interval / 4),
                       now + self.config.idle_close / 2)
            due = self.schedule.next_due()
            if due is not None:
                wake = min(wake, due)
            self._wake = trio.Event()
            with trio.move_on_at(max(wake, now + 0.05)):
                await self._wake.wait()
