"""The trio driver of Bitswap: the engine and sessions on byte streams.

`Bitswap` is one node's Bitswap: one `Engine` serving a `BlockSource`, and
any number of fetch `Session`s. As in libp2p, each side sends every message
on a stream it opened and reads whatever streams the other side opened:
`serve_peer(peer, protocol, send)` runs for the life of a connection with
the sender of our stream to the peer, and `read_stream(peer, stream)` runs
for each stream the peer opens to us. `run_peer` composes the two for a
peer with exactly one stream each way (the in-memory tests);
shoal.p2p.bitswap.service does it on a libp2p host.

Structured concurrency: `serve_peer` returns (removing the peer
everywhere) when it is cancelled or its stream breaks. The engine is not
thread-safe, so every call into it holds one lock; `poll`, which calls the
store, runs in a worker thread under that lock. Block reads run in worker
threads too (the store verifies each block against its CID on read).

Not here: opening or accepting streams, the swarm key (below the streams),
storing fetched blocks (the caller gets them from `fetch`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Hashable, Iterable, Protocol

import trio

from shoal.p2p.bitswap.engine import Engine, SendMessage
from shoal.p2p.bitswap.message import (
    PROTOCOL_1_1_0,
    BitswapError,
    BlockPayload,
    FrameReader,
    Message,
    frame,
)
from shoal.p2p.bitswap.session import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT_S,
    BlockReceived,
    Done,
    Failed,
    PeerBad,
    SendWants,
    Session,
)

__all__ = ["Bitswap", "BlockSource", "ByteStream", "FetchResult", "MessageSender", "stream_sender"]

log = logging.getLogger("shoal.bitswap")

_RECEIVE_BYTES = 64 * 1024


class ByteStream(Protocol):
    """The part of a trio stream (or a yamux stream) the driver uses."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...

    async def aclose(self) -> None: ...


class BlockSource(Protocol):
    """The store as Bitswap sees it: binary CIDs in, never raising."""

    def has(self, cid: bytes) -> bool: ...

    def size(self, cid: bytes) -> int | None: ...

    def get(self, cid: bytes) -> bytes | None:
        """The block, verified against `cid`; None if absent or corrupt (then set aside)."""
        ...


@dataclass
class FetchResult:
    """What a `fetch` got: the blocks by CID, what is missing, who lied."""

    blocks: dict[bytes, bytes] = field(default_factory=dict)
    missing: tuple[bytes, ...] = ()
    bad_peers: list[Hashable] = field(default_factory=list)


MessageSender = Callable[[Message], Awaitable[None]]
"""Writes one message to the peer (framing it); raises trio's Broken/Closed errors."""


@dataclass(eq=False)
class _Link:
    peer: Hashable
    protocol: str
    sender: MessageSender
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    wake: trio.Event = field(default_factory=trio.Event)

    async def send(self, message: Message) -> None:
        async with self.send_lock:  # whole messages, never interleaved
            await self.sender(message)


def stream_sender(stream: ByteStream) -> MessageSender:
    """A MessageSender writing framed messages to `stream`."""

    async def send(message: Message) -> None:
        await stream.send_all(frame(message))

    return send


@dataclass(eq=False)
class _Run:
    session: Session
    changed: trio.Event = field(default_factory=trio.Event)


