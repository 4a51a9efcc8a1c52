"""A lane: one process of a node that moves block bytes (`python -m shoal.p2p.lanes.worker --fd N`).

Started by the node's LanePool (shoal.p2p.lanes.pool) with one end of a
socketpair as fd N: the control channel (shoal.p2p.lanes.control). The node
sends Config first; the lane opens the repo's blockstore (not its index: the
node keeps that) and the node's identity, listens on an ephemeral TCP port
of the node's listen host and answers Ready with its address. Then, in one
trio nursery:

- serving: inbound libp2p connections (pnet with the node's swarm key,
  Noise with the NODE's identity, yamux) from peers the node admits (asked
  once per remote peer over the control channel, the answer cached for
  ADMIT_CACHE_S). On a `/shoal/lane/1.0.0` stream opened by the dialer, each
  side sends a Hello, then WANT_BLOCK is answered with BLOCK / BLOCK_MISSING
  by the node's own BlockServer: verified reads, corrupt blocks quarantined,
  one send budget per remote peer however many connections it opens.
- jobs: a Job names a block and a holder's lane addresses. The lane keeps one
  libp2p connection per holder lane address (dialled with the holder's peer
  id expected; many requests in flight on it), asks for the block, hashes it
  against its CID BEFORE any use, pwrites it to each sink, puts it in the
  blockstore durably (temp file, data sync, rename; the shard directory is
  fsynced by the node's next flush, which the pool tells of the block) and
  answers Result. A job
  without a holder reads our own store (verified) and only writes the sinks.
  Hashing and writing run in worker threads.
- CpuStats now and then: the lane's own CPU (getrusage) and byte counts.

Test hooks (`SHOAL_LANE_TEST_HOOK`, see `served_store`): a lane can be
made to lie or to serve slowly, so integration tests can show that a lying
holder's lane is caught per block and that a lane killed mid-get is
replaced. They are honoured only when PYTEST_CURRENT_TEST is set too
(pytest sets it for the test that started the node), never in a real node.

It exits when the control channel closes (the node stopped or died) or on
SIGTERM; SIGINT is ignored (a Ctrl-C reaches the whole process group: the
node stops its lanes itself). It does not plan, retry elsewhere, keep
reputation or touch the index: the node's control plane does.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Sequence, cast

import trio

from shoal.store.errors import BlockNotFound, HashMismatch, StoreError
from shoal.store.ipld.cid import CID, block_key, verify_block
from shoal.store.persist.blockstore import Blockstore
from shoal.store.persist.direct_io import ALIGN, pwrite_at, staged_copy
from shoal.store.persist.flatfs import FlatfsBlockstore
from shoal.store.persist.repo import BLOCKS_DIR, QUARANTINE_DIR

from shoal.p2p.errors import ControlProtocolError, P2PError
from shoal.p2p.lanes import control as C
from shoal.p2p.lanes.api import LaneJob, LaneResult, Outcome
from shoal.p2p.libp2p.connection import (
    Libp2pConnection, NegotiationFailed, YamuxStream, upgrade_inbound, upgrade_outbound,
)
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.net.block_server import BlockServer, ServedStore
from shoal.p2p.net.connection import PeerConnection, RequestFailed, SendBudget
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import Block, BlockMissing, Error, ErrorCode, Hello, Message, WantBlock

log = logging.getLogger("shoal.lane")

LANE_PROTOCOL = "/shoal/lane/1.0.0"
"""The yamux stream lane-to-lane block requests run on (one per connection, opened by the dialer)."""
LANE_AGENT = "shoal-lane/0.1"
LANE_STREAM_WINDOW = 16 * 1024 * 1024
"""As the node's /shoal stream: many 1 MiB blocks in flight without a window stop every quarter block."""
MAX_JOBS = 256
"""Jobs a lane runs at once; the pool sends fewer (its per-lane cap), so more is a node bug."""
MAX_INBOUND = 128
"""Inbound connections a lane serves at once (each has passed the node's admission)."""
MAX_HANDSHAKES = 32
MAX_HANDSHAKES_PER_IP = 4
"""Handshakes one address may have running at once: a stranger that opens
sockets and says nothing holds a slot for the handshake timeout each, and
must not hold them all."""
MAX_STREAMS_PER_PEER = 16
"""Lane streams one admitted peer may have open on a lane: one per lane of
its node (8 by default at most), with room for reconnects."""
ADMIT_CACHE_S = 10.0
"""How long the node's answer about a peer is trusted: a peer banned or
dropped from the allowlist is refused by the lanes after at most this long
(new connections), and an allowed one costs one question per interval."""
STATS_INTERVAL_S = 0.5
RESULT_BATCH = 8
RESULT_LINGER_S = 0.002
"""Results go to the node several at once: a finished job's Result waits up
to RESULT_LINGER_S for others while RESULT_BATCH or more jobs still run
here, so the node's main process (the control plane) wakes once per batch
instead of once per block. A Result carrying bytes (a reader waits for
them), a failure and the last jobs' go at once."""
DIAL_TIMEOUT_S = 5.0
ADMIT_TIMEOUT_S = 5.0


