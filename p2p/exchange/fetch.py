"""Fetch a DAG from the swarm: the trio driver around the planner
(`shoal.p2p.exchange.planner.FetchPlanner`).

1. Ask connected peers who holds the root (WANT_HAVE), in parallel.
2. Walk the DAG from the root. Blocks already stored are read locally, so
   an interrupted fetch resumes where it stopped; missing ones go to the
   planner, which spreads them over the holders and retries failures
   elsewhere.
3. Every block is hash-checked (`Blockstore.put` verifies) before it is
   stored or its links are followed. A holder that sends a block that does
   not match is dropped from the fetch and its reputation marked.
4. HTTP trustless gateways given to the fetch (`gateways=`) are holders
   like peers (shoal.p2p.exchange.gateway_client): the planner spreads
   blocks over peers and gateways alike, a gateway answering wrong bytes is
   dropped for the rest of the fetch and reported in the result.
5. When no Shoal peer has the root, connected libp2p peers that speak
   Bitswap (IPFS nodes: Helia, kubo) are holders instead (`BitswapPeer`):
   each block is one Bitswap want, verified against its CID by the Bitswap
   session and again by the store.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, TYPE_CHECKING, Awaitable, Callable, Sequence, Union, cast

import trio

from shoal.store.ipld.cid import CID, RAW, verify_block
from shoal.store.errors import BlockNotFound, HashMismatch, StoreError
from shoal.store.dag.exporter import iter_links, links_of
from shoal.store.dag.walk import DagWalk, cid_key

from shoal.p2p.wire import limits as L
from shoal.p2p.net.connection import RequestFailed
from shoal.p2p.errors import NoPeers, P2PError
from shoal.p2p.exchange.gateway_client import GatewayClient, open_gateway_client
from shoal.p2p.exchange.gateway_source import Gateway
from shoal.p2p.exchange.planner import FetchPlanner
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import Block, BlockMissing, Have, WantBlock, WantHave

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

log = logging.getLogger("shoal.fetch")

FIND_TIMEOUT_S = 5.0
# Verified puts run in worker threads, this many at once: a durable put waits
# on the disk (fsync or a shared syncfs round), so one at a time left the
# fetch disk-latency bound (bench/transfer.py: ~137 MB/s serial puts against
# ~590 MB/s with four threads).
STORE_CONCURRENCY = 6
# The fetch's block bytes in memory: received blocks waiting for (or in) a
# put, plus what every request still running may bring (a block of at most
# `L.MAX_BLOCK_BYTES` each). A new request goes out only if it fits, so
# memory stays under this bound whatever the number of holders, their
# in-flight caps, or a slow disk (before: only new requests stopped at the
# cap, while those in flight kept adding to an unbounded queue).
STORE_QUEUE_BYTES = 96 * 1024 * 1024
# Events waiting for the loop. Every sender is a request or store task, whose
# number the byte budget bounds; a full channel makes them wait (backpressure).
EVENT_BUFFER = 64
# Raw leaves checked for presence per worker-thread hop in a fetch's local walk.
LEAF_BATCH = 512
# A block's place in the depth-first walk (the planner's rank) records at
# most this many levels: deeper blocks share their ancestor's place at this
# depth and go in the order they were met. Real DAGs are a few levels deep;
# a hostile chain of a million one-link nodes must not cost tuples of a
# million ints (and as many comparisons) per block.
MAX_PLACE_DEPTH = 32

@dataclass(frozen=True)
class BitswapPeer:
    """A libp2p peer asked over Bitswap (an IPFS node), as a holder of the planner."""

    peer: PeerId

    def __str__(self) -> str:
        return f"bitswap peer {self.peer}"


Source = Union[PeerId, Gateway, BitswapPeer]
"""A holder the planner spreads requests over: a connected peer, an HTTP gateway, a Bitswap peer."""
_Event = tuple[str, Source, bytes, "bytes | None"]
"""(kind, holder, block key, data): what a request task reports to the loop."""


class FetchFailed(P2PError):
    """Some blocks could not be had from any holder."""


@dataclass
class FetchResult:
    cid: CID
    fetched_blocks: int = 0
    fetched_bytes: int = 0
    local_blocks: int = 0
    holders: int = 0
    gateways_dropped: dict[str, str] = field(default_factory=dict)
    """Gateway URL -> why it was dropped (it answered bytes that are not the block)."""


async def find_holders(node: "Node", root: CID, timeout: float = FIND_TIMEOUT_S) -> list[PeerId]:
    """Connected peers that answer HAVE for `root`, asked all at once."""
    found: list[PeerId] = []
    raw = bytes(root)

    async def ask(peer: PeerId) -> None:
        conn = node.connection_to(peer)
        if conn is None:
            return
        try:
            replies = await conn.request(lambda rid: WantHave(rid, (raw,)), timeout=timeout)
        except RequestFailed:
            return
        if any(isinstance(r, Have) and raw in r.cids for r in replies):
            found.append(peer)

    async with trio.open_nursery() as nursery:
        for peer in node.connected_peers():
            nursery.start_soon(ask, peer)
    return found


async def fetch_dag(
    node: "Node",
    root: CID,
    *,
    progress: Callable[[int], None] | None = None,
    holders: list[PeerId] | None = None,
    request_timeout: float = 20.0,
    max_inflight_per_peer: int = 16,
    on_stored: Callable[[CID, bytes], Awaitable[None]] | None = None,
    on_verified: Callable[[CID, bytes], None] | None = None,
    on_wanted: Callable[[CID], None] | None = None,
    guard: bool = True,
    check_local: bool = False,
    gateways: Sequence[Gateway] = (),
    skip_file_leaves: bool = False,
) -> FetchResult:
    """Make the whole DAG under `root` local, verified. Raises NoPeers / FetchFailed.

    `await on_stored(cid, data)` runs for each fetched block once it is
    hash-checked and stored (not for blocks that were already local); the
    fetch waits for it, so it can pace the fetch (it must not wait long).
    `on_verified(cid, data)` runs in the store thread once the block's hash
    is checked and before it is written (p2p/exchange/handoff.py hands it to an
    export there); it may block that thread briefly, which paces the fetch.
    `on_wanted(cid)` runs on the event loop for each block the fetch will
    get from the swarm, before it is requested. `guard=False` only for a
    caller that already holds `node.store_guard` shared. `check_local`:
    re-hash local raw leaves too (normally only inner nodes are read), so a
    copy known to be damaged is healed: a corrupt block is moved to the
    repo's quarantine and fetched again. `gateways`: HTTP trustless gateways
    asked for blocks beside the peers (each one a holder with the same
    in-flight cap); with gateways, no connected peer is not an error.
    `skip_file_leaves`: the raw leaves of multi-block files are left out
    (the fetch and its end check cover the rest: directories, file inner
    nodes, files of one raw block); the laned get has lanes fetch them
    straight into the export (shoal.p2p.exchange.laned).
    """
    fetch = _Fetch(node, root, progress, request_timeout, max_inflight_per_peer, on_stored)
    fetch.skip_file_leaves = skip_file_leaves
    fetch.on_verified = on_verified
    fetch.on_wanted = on_wanted
    fetch.check_local = check_local
    fetch.gateways = list(dict.fromkeys(gateways))
    return await fetch.run(holders, guard=guard)


def child_place(place: tuple[int, ...], index: int) -> tuple[int, ...]:
    """The place in the depth-first walk of link `index` of the block at `place`
    (at most MAX_PLACE_DEPTH levels: below that, the parent's place)."""
    return place + (index,) if len(place) < MAX_PLACE_DEPTH else place


def missing_blocks(store: Any, root: CID, limit: int = 16, *, file_leaves: bool = True) -> list[CID]:
    """Blocks of the DAG under `root` that are absent (or, for inner nodes,
    corrupt), up to `limit`. Raw leaves are checked for presence only (every
    fetched one was hash-checked before it was stored); inner nodes are read,
    verified, to follow their links. `file_leaves=False`: the raw leaves of
    dag-pb files are not looked at. Runs in a worker thread."""
    missing: list[CID] = []
    walk = DagWalk([root])
    for cid in walk:
        if len(missing) >= limit:
            break
        if cid.codec.name == RAW:
            if not store.has(cid):
                missing.append(cid)
            continue
        try:
            data = store.get(cid)
        except (BlockNotFound, HashMismatch):
            missing.append(cid)
            continue
        walk.push(_links(cid, data, skip_file_leaves=not file_leaves))
    return missing


def _links(cid: CID, data: bytes, *, skip_file_leaves: bool) -> list[CID]:
    """The links of a verified block to follow: all, or all but a file node's raw leaves."""
    if not skip_file_leaves:
        return iter_links(cid, data)
    links, is_file = links_of(cid, data)
    return [c for c in links if c.codec.name != RAW] if is_file else links


def _read_if_present(store: Any, cid: CID) -> bytes | None:
    """Worker thread: the verified block, or None if absent (HashMismatch if corrupt)."""
    if not store.has(cid):
        return None
    try:
        data: bytes = store.get(cid)
    except BlockNotFound:
        return None
    return data


class PlannedFetch(abc.ABC):
    """What every fetch shares: the planner loop over holders, block requests,
    hash-checked storing and the reputation bookkeeping.

    Subclasses say which CID a key names (`_cid_for`) and what to do with a
    verified block (`_on_block`): follow all its links, or only those that
    cover a byte range.
    """

    def __init__(self, node: "Node", request_timeout: float, max_inflight_per_peer: int,
                 result: FetchResult | Any) -> None:
        self.node = node
        self.store = node.repo.blockstore
        self.result = result
        self.planner = FetchPlanner(max_inflight_per_peer=max_inflight_per_peer, request_timeout=request_timeout)
        self.events_send, self.events_recv = trio.open_memory_channel[_Event](EVENT_BUFFER)
        self._store_limiter = trio.CapacityLimiter(STORE_CONCURRENCY)
        self._store_bytes = 0  # received block bytes not yet stored or rejected
        self._requests_running = 0  # request tasks that have not reported yet
        self._store_error: StoreError | OSError | None = None
        self.on_verified: Callable[[CID, bytes], None] | None = None
        self.on_wanted: Callable[[CID], None] | None = None
        self.gateways: list[Gateway] = []
        self.gateways_dropped: dict[str, str] = {}
        self._gateway_notes: dict[Gateway, str] = {}  # the last failure of each gateway, for the error
        self._gateway_client: GatewayClient | None = None
        self._max_inflight = max_inflight_per_peer
        self.bitswap_holders: list[BitswapPeer] = []

    @abc.abstractmethod
    def _cid_for(self, key: bytes) -> CID:
        """The CID a requested key stands for."""

    @abc.abstractmethod
    async def _on_block(self, key: bytes, cid: CID, data: bytes) -> None:
        """A block arrived and is stored, verified: follow what it links to."""

    async def _drive(self, root: CID, holders: list[PeerId] | None) -> list[PeerId]:
        """Fetch everything the planner wants from `holders` (found if None)
        and from `self.gateways`."""
        if holders is None:
            holders = await find_holders(self.node, root)
            routing = self.node.routing
            if not holders and routing is not None and await routing.connect_providers(root):
                # No connected peer had it; the DHT's providers are connected now.
                holders = await find_holders(self.node, root)
        if not holders:  # no Shoal peer has it: ask the IPFS nodes we are connected to
            self.bitswap_holders = [BitswapPeer(p) for p in await self.node.bitswap_peers()]
        if not holders and not self.gateways and not self.bitswap_holders:
            raise NoPeers(f"no connected peer has {root}")
        for peer in holders:
            self.planner.add_holder(peer)
        for bitswap_peer in self.bitswap_holders:
            self.planner.add_holder(bitswap_peer)
        for gateway in self.gateways:
            self.planner.add_holder(gateway)
        failure: Exception | None = None
        async with contextlib.AsyncExitStack() as stack:
            if self.gateways:
                self._gateway_client = await stack.enter_async_context(
                    open_gateway_client(len(self.gateways), self._max_inflight))
            async with trio.open_nursery() as nursery:
                # Caught inside the nursery and re-raised outside it: from the
                # body it would leave as an ExceptionGroup, which the API's
                # error mapping does not know (the user got an HTTP 500).
                try:
                    await self._loop(nursery)
                except (P2PError, StoreError, OSError) as exc:
                    failure = exc
                nursery.cancel_scope.cancel()
            self._gateway_client = None
        if failure is not None:
            raise failure
        if self.planner.failed:
            raise FetchFailed(self._failure_text(root))
        return holders

    def _failure_text(self, root: CID) -> str:
        """One line: how many blocks no source gave, and what the gateways did."""
        where = "any peer or gateway" if self.gateways else "any peer"
        text = f"could not fetch {len(self.planner.failed)} blocks of {root} from {where}"
        notes = [f"{url} dropped: {why}" for url, why in self.gateways_dropped.items()]
        notes += [why for gw, why in self._gateway_notes.items() if gw.url not in self.gateways_dropped]
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def _request_room(self) -> int:
        """How many more requests fit in the memory budget (`STORE_QUEUE_BYTES`)."""
        free = STORE_QUEUE_BYTES - self._store_bytes - self._requests_running * L.MAX_BLOCK_BYTES
        return max(0, free // L.MAX_BLOCK_BYTES)

    async def _loop(self, nursery: trio.Nursery) -> None:
        while not self.planner.finished:
            room = self._request_room()
            if room:
                for peer, key in self.planner.next_requests(trio.current_time(), limit=room):
                    self._requests_running += 1
                    nursery.start_soon(self._request, cast(Source, peer), cast(bytes, key))
            deadline = self.planner.next_deadline()
            # Only the wait is bounded. Handling an event (a local read of an
            # inner node, the on_stored hook) must never be cut short by a
            # request's deadline: a walk dropped halfway leaves blocks marked
            # seen that nobody will ever request.
            event: _Event | None = None
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                event = await self.events_recv.receive()
            if event is None:
                self.planner.expire(trio.current_time())
                continue
            await self._handle(event, nursery)

    async def _request(self, peer: Source, key: bytes) -> None:
        try:
            event = await self._ask(peer, key)
        finally:
            self._requests_running -= 1
        if event[3] is not None:
            # The block moves to the store queue in the same step, so the
            # budget never loses sight of it.
            self._store_bytes += len(event[3])
        await self.events_send.send(event)

    async def _ask(self, peer: Source, key: bytes) -> _Event:
        """One WANT_BLOCK to `peer` (or GET to a gateway): what it came to, as an event for the loop."""
        if isinstance(peer, Gateway):
            return await self._ask_gateway(peer, key)
        if isinstance(peer, BitswapPeer):
            return await self._ask_bitswap(peer, key)
        conn = self.node.connection_to(peer)
        if conn is None:
            return ("gone", peer, key, None)
        try:
            replies = await conn.request(lambda rid: WantBlock(rid, (key,)), timeout=L.BLOCK_REQUEST_TIMEOUT_S)
        except RequestFailed as exc:
            return ("gone" if conn.closed else ("timeout" if exc.timed_out else "fail"), peer, key, None)
        for reply in replies:
            if isinstance(reply, Block) and reply.cid == key:
                return ("block", peer, key, reply.data)
            if isinstance(reply, BlockMissing):
                break
        return ("fail", peer, key, None)

    async def _ask_gateway(self, gateway: Gateway, key: bytes) -> _Event:
        """One block GET to `gateway`; its bytes come back only hash-checked
        (a mismatch is "lied", the gateway is dropped)."""
        assert self._gateway_client is not None  # set by _drive for as long as requests run
        kind, data, why = await self._gateway_client.fetch_block(gateway, self._cid_for(key))
        if kind == "block":
            return ("block", gateway, key, data)
        self._gateway_notes[gateway] = why
        if kind == "corrupt":
            return ("lied", gateway, key, None)
        return ("timeout" if kind == "timeout" else "fail", gateway, key, None)

    async def _ask_bitswap(self, holder: BitswapPeer, key: bytes) -> _Event:
        """One block over Bitswap from `holder`: the session verifies it against
        its CID (a forgery makes the peer "lied"); DONT_HAVE or silence is "fail"."""
        service = self.node.bitswap
        if service is None or not service.bitswap.has_peer(holder.peer):
            return ("gone", holder, key, None)
        result = await service.bitswap.fetch([key], [holder.peer])
        data = result.blocks.get(key)
        if data is not None:
            return ("block", holder, key, data)
        if holder.peer in result.bad_peers:
            return ("lied", holder, key, None)
        return ("fail", holder, key, None)

    def _drop_gateway(self, gateway: Gateway, why: str) -> None:
        if gateway.url not in self.gateways_dropped:
            log.warning("dropping %s for the rest of this fetch: %s", gateway, why)
            self.gateways_dropped[gateway.url] = why

    async def _handle(self, event: "_Event", nursery: trio.Nursery) -> None:
        kind, peer, key, data = event
        if kind == "gone":
            self.planner.on_peer_gone(peer)
            return
        if kind in ("fail", "timeout"):
            self.planner.on_failure(peer, key, timed_out=kind == "timeout")
            if kind == "timeout" and isinstance(peer, PeerId):
                self.node.peers.ensure(peer).reputation.timeouts += 1
            return
        if kind == "lied":
            if isinstance(peer, Gateway):
                self._drop_gateway(peer, self._gateway_notes.get(peer, "it sent wrong bytes"))
            else:
                log.warning("%s sent a block that does not match %s", peer, self._cid_for(key))
            self.planner.on_block(peer, key, valid=False)
            return
        assert data is not None
        if kind == "block":  # verify and store off the loop; "stored"/"corrupt" follows
            nursery.start_soon(self._store, peer, key, data)  # (counted in _store_bytes already)
            return
        self._store_bytes -= len(data)
        cid = self._cid_for(key)
        if kind == "corrupt":
            if isinstance(peer, Gateway):
                self._drop_gateway(peer, f"it sent bytes that do not match {cid}")
            elif isinstance(peer, BitswapPeer):
                log.warning("%s sent a block that does not match %s", peer, cid)
            else:
                log.warning("peer %s sent a block that does not match %s", peer, cid)
                self.node.peers.ensure(peer).reputation.corrupt += 1
            self.planner.on_block(peer, key, valid=False)
            return
        if kind == "error":
            assert self._store_error is not None
            raise self._store_error
        assert kind == "stored"
        self.planner.on_block(peer, key, valid=True)
        if isinstance(peer, PeerId):
            self.node.peers.ensure(peer).reputation.delivered += 1
        self.result.fetched_blocks += 1
        self.result.fetched_bytes += len(data)
        self.node.received_bytes += len(data)
        await self._on_block(key, cid, data)

    async def _store(self, peer: Source, key: bytes, data: bytes) -> None:
        """Hash-check and store one block in a worker thread, then report to the loop.

        Nothing else sees the block before `put` has verified it: the loop
        follows its links only on "stored". Store errors other than a hash
        mismatch (disk full, I/O) end the fetch, as they did in the loop.
        """
        cid = self._cid_for(key)
        async with self._store_limiter:
            kind = "stored"
            try:
                await trio.to_thread.run_sync(self._verify_and_put, cid, data)
            except HashMismatch:
                kind = "corrupt"
            except (StoreError, OSError) as exc:  # raised by the loop, outside any task
                self._store_error = exc
                kind = "error"
        await self.events_send.send((kind, peer, key, data))

    def _verify_and_put(self, cid: CID, data: bytes) -> None:
        """Worker thread: hash check (HashMismatch), the `on_verified` hook, then the write."""
        if self.on_verified is None:
            self.store.put(cid, data)  # verifies the hash
            return
        verify_block(cid, data)
        self.on_verified(cid, data)
        self.store.put_trusted(cid, data)


class _Fetch(PlannedFetch):
    """The whole DAG under a root."""

    def __init__(self, node: "Node", root: CID, progress: Callable[[int], None] | None,
                 request_timeout: float, max_inflight_per_peer: int,
                 on_stored: Callable[[CID, bytes], Awaitable[None]] | None = None) -> None:
        super().__init__(node, request_timeout, max_inflight_per_peer, FetchResult(root))
        self.root = root
        self.progress = progress or (lambda n: None)
        self.on_stored = on_stored
        self.cids: dict[bytes, CID] = {}
        self.walk = DagWalk(key=cid_key)  # keyed like `cids`: by binary CID
        # Each block's place in the depth-first walk (the planner's rank): set
        # when its parent's links are pushed, dropped once it is wanted (a
        # leaf) or its own links are pushed (an inner node). Blocks arrive out
        # of order, so the walk's own order is not the DAG's.
        self.places: dict[bytes, tuple[int, ...]] = {bytes(root): ()}
        self.check_local = False  # re-hash local raw leaves too (see fetch_dag)
        self.skip_file_leaves = False  # leave the raw leaves of files to lanes (see fetch_dag)

    async def run(self, holders: list[PeerId] | None, *, guard: bool = True) -> FetchResult:
        """`guard=False`: the caller already holds the node's store guard shared
        (taking it again could wait behind a gc that waits for the caller)."""
        if not guard:
            return await self._run(holders)
        async with self.node.store_guard.shared():
            return await self._run(holders)

    async def _run(self, holders: list[PeerId] | None) -> FetchResult:
        await self._consider([self.root])
        if not self.planner.finished:
            try:
                self.result.holders = (len(await self._drive(self.root, holders)) + len(self.gateways)
                                       + len(self.bitswap_holders))
            finally:
                self.result.gateways_dropped = dict(self.gateways_dropped)
        # Success is a claim about the store, not about the walk: check it.
        missing = await trio.to_thread.run_sync(functools.partial(
            missing_blocks, self.store, self.root, file_leaves=not self.skip_file_leaves))
        if missing:
            raise FetchFailed(f"fetch of {self.root} ended with {len(missing)} blocks missing, "
                              f"e.g. {missing[0]}")
        return self.result

    def _cid_for(self, key: bytes) -> CID:
        return self.cids[key]

    async def _on_block(self, key: bytes, cid: CID, data: bytes) -> None:
        if self.on_stored is not None:
            await self.on_stored(cid, data)
        self.progress(len(data))
        if cid.codec.name != RAW:
            try:
                links = _links(cid, data, skip_file_leaves=self.skip_file_leaves)
            except StoreError as exc:
                raise FetchFailed(f"block {cid} of {self.root} is malformed: {exc}") from None
            await self._consider(links, self.places.pop(key, ()))

    def _push(self, links: list[CID], place: tuple[int, ...]) -> None:
        """Push `links` on the walk, each placed after `place` (a block met
        twice keeps its first place)."""
        places = self.places
        for i, link in enumerate(links):
            if not self.walk.seen(link):
                places.setdefault(bytes(link), child_place(place, i))
        self.walk.push(links)

    async def _consider(self, cids: list[CID], place: tuple[int, ...] | None = None) -> None:
        """Queue missing blocks; walk present dag-pb blocks locally (resume).

        One `DagWalk` for the whole fetch: a block wanted from the swarm is
        visited (and deduped) now, and its links are pushed on the same walk
        when it arrives (`_on_block`). No store call runs on the event loop:
        raw leaves are checked for presence in batches of `LEAF_BATCH` per
        worker-thread hop (a 100k-leaf local DAG was 100k stat calls on the
        loop, between two awaits at most 1,024 of them), inner nodes are
        looked up and read in one hop.
        """
        if place is None:
            self.walk.push(cids)  # the root: placed at ()
        else:
            self._push(cids, place)
        leaves: list[CID] = []
        for cid in self.walk:
            key = bytes(cid)
            self.cids[key] = cid
            if cid.codec.name == RAW and not self.check_local:
                leaves.append(cid)
                if len(leaves) >= LEAF_BATCH:
                    await self._leaves(leaves)
                    leaves = []
                continue
            if leaves:  # in walk order: the leaves before this node first
                await self._leaves(leaves)
                leaves = []
            try:
                data = await trio.to_thread.run_sync(_read_if_present, self.store, cid)
            except HashMismatch:
                await trio.to_thread.run_sync(self.node.repo.quarantine, cid)  # corrupt: move aside, fetch a good one
                data = None
            if data is None:
                self._want(cid, key)
                continue
            self.result.local_blocks += 1
            if cid.codec.name != RAW:
                self._push(_links(cid, data, skip_file_leaves=self.skip_file_leaves), self.places.pop(key, ()))
            else:
                self.places.pop(key, None)
        if leaves:
            await self._leaves(leaves)

    async def _leaves(self, leaves: list[CID]) -> None:
        """Raw leaves met by the walk, in order: count the present, want the rest."""
        present = await trio.to_thread.run_sync(lambda: [self.store.has(c) for c in leaves])
        for cid, here in zip(leaves, present):
            if here:
                self.result.local_blocks += 1
                self.places.pop(bytes(cid), None)
            else:
                self._want(cid, bytes(cid))

    def _want(self, cid: CID, key: bytes) -> None:
        """Fetch this block from the swarm (and tell `on_wanted` it is coming),
        in its place in the walk (an inner node keeps its place until it arrives)."""
        if self.on_wanted is not None:
            self.on_wanted(cid)
        place = self.places.get(key, ()) if cid.codec.name != RAW else self.places.pop(key, ())
        self.planner.want([key], [place])
