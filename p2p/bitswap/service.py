"""Bitswap on a libp2p host: `/ipfs/bitswap/1.2.0` and `1.1.0` streams for the driver.

`BitswapService(host, bitswap)` registers the Bitswap protocol ids in the
host's handler registry. For each connection that speaks Bitswap (the peer
opened a Bitswap stream to us, or we are fetching from it) it opens one
stream of its own, negotiated to the best version both speak, and runs
`Bitswap.serve_peer` on it until the connection closes; every Bitswap
stream the peer opens is read with `Bitswap.read_stream`. That is how
go/js Bitswap use libp2p: messages flow on streams their sender opened.

The private swarm key, Noise and yamux are the host's business: a peer
without the key never reaches multistream-select, let alone Bitswap.
A peer that breaks the Bitswap protocol has that stream reset (the
connection's handler wrapper does it) and its other streams live on.

At most `max_readers_per_peer` of a connection's Bitswap streams are read
at once: each may hold a partial message of up to 4 MiB, so a peer opening
hundreds of streams would otherwise pin hundreds of them. The others wait
unread, and yamux's window stops their senders.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import trio

from shoal.p2p.bitswap.driver import Bitswap, FetchResult
from shoal.p2p.bitswap.message import PROTOCOLS, Message, frame
from shoal.p2p.errors import P2PError
from shoal.p2p.libp2p.connection import Libp2pConnection, YamuxStream
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Multiaddr

__all__ = ["BitswapService", "MAX_READERS_PER_PEER"]

_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)

MAX_READERS_PER_PEER = 4
"""Bitswap streams of one connection read at once (go keeps one per peer;
js may have a few open while it sends)."""

log = logging.getLogger("shoal.bitswap")


class _Outbound:
    """Our stream to the peer, opened again if the peer closed or reset it.

    js Bitswap aborts an incoming stream that stays silent for 10 s, and any
    peer may close one; the connection still carries Bitswap, so a message
    that finds the stream broken goes on a fresh one (once: if that fails
    too, the peer is no longer served).
    """

    def __init__(self, conn: Libp2pConnection, stream: YamuxStream) -> None:
        self.conn = conn
        self.stream: YamuxStream | None = stream

    async def send(self, message: Message) -> None:
        data = frame(message)
        for attempt in (1, 2):
            try:
                if self.stream is None:
                    try:
                        self.stream = await self.conn.open_stream(list(PROTOCOLS))
                    except (P2PError, trio.TooSlowError) as exc:  # refused or silent
                        raise trio.BrokenResourceError(f"cannot reopen a Bitswap stream: {exc}") from exc
                await self.stream.send_all(data)
                return
            except _BROKEN:
                self.close()
                if attempt == 2 or self.conn.closed:
                    raise

    def close(self) -> None:
        if self.stream is not None:
            self.stream.reset()
            self.stream = None


class BitswapService:
    """A `Bitswap` driver plugged into a `Libp2pHost`'s connections."""

    def __init__(self, host: Libp2pHost, bitswap: Bitswap, *,
                 max_readers_per_peer: int = MAX_READERS_PER_PEER) -> None:
        self.host = host
        self.bitswap = bitswap
        self.max_readers_per_peer = max_readers_per_peer
        self._starting: dict[PeerId, trio.Event] = {}
        self._read_slots: dict[Libp2pConnection, trio.Semaphore] = {}
        for protocol in PROTOCOLS:
            host.handlers[protocol] = self._handle

    async def _handle(self, stream: YamuxStream) -> None:
        """A Bitswap stream the peer opened: make sure we serve it, then read it."""
        conn = stream.conn
        await self.connect(conn)
        if conn.closed:
            return
        slots = self._read_slots.setdefault(conn, trio.Semaphore(self.max_readers_per_peer))
        async with slots:
            await self.bitswap.read_stream(conn.remote_peer, stream)

    async def connect(self, conn: Libp2pConnection) -> None:
        """Start serving Bitswap on `conn` (idempotent; concurrent callers wait for one start)."""
        peer = conn.remote_peer
        while not self.bitswap.has_peer(peer):
            starting = self._starting.get(peer)
            if starting is None:
                break
            await starting.wait()
        else:
            return
        starting = self._starting[peer] = trio.Event()
        try:
            stream = await conn.open_stream(list(PROTOCOLS))
            await self.host.nursery.start(self._run, conn, stream)
        finally:
            del self._starting[peer]
            starting.set()

    async def _run(self, conn: Libp2pConnection, stream: YamuxStream, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the peer on our stream until the connection closes (or cannot carry Bitswap)."""
        outbound = _Outbound(conn, stream)
        try:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    # Woken once, when the connection ends: not on each of its reads.
                    await conn.wait_closed()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                await self.bitswap.serve_peer(conn.remote_peer, stream.protocol, outbound.send,
                                              task_status=task_status)
                nursery.cancel_scope.cancel()
        finally:
            outbound.close()
            self._read_slots.pop(conn, None)

    async def dial(self, addr: Multiaddr | str) -> PeerId:
        """Connect to `addr` and start Bitswap with it; the peer to name in fetches."""
        conn = await self.host.dial(addr)
        await self.connect(conn)
        return conn.remote_peer

    async def fetch(self, cids: Iterable[bytes], addrs: Sequence[Multiaddr | str]) -> FetchResult:
        """Dial `addrs` (those that answer), then fetch `cids` from them over Bitswap.

        Blocks come back verified against their CIDs; storing them is the caller's.
        """
        peers: list[PeerId] = []
        for addr in addrs:
            try:
                peers.append(await self.dial(addr))
            except (P2PError, OSError, trio.TooSlowError, trio.BrokenResourceError,
                    trio.ClosedResourceError) as exc:
                log.info("bitswap: cannot use %s: %s", addr, exc)
        return await self.bitswap.fetch(cids, peers)