class LaneStore:
    """The repo as a lane sees it: the blockstore and the quarantine, no index.

    Safe beside the node's own process: every flatfs write is a unique temp
    file (pid + counter) made durable, then renamed, so two processes never
    see a half-written block; a block found corrupt is moved aside under the
    key's lock of this process (a rename: at worst another process's rename
    finds it gone). What a second process must do for the index's sake:
    make the names of its blocks durable itself (`put_durably` fsyncs the
    shard directory before returning), since the node's `flush()` only
    knows the shards its own instance wrote.
    """

    def __init__(self, repo: Path) -> None:
        self.path = repo
        self._blockstore = FlatfsBlockstore(repo / BLOCKS_DIR)

    @property
    def blockstore(self) -> Blockstore:
        return self._blockstore

    def quarantine(self, cid: CID) -> bool:
        return self._blockstore.quarantine(block_key(cid), self.path / QUARANTINE_DIR) is not None

    def put(self, cid: CID, data: bytes | memoryview) -> None:
        """Store a block just hashed: data durable, then renamed into place.

        The name's durability (the shard directory's fsync) is left to the
        node: the pool tells its blockstore (FlatfsBlockstore.note_written)
        of every block a lane stored, and the node's flush before an index
        row refers to a block fsyncs its directory, as for its own puts:
        one batched flush per fetch instead of a directory fsync per block."""
        self._blockstore.put_trusted(cid, data)

    def close(self) -> None:
        self._blockstore.close()


def write_sinks(job: LaneJob, data: bytes | memoryview) -> None:
    """pwrite `data` at each sink (OSError if a file cannot be written).

    The whole pages of each sink go to the disk with O_DIRECT
    (shoal.store.persist.direct_io.pwrite_at) when `data` is a `staged_copy`
    placed for that sink's offset: the export's file then fills no page
    cache, and its fsync before the rename has only the edges and the
    metadata left to write (and no syncfs round of a lane pays for the
    export's writeback). Other sinks are written buffered.
    """
    for sink in job.sinks:
        pwrite_at(sink.path, data, sink.offset)


def stage_block(job: LaneJob, data: bytes) -> memoryview:
    """The block's bytes in this thread's page-aligned buffer, placed for
    the first sink's offset: one copy serves that sink's O_DIRECT write and,
    at a page-aligned offset (the usual case: fixed-size leaves), the block
    file's too."""
    return staged_copy(data, job.sinks[0].offset % ALIGN if job.sinks else 0)


TEST_HOOK_ENV = "SHOAL_LANE_TEST_HOOK"


class _HookedBlockstore:
    """The store as a lying or slow holder's lane serves it (tests only, see `served_store`)."""

    def __init__(self, inner: Blockstore, corrupt: bool, delay: float) -> None:
        self._inner = inner
        self._corrupt = corrupt
        self._delay = delay

    def get(self, cid: CID) -> bytes:
        if self._delay:
            time.sleep(self._delay)  # a worker thread of the block server: a slow disk
        data = self._inner.get(cid)
        if self._corrupt and data:
            return bytes([data[0] ^ 0x01]) + data[1:]
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _HookedStore:
    def __init__(self, store: LaneStore, corrupt: bool, delay: float) -> None:
        self.blockstore = cast(Blockstore, _HookedBlockstore(store.blockstore, corrupt, delay))
        self.quarantine = store.quarantine