class Bitswap:
    """One node's Bitswap over streams; see the module docstring."""

    def __init__(self, source: BlockSource, *, engine: Engine | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, tick_s: float = 1.0) -> None:
        self.source = source
        self.engine = engine if engine is not None else Engine(source.has, source.size)
        self.timeout_s = timeout_s
        self.tick_s = tick_s
        self._engine_lock = trio.Lock()
        self._links: dict[Hashable, _Link] = {}
        self._runs: set[_Run] = set()

    def peers(self) -> list[Hashable]:
        return list(self._links)

    # -- peers -----------------------------------------------------------------

    def has_peer(self, peer: Hashable) -> bool:
        return peer in self._links

    async def serve_peer(self, peer: Hashable, protocol: str, send: MessageSender, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve `peer` (its wants, our wants to it) until cancelled or sending fails.

        `protocol` is the Bitswap version negotiated on our stream to it;
        `send` writes on that stream. Messages from the peer come in through
        `read_stream`, on as many streams as it opens. On return the peer is
        forgotten: its ledger dropped, sessions told it is gone.
        """
        if peer in self._links:
            raise BitswapError(f"a second Bitswap run for {peer!r}")
        async with self._engine_lock:
            self.engine.add_peer(peer, protocol)
        link = self._links[peer] = _Link(peer, protocol, send)
        try:
            task_status.started()
            await self._sender(link)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection went: nothing to tell anyone
        finally:
            del self._links[peer]
            with trio.CancelScope(shield=True):  # another peer's poll may be in its thread
                async with self._engine_lock:
                    self.engine.remove_peer(peer)
            now = trio.current_time()
            for run in list(self._runs):
                run.session.peer_gone(peer, now)
                run.changed.set()

    async def read_stream(self, peer: Hashable, incoming: ByteStream) -> None:
        """Take messages from one of `peer`'s streams until it ends.

        BitswapError if the peer breaks the protocol (malformed, over a
        limit, a stream ending inside a message): the caller drops the
        stream (and may drop the connection). Wantlists from a peer that
        `serve_peer` is not running for are ignored.
        """
        reader = FrameReader()
        while True:
            data = await incoming.receive_some(_RECEIVE_BYTES)
            if not data:
                if not reader.at_boundary():
                    raise BitswapError("stream ended inside a message")
                return
            for message in reader.feed(data):
                link = self._links.get(peer)
                if link is not None and (message.wantlist.entries or message.wantlist.full):
                    async with self._engine_lock:
                        if peer in self._links:
                            self.engine.receive_message(peer, message)
                    link.wake.set()
                if message.blocks or message.presences:
                    now = trio.current_time()
                    for run in list(self._runs):
                        run.session.receive_message(peer, message, now)
                        run.changed.set()

    async def run_peer(self, peer: Hashable, protocol: str, outgoing: ByteStream,
                       incoming: ByteStream, *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """`serve_peer` on `outgoing` and `read_stream` of `incoming`, until `incoming` ends.

        For a peer with exactly one stream each way. A peer that breaks the
        protocol ends its run quietly (logged); the caller closes the streams.
        """
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.serve_peer, peer, protocol, stream_sender(outgoing))
                task_status.started()
                await self.read_stream(peer, incoming)
                nursery.cancel_scope.cancel()
        except* BitswapError as group:
            log.info("bitswap: %r broke the protocol: %s", peer, group.exceptions[0])
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection went: nothing to tell anyone

    async def _sender(self, link: _Link) -> None:
        """Answer the peer's wants as the engine decides, one message at a time."""
        while True:
            async with self._engine_lock:
                link.wake = trio.Event()
                events = await trio.to_thread.run_sync(self.engine.poll, link.peer)
            if not events:
                await link.wake.wait()
                continue
            for event in events:
                await self._send_answer(link, event)

    async def _send_answer(self, link: _Link, event: SendMessage) -> None:
        blocks, unavailable = await trio.to_thread.run_sync(self._read, event.block_cids)
        try:
            if unavailable:
                async with self._engine_lock:
                    for cid in unavailable:
                        self.engine.block_unavailable(link.peer, cid)
            message = event.build(blocks)
            if not message.is_empty():
                await link.send(message)
        finally:
            self.engine.message_sent(event)

    def _read(self, cids: tuple[bytes, ...]) -> tuple[list[BlockPayload], list[bytes]]:
        """Worker thread: the blocks the store still has (and that verified)."""
        blocks: list[BlockPayload] = []
        unavailable: list[bytes] = []
        for cid in cids:
            data = self.source.get(cid)
            if data is None:
                unavailable.append(cid)
            else:
                blocks.append(BlockPayload(cid, data))
        return blocks, unavailable

    async def blocks_added(self, cids: Iterable[bytes]) -> None:
        """New blocks in the store: peers waiting for them are answered."""
        async with self._engine_lock:
            self.engine.blocks_added(cids)
        for link in self._links.values():
            link.wake.set()

    # -- fetching ----------------------------------------------------------------

    async def fetch(self, cids: Iterable[bytes], peers: Iterable[Hashable] | None = None, *,
                    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> FetchResult:
        """Fetch `cids` from `peers` (default: every connected peer); blocks are verified.

        Returns when every block is in or every peer declined the rest; the
        caller stores the blocks. Peers not connected are left out.
        """
        chosen = [p for p in (self.peers() if peers is None else peers) if p in self._links]
        legacy = [p for p in chosen if self._links[p].protocol == PROTOCOL_1_1_0]
        run = _Run(Session(cids, chosen, now=trio.current_time(), legacy_peers=legacy,
                           timeout_s=self.timeout_s, max_in_flight=max_in_flight))
        result = FetchResult()
        self._runs.add(run)
        try:
            while True:
                run.changed = trio.Event()
                for event in run.session.next_events():
                    if isinstance(event, SendWants):
                        await self._send_wants(run, event)
                    elif isinstance(event, BlockReceived):
                        result.blocks[event.cid] = event.data
                    elif isinstance(event, PeerBad):
                        log.warning("bitswap: %r sent a block that does not match its CID", event.peer)
                        result.bad_peers.append(event.peer)
                    elif isinstance(event, Failed):
                        result.missing = event.missing
                        return result
                    elif isinstance(event, Done):
                        return result
                if run.changed.is_set():
                    continue
                with trio.move_on_after(self.tick_s):
                    await run.changed.wait()
                run.session.tick(trio.current_time())
        finally:
            self._runs.discard(run)

    async def _send_wants(self, run: _Run, event: SendWants) -> None:
        link = self._links.get(event.peer)
        try:
            if link is None:
                raise trio.ClosedResourceError
            await link.send(event.message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            run.session.peer_gone(event.peer, trio.current_time())
            run.changed.set()