def served_store(store: LaneStore, env: Mapping[str, str] = os.environ) -> ServedStore:
    """What the lane serves from: its store, or under a test hook a lying or slow view of it.

    `SHOAL_LANE_TEST_HOOK=corrupt` serves every block with its first bit
    flipped (a holder whose lane lies); `serve-delay=S` waits S seconds
    before each block it reads to serve (a slow holder). Honoured only
    with PYTEST_CURRENT_TEST set, i.e. a node started by a test; otherwise
    ignored with a warning. The lane's own jobs never go through the hook.
    """
    hook = env.get(TEST_HOOK_ENV, "").strip()
    if not hook:
        return store
    if not env.get("PYTEST_CURRENT_TEST"):
        log.warning("lane: %s ignored (only tests may set it)", TEST_HOOK_ENV)
        return store
    corrupt, delay = False, 0.0
    for part in hook.split(","):
        name, _, value = part.partition("=")
        if name == "corrupt":
            corrupt = True
        elif name == "serve-delay":
            delay = float(value)
    log.warning("lane: test hook %s in effect", hook)
    return _HookedStore(store, corrupt, delay)


class _Link:
    """Our connection to one holder lane address: libp2p + the lane stream's PeerConnection."""

    def __init__(self, libp2p: Libp2pConnection, conn: PeerConnection) -> None:
        self.libp2p = libp2p
        self.conn = conn
        self.inflight = 0

    @property
    def closed(self) -> bool:
        return self.conn.closed or self.libp2p.closed


class Lane:
    """One lane's state; `run` drives it until the control channel ends."""

    def __init__(self, config: C.Config, control: trio.abc.Stream, decoder: C.ControlDecoder) -> None:
        self.config = config
        self.control = control
        self.decoder = decoder
        self.identity = Identity.load(Path(config.repo) / "identity.key")
        if self.identity.peer_id.multihash != config.peer_id:
            raise P2PError("the repo's identity.key is not the node's identity")
        self.swarm_key = SwarmKey(config.swarm_psk) if config.swarm_psk is not None else None
        self.store = LaneStore(Path(config.repo))
        self.blocks = BlockServer(served_store(self.store), [])
        self.fetched_bytes = 0
        self._send_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self.host: Libp2pHost | None = None
        self._admit_ids = 0
        self._admit_waiting: dict[int, tuple[trio.Event, list[bool]]] = {}
        self._admitted: dict[PeerId, tuple[bool, float]] = {}
        self._inbound: set[Libp2pConnection] = set()
        self._budgets: dict[PeerId, tuple[SendBudget, int]] = {}  # peer -> (budget, lane streams using it)
        self._links: dict[Multiaddr, _Link] = {}
        self._dial_locks: dict[Multiaddr, trio.Lock] = {}
        self._jobs = 0
        self._results: list[C.Result] = []  # finished, not yet sent (see RESULT_BATCH)
        self._results_waiting = trio.Event()  # _results became non-empty
        self._results_due = trio.Event()  # ... and should go now
        self._handshakes = trio.Semaphore(MAX_HANDSHAKES)
        self._handshaking: dict[str, int] = {}  # IP -> handshakes running
        self._inbound_slots = trio.Semaphore(MAX_INBOUND)

    # -- control channel ---------------------------------------------------------

    async def send(self, msg: C.ControlMessage) -> None:
        async with self._send_lock:
            await self.control.send_all(C.encode(msg))

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.host = Libp2pHost(self.identity, nursery, swarm_key=self.swarm_key,
                                   handshake_timeout=L.HANDSHAKE_TIMEOUT_S)
            self.host.handlers[LANE_PROTOCOL] = self._lane_stream
            listeners = await self._listen()
            host, port = listeners[0].socket.getsockname()[:2]
            addr = Multiaddr(host, port, None, "ip6" if ":" in host else "ip4")
            self.host.listen_addrs = [addr]
            nursery.start_soon(partial(trio.serve_listeners, self._accept, listeners, handler_nursery=nursery))
            await self.send(C.Ready(str(addr), os.getpid()))
            nursery.start_soon(self._stats_loop)
            nursery.start_soon(self._send_results)
            if ready is not None:
                ready()
            try:
                await self._read_control(nursery)
            finally:
                nursery.cancel_scope.cancel()

    async def _listen(self) -> list[trio.SocketListener]:
        """On the port a lane of this index had before, if it is free: a
        replacement lane keeps the address peers already know."""
        if self.config.port:
            try:
                return await trio.open_tcp_listeners(self.config.port, host=self.config.host)
            except OSError as exc:
                log.info("lane: port %d is taken (%s); listening on a new one", self.config.port, exc)
        return await trio.open_tcp_listeners(0, host=self.config.host)

    async def _read_control(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                data = await self.control.receive_some(256 * 1024)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return  # the node closed the channel (or died): stop
            for msg in self.decoder.feed(data):
                if isinstance(msg, C.Job):
                    if self._jobs >= MAX_JOBS:
                        await self.send(C.Result(msg.job_id, Outcome.UNREACHABLE.value, 0, None, "lane busy"))
                        continue
                    self._jobs += 1
                    nursery.start_soon(self._job_task, msg)
                elif isinstance(msg, C.AdmitAnswer):
                    waiting = self._admit_waiting.pop(msg.req_id, None)
                    if waiting is not None:
                        waiting[1].append(msg.allowed)
                        waiting[0].set()
                elif isinstance(msg, C.Stop):
                    return
                else:
                    raise ControlProtocolError(f"a lane does not expect {type(msg).__name__}")

    async def _stats_loop(self) -> None:
        while True:
            try:
                await self.send(self.stats())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the node is gone: the control reader sees EOF and stops the lane
            await trio.sleep(STATS_INTERVAL_S)

    def stats(self) -> C.CpuStats:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return C.CpuStats(float(usage.ru_utime + usage.ru_stime), self.blocks.served_bytes, self.fetched_bytes)

    # -- admission ----------------------------------------------------------------

    async def admits(self, peer: PeerId) -> bool:
        """The node's answer for `peer` (cached briefly); False if it does not answer in time."""
        now = trio.current_time()
        cached = self._admitted.get(peer)
        if cached is not None and cached[1] > now:
            return cached[0]
        self._admit_ids += 1
        rid = self._admit_ids
        event, answer = trio.Event(), list[bool]()
        self._admit_waiting[rid] = (event, answer)
        try:
            await self.send(C.AdmitRequest(rid, peer.multihash))
            with trio.move_on_after(ADMIT_TIMEOUT_S):
                await event.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # no node to ask: nobody is admitted
        finally:
            self._admit_waiting.pop(rid, None)
        allowed = bool(answer and answer[0])
        if answer:
            if len(self._admitted) > 4096:
                self._admitted = {p: a for p, a in self._admitted.items() if a[1] > now}
            self._admitted[peer] = (allowed, now + ADMIT_CACHE_S)
        return allowed

    # -- serving --------------------------------------------------------------------

    async def _accept(self, tcp: trio.SocketStream) -> None:
        try:
            ip = str(tcp.socket.getpeername()[0])
        except OSError:
            ip = ""
        if (self._inbound_slots.value == 0 or self._handshakes.value == 0
                or self._handshaking.get(ip, 0) >= MAX_HANDSHAKES_PER_IP):
            await trio.aclose_forcefully(tcp)
            return
        async with self._inbound_slots:
            async with self._handshakes:
                self._handshaking[ip] = self._handshaking.get(ip, 0) + 1
                try:
                    conn = await self._upgrade(tcp)
                finally:
                    self._handshaking[ip] -= 1
                    if not self._handshaking[ip]:
                        del self._handshaking[ip]
                if conn is None:
                    return
            assert self.host is not None
            self._inbound.add(conn)
            try:
                await self.host.run_connection(conn)
            finally:
                self._inbound.discard(conn)

    async def _upgrade(self, tcp: trio.SocketStream) -> Libp2pConnection | None:
        """pnet + Noise + yamux, then the node's word on the peer; None if refused."""
        assert self.host is not None
        try:
            conn = await upgrade_inbound(tcp, self.identity, self.host.handlers, swarm_key=self.swarm_key,
                                         timeout=L.HANDSHAKE_TIMEOUT_S)
        except (P2PError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("lane: inbound upgrade failed: %s", exc)
            return None
        if conn.remote_peer == self.identity.peer_id or not await self.admits(conn.remote_peer):
            log.info("lane: refusing %s (not admitted by the node)", conn.remote_peer)
            await trio.aclose_forcefully(conn.secure)
            return None
        return conn

    async def _lane_stream(self, stream: YamuxStream) -> None:
        """A peer opened /shoal/lane/1.0.0 on a connection it dialled: serve its WANT_BLOCKs."""
        conn = stream.conn
        if conn not in self._inbound:
            stream.reset()  # only on connections we accepted (and the node admitted)
            return
        peer = conn.remote_peer
        budget, users = self._budgets.get(peer, (None, 0))
        if budget is None:
            budget = SendBudget(self.config.send_budget)
        if users >= MAX_STREAMS_PER_PEER:
            stream.reset()
            return
        self._budgets[peer] = (budget, users + 1)
        stream.grow_window(LANE_STREAM_WINDOW)
        pc = PeerConnection(stream, peer, self._handle_request, send_budget=self.config.send_budget,
                            stall_timeout=self.config.stall_timeout)
        pc.send_budget = budget  # one budget per peer, however many connections it opens
        try:
            await self._run_peer(pc)
        finally:
            budget, users = self._budgets[peer]
            if users <= 1:
                del self._budgets[peer]
            else:
                self._budgets[peer] = (budget, users - 1)
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await conn.aclose()

    async def _run_peer(self, pc: PeerConnection, ready: "trio.MemorySendChannel[None] | None" = None) -> None:
        """Run `pc` with the Hello exchange; `ready` gets a value once the peer's Hello came."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(pc.run)
                await pc.send(Hello(0, (L.PROTOCOL_VERSION,), (), LANE_AGENT, 0, 0))
                with trio.move_on_after(L.HELLO_TIMEOUT_S):
                    await pc.hello_received.wait()
                if pc.remote_hello is None:
                    await pc.aclose()
                    return
                if ready is not None:
                    await ready.send(None)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, P2PError):
            pass
        finally:
            if ready is not None:
                await ready.aclose()

    async def _handle_request(self, conn: PeerConnection, msg: Message) -> Sequence[Message]:
        if isinstance(msg, WantBlock):
            await self.blocks.serve(conn, msg.request_id, msg.cids)
            return []
        return [Error(msg.request_id, ErrorCode.UNKNOWN_TYPE, f"a lane serves WANT_BLOCK only, not {type(msg).__name__}")]

    async def _no_requests(self, conn: PeerConnection, msg: Message) -> Sequence[Message]:
        """Requests on a connection we dialled: a holder lane never asks us anything."""
        return [Error(msg.request_id, ErrorCode.UNKNOWN_TYPE, "this lane serves nothing on its outbound connections")]

    # -- jobs --------------------------------------------------------------------------

    async def _job_task(self, msg: C.Job) -> None:
        try:
            try:
                job = msg.to_job()
            except ControlProtocolError as exc:
                result = LaneResult(Outcome.UNREACHABLE, detail=str(exc))
            else:
                result = LaneResult(Outcome.TIMEOUT, detail=f"no answer within {job.timeout:g}s")
                with trio.move_on_after(job.timeout):
                    result = await self.run_job(job)
        except Exception as exc:  # a bug must cost one job, never the lane
            log.exception("lane: job %d failed", msg.job_id)
            result = LaneResult(Outcome.UNREACHABLE, detail=f"internal error: {type(exc).__name__}")
        finally:
            self._jobs -= 1
        self._results.append(C.Result.from_result(msg.job_id, result))
        self._results_waiting.set()
        if (result.data is not None or result.outcome is not Outcome.OK or len(self._results) >= RESULT_BATCH
                or self._jobs < RESULT_BATCH):
            self._results_due.set()

    async def _send_results(self) -> None:
        """Send finished jobs' Results, several per write (see RESULT_BATCH)."""
        while True:
            await self._results_waiting.wait()
            with trio.move_on_after(RESULT_LINGER_S):
                await self._results_due.wait()
            self._results_waiting = trio.Event()
            self._results_due = trio.Event()
            batch, self._results = self._results, []
            if not batch:
                continue
            try:
                async with self._send_lock:
                    await self.control.send_all(b"".join(C.encode(r) for r in batch))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the node is gone: the control reader sees EOF and stops the lane

    async def run_job(self, job: LaneJob) -> LaneResult:
        """Obtain, verify, write and store one block; per-block failures are outcomes."""
        if job.holder is None:
            return await trio.to_thread.run_sync(self._local_job, job)
        fetched = await self._fetch(job)
        if isinstance(fetched, LaneResult):
            return fetched
        self.fetched_bytes += len(fetched)
        return await trio.to_thread.run_sync(self._deliver, job, fetched)

    def _local_job(self, job: LaneJob) -> LaneResult:
        """Worker thread: our own verified copy to the sinks."""
        try:
            data = self.store.blockstore.get(job.cid)
        except HashMismatch:
            try:
                self.store.quarantine(job.cid)
            except (StoreError, OSError) as exc:
                log.warning("lane: cannot quarantine corrupt block %s: %s", job.cid, exc)
            return LaneResult(Outcome.CORRUPT, detail="our copy is corrupt (quarantined)")
        except BlockNotFound:
            return LaneResult(Outcome.MISSING, detail="not in our store")
        except (StoreError, OSError) as exc:
            return LaneResult(Outcome.STORE_ERROR, detail=str(exc))
        try:
            if job.sinks:
                write_sinks(job, stage_block(job, data))
        except OSError as exc:
            return LaneResult(Outcome.STORE_ERROR, detail=f"sink: {exc}")
        return LaneResult(Outcome.OK, len(data), data if job.want_data else None)

    def _deliver(self, job: LaneJob, data: bytes) -> LaneResult:
        """Worker thread: hash check first, then the sinks, then the durable put."""
        try:
            verify_block(job.cid, data)
        except HashMismatch:
            return LaneResult(Outcome.CORRUPT, len(data), detail=f"{job.holder} sent bytes that are not {job.cid}")
        # One copy, into page-aligned memory: both writes below go to the
        # disk from it with O_DIRECT (no page cache), as the in-process
        # fetch's do (shoal.store.persist.direct_io).
        staged = stage_block(job, data)
        try:
            write_sinks(job, staged)
        except OSError as exc:
            return LaneResult(Outcome.STORE_ERROR, len(data), detail=f"sink: {exc}")
        if job.store:
            try:
                self.store.put(job.cid, staged if not job.sinks or job.sinks[0].offset % ALIGN == 0 else data)
            except (StoreError, OSError) as exc:
                return LaneResult(Outcome.STORE_ERROR, len(data), detail=str(exc))
        return LaneResult(Outcome.OK, len(data), data if job.want_data else None)

    async def _fetch(self, job: LaneJob) -> bytes | LaneResult:
        """The block's (unverified) bytes from one of the holder's lanes, or why not."""
        assert job.holder is not None
        if not job.holder_addrs:
            return LaneResult(Outcome.UNREACHABLE, detail="the holder has no lanes")
        raw = bytes(job.cid)
        holder = job.holder
        why = "no address answered"
        # Least busy first: jobs spread over the holder's lanes (an address
        # not connected yet counts as idle, so each one gets dialled).
        order = sorted((a.with_peer(holder) for a in job.holder_addrs), key=self._load_of)
        for addr in order:
            try:
                link = await self._link(addr)
            except (P2PError, OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                why = f"{addr}: {exc}"
                continue
            link.inflight += 1
            try:
                replies = await link.conn.request(lambda rid: WantBlock(rid, (raw,)), timeout=job.timeout)
            except RequestFailed as exc:
                if exc.timed_out:
                    return LaneResult(Outcome.TIMEOUT, detail=f"{addr}: {exc}")
                why = f"{addr}: {exc}"
                continue
            finally:
                link.inflight -= 1
            for reply in replies:
                if isinstance(reply, Block) and reply.cid == raw:
                    return reply.data
                if isinstance(reply, BlockMissing):
                    return LaneResult(Outcome.MISSING, detail=f"{addr} does not have it")
            why = f"{addr}: no block in the answer"
        return LaneResult(Outcome.UNREACHABLE, detail=why)

    def _load_of(self, addr: Multiaddr) -> int:
        link = self._links.get(addr)
        return link.inflight if link is not None and not link.closed else 0

    async def _link(self, addr: Multiaddr) -> _Link:
        """The open connection to `addr`, dialled (peer id checked) if there is none."""
        lock = self._dial_locks.setdefault(addr, trio.Lock())
        async with lock:
            link = self._links.get(addr)
            if link is not None and not link.closed:
                return link
            assert self._nursery is not None and self.host is not None and addr.peer_id is not None
            with trio.fail_after(DIAL_TIMEOUT_S + L.HANDSHAKE_TIMEOUT_S):
                tcp = await trio.open_tcp_stream(addr.host, addr.port)
                conn = await upgrade_outbound(tcp, self.identity, self.host.handlers, expected_peer=addr.peer_id,
                                              swarm_key=self.swarm_key, timeout=L.HANDSHAKE_TIMEOUT_S)
                await self._nursery.start(self.host.run_connection, conn)
                try:
                    stream = await conn.open_stream(LANE_PROTOCOL)
                except (NegotiationFailed, P2PError, trio.BrokenResourceError, trio.ClosedResourceError):
                    await conn.aclose()
                    raise
                stream.grow_window(LANE_STREAM_WINDOW)
                pc = PeerConnection(stream, addr.peer_id, self._no_requests, send_budget=self.config.send_budget,
                                    stall_timeout=self.config.stall_timeout)
                send, receive = trio.open_memory_channel[None](1)
                self._nursery.start_soon(self._run_link, pc, conn, send)
                async with receive:
                    try:
                        await receive.receive()
                    except trio.EndOfChannel:
                        raise P2PError(f"{addr} refused the lane stream (not admitted?)") from None
            link = _Link(conn, pc)
            if len(self._links) >= 1024:  # forget dead links (and their locks) now and then
                for old in [a for a, lk in self._links.items() if lk.closed]:
                    del self._links[old]
                    if not self._dial_locks[old].locked():
                        del self._dial_locks[old]
            self._links[addr] = link
            return link

    async def _run_link(self, pc: PeerConnection, conn: Libp2pConnection,
                        ready: "trio.MemorySendChannel[None]") -> None:
        try:
            await self._run_peer(pc, ready)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await conn.aclose()


async def _lane_main(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    control = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    decoder = C.ControlDecoder()
    config: C.Config | None = None
    pending: list[C.ControlMessage] = []
    while config is None:
        data = await control.receive_some(64 * 1024)
        if not data:
            return 0  # the node went away before configuring us
        msgs = decoder.feed(data)
        if msgs and not isinstance(msgs[0], C.Config):
            raise ControlProtocolError("the first control message must be Config")
        if msgs:
            config, pending = msgs[0], msgs[1:]  # type: ignore[assignment]
    if pending:
        raise ControlProtocolError("the node sent more before the lane was ready")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s shoal.lane[{config.index}]: %(message)s")
    lane = Lane(config, control, decoder)
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)
            try:
                await lane.run()
            finally:
                nursery.cancel_scope.cancel()
                await trio.to_thread.run_sync(lane.store.close)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shoal.p2p.lanes.worker",
                                     description="a node's lane process (started by the node, not by hand)")
    parser.add_argument("--fd", type=int, required=True, help="the control channel's socket")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return trio.run(_lane_main, args.fd)
    except (P2PError, StoreError, OSError) as exc:
        print(f"shoal lane: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
