"""One authenticated connection to a peer: requests out, requests in.

The trio driver around the sans-IO pieces (FrameDecoder, codec, messages).
A connection is a set of *channels*, one per stream: the session stream it was
made with, and one per Shoal protocol (shoal.p2p.wire.protocols), opened
lazily by the first request of that family from either side and reused
for the connection's life. Request ids are per connection, so one table
of pending requests serves every channel.
- a reader task per channel turns bytes into messages and routes each one:
  responses go to the request that waits for them (matched by request id,
  and only from the channel the request went out on), requests go to the
  node's handler in their own task, and their replies go back on the channel
  the request came on; a message of another protocol than its channel's is
  refused like a malformed one (ERROR, counted toward the hang-up);
- no channel but the session's is read before the peer's Hello has arrived;
- a send lock per channel keeps frames whole when several tasks send at once,
  and a frame once started is written whole even if its sender is
  cancelled (half a frame, or a Noise nonce spent on a frame never sent,
  makes the peer hang up);
- backpressure both ways, per peer across all its channels: at most
  `max_inflight_out` of our requests are outstanding (callers wait for a
  slot), and at most `max_inflight_in` of the peer's requests are served at
  once (the next one gets ERROR busy);
- a send budget, shared by the channels: the bytes read for the peer and not
  yet written (blocks, reserved before the disk read) stay under
  `send_budget` (32 MiB), so a peer that stops reading costs that much
  memory, not 64 requests' worth;
- a stall timeout: a frame that cannot be written within `stall_timeout`,
  on any channel, closes the whole connection (its socket is not being read).
Malformed input gets an ERROR reply; too much of it (counted across the
channels), or any framing error, closes the connection. Nothing a peer sends
can crash the node.
"""

from __future__ import annotations

import itertools
import logging
from contextvars import ContextVar
from typing import Awaitable, Callable, Sequence

import trio

from shoal.p2p.wire import codec, limits as L
from shoal.p2p.errors import DecoderBug, DecryptError, P2PError, RemoteProtocolError
from shoal.p2p.libp2p.connection import YamuxStream
from shoal.p2p.wire.framing import FrameDecoder, encode_frame_parts
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import RESPONSES, AuditProof, Block, Error, ErrorCode, Message
from shoal.p2p.wire.protocols import carries, protocol_of

log = logging.getLogger("shoal.conn")

Handler = Callable[["PeerConnection", Message], Awaitable[Sequence[Message]]]
StreamOpener = Callable[[str], Awaitable["trio.abc.Stream | None"]]
"""Opens a stream of the given protocol id to the peer; None if the peer
answered `na` (it does not speak that protocol)."""
MAX_MALFORMED = 16  # malformed messages tolerated before we hang up
# Our own decoder's bugs are logged with their traceback this many times per
# connection, then only counted: a peer that found input which trips one
# must not be able to fill the node's log at line rate.
MAX_LOGGED_DECODER_BUGS = 3
READ_SIZE = 256 * 1024
_USEFUL_ANSWERS = (Block, AuditProof)  # answers that count for `answers` (eviction, admission)


class RequestFailed(P2PError):
    """The peer answered a request with ERROR, or the connection closed first."""

    def __init__(self, message: str, code: int = 0, timed_out: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.timed_out = timed_out


class SendBudget:
    """Bytes a connection may hold for its peer before they reach the socket.

    `acquire(n)` waits until `n` more bytes fit (a request larger than the
    whole budget takes the whole budget); `release(n)` gives them back.
    """

    def __init__(self, limit: int) -> None:
        if limit < L.MAX_FRAME_BYTES:
            raise P2PError(f"a send budget below one frame ({L.MAX_FRAME_BYTES} bytes) could never send a block")
        self.limit = limit
        self.used = 0
        self._changed = trio.Event()

    async def acquire(self, n: int) -> int:
        """Wait for room for `n` bytes; returns what was taken (release exactly that)."""
        n = min(n, self.limit)
        while self.used + n > self.limit:
            await self._changed.wait()
        self.used += n
        return n

    def release(self, n: int) -> None:
        self.used -= n
        self._changed.set()
        self._changed = trio.Event()


class _Pending:
    """Collects the responses to one request until it is complete."""

    def __init__(self, request: Message, channel: "_Channel") -> None:
        self.request = request
        self.channel = channel  # its answers come on this channel only
        self.allowed = RESPONSES.get(type(request), ())
        want = getattr(request, "cids", None)
        self.remaining: set[bytes] | None = set(want) if want is not None else None
        self.responses: list[Message] = []
        self.done = trio.Event()
        self.error: RequestFailed | None = None

    def add(self, msg: Message) -> bool:
        """Take one response; False if it answers nothing still asked (dropped).

        A response about CIDs the request did not name, or already answered,
        is never kept: kept, a peer could stream blocks under one request id
        and grow `responses` for as long as the request waits.
        """
        if isinstance(msg, Error):
            self.error = RequestFailed(msg.message or "peer error", msg.code)
            self.done.set()
            return True
        if self.remaining is None:
            self.responses.append(msg)
            self.done.set()
            return True
        answered = getattr(msg, "cids", None)
        if answered is None:
            answered = (getattr(msg, "cid"),)
        if self.remaining.isdisjoint(answered):
            return False
        self.responses.append(msg)
        self.remaining.difference_update(answered)
        if not self.remaining:
            self.done.set()
        return True

    def fail(self, why: str) -> None:
        if not self.done.is_set():
            self.error = RequestFailed(why)
            self.done.set()


_SERVING: ContextVar["_Channel | None"] = ContextVar("shoal_serving_channel", default=None)
"""The channel of the request the current task serves: `reply` answers on it."""


class _Channel:
    """One stream of a connection and the protocol it carries (None: every one)."""

    def __init__(self, stream: trio.abc.Stream, protocol: str | None) -> None:
        self.stream = stream
        self.protocol = protocol
        self.send_lock = trio.Lock()
        self.write_scope: trio.CancelScope | None = None  # the frame being written, if any
        self.closed = False

    def carries(self, kind: type[Message]) -> bool:
        return self.protocol is None or carries(self.protocol, kind)

    @property
    def name(self) -> str:
        return self.protocol or "the connection"


class PeerConnection:
    """Request/response multiplexing over a peer's streams (one per Shoal protocol).

    `stream` is the session stream; `protocol` is what it carries (None: a
    bare byte stream that carries every message, with no other channel: tests
    and tools drive the multiplexing that way). With `open_stream`, a
    request of another protocol opens that protocol's stream on first use;
    the peer's streams come in through `accept_stream`.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        remote_peer: PeerId,
        handler: Handler,
        *,
        protocol: str | None = None,
        open_stream: StreamOpener | None = None,
        max_inflight_in: int = L.MAX_INFLIGHT_REQUESTS_PER_PEER,
        max_inflight_out: int = L.MAX_INFLIGHT_REQUESTS_PER_PEER,
        send_budget: int = L.SEND_BUDGET_BYTES,
        stall_timeout: float = L.SEND_STALL_TIMEOUT_S,
    ) -> None:
        self.remote_peer = remote_peer
        self._handler = handler
        self._main = _Channel(stream, protocol)
        # Our channel per protocol (the stream our requests of it go on: ours,
        # or the peer's if it opened one first) and the peer's own channels (at
        # most one live per protocol).
        self._channels: dict[str, _Channel] = {protocol: self._main} if protocol is not None else {}
        self._inbound: dict[str, _Channel] = {}
        self._all_channels: set[_Channel] = {self._main}
        self._open_stream = open_stream
        self._opening: dict[str, trio.Lock] = {}
        self.refused_protocols: set[str] = set()  # the peer answered `na`: not asked again
        self._nursery: trio.Nursery | None = None
        self._stop = trio.CancelScope()  # ends `run` (a channel's fatal error)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._out_slots = trio.Semaphore(max_inflight_out)
        self._in_slots = trio.Semaphore(max_inflight_in)
        self._closed = trio.Event()
        self._malformed = 0
        self.decoder_bugs = 0  # messages our own decoder failed on (bugs of ours, not the peer's)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.remote_hello: Message | None = None
        self.hello_received = trio.Event()
        self.send_budget = SendBudget(send_budget)
        self._stall_timeout = stall_timeout
        self.stalled = False  # closed because the peer stopped reading
        # For eviction (shoal.p2p.net.admission): when a message last went either way,
        # and how many of our requests the peer answered with data (a block, a proof).
        self.opened_at = trio.current_time()
        self.last_activity = self.opened_at
        self._last_received = self.opened_at
        self.answers = 0

    @property
    def stream(self) -> trio.abc.Stream:
        """The session stream."""
        return self._main.stream

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def protocols_open(self) -> list[str]:
        """The protocols with a live channel (ours or the peer's), for tests and stats."""
        return sorted({channel.protocol for channel in self._all_channels if channel.protocol and not channel.closed})

    def next_request_id(self) -> int:
        rid = next(self._ids)
        if rid > L.MAX_REQUEST_ID:  # after four billion requests, start again
            self._ids = itertools.count(2)
            rid = 1
        return rid

    async def send(self, msg: Message) -> None:
        """Send `msg` on the channel of its protocol (Hello, unsolicited messages)."""
        kind = type(msg)
        channel = self._main
        if self._main.protocol is not None and not self._main.carries(kind):
            found = self._channels.get(protocol_of(kind) or "")
            if found is None or found.closed:
                raise P2PError(f"no {protocol_of(kind)} stream to {self.remote_peer} for a {kind.__name__}")
            channel = found
        await self._send_on(channel, msg)

    async def _send_on(self, channel: _Channel, msg: Message) -> None:
        parts = encode_frame_parts(codec.encode_parts(msg))
        send_parts = getattr(channel.stream, "send_all_parts", None)
        async with channel.send_lock:
            if self._closed.is_set() or channel.closed:
                raise trio.ClosedResourceError("connection closed")
            # A caller cancelled before the frame starts sends nothing (the
            # lock may have been handed over while the cancel was pending).
            await trio.lowlevel.checkpoint_if_cancelled()
            # Once started, the frame goes out whole whatever happens to the
            # caller: a send cut short by the caller's cancellation (a fetch
            # whose HTTP client left, a Ctrl-C'd `shoal get`) left half a
            # frame on the wire, or Noise nonces used by frames never sent,
            # and the peer hung up at the next frame ("failed
            # authentication"): every other request on the connection failed
            # with it, and the next fetch found no holder. Only the stall
            # timeout or the connection's own teardown (`_abort_writes`) ends
            # the write early; either closes the connection.
            with trio.CancelScope(shield=True) as write:
                channel.write_scope = write
                try:
                    with trio.move_on_after(self._stall_timeout) as stall:
                        if send_parts is not None:  # SecureStream: encrypts the parts without joining them
                            await send_parts(parts)
                        else:
                            await channel.stream.send_all(b"".join(parts))
                finally:
                    channel.write_scope = None
            if write.cancelled_caught:
                raise trio.ClosedResourceError("connection closed during a send")
            if stall.cancelled_caught:
                # Part of a frame may be on the wire: the stream is unusable.
                # A peer that stops reading one of its streams stops them all.
                self.stalled = True
                log.info("closing connection to %s: a send on %s made no progress for %gs (peer not reading)",
                         self.remote_peer, channel.name, self._stall_timeout)
                await self.aclose()
                raise trio.BrokenResourceError("send stalled: the peer is not reading")
        self.bytes_sent += sum(len(p) for p in parts)
        self.last_activity = trio.current_time()

    async def reply(self, msg: Message) -> bool:
        """Send a reply from a handler, on the channel its request came on;
        False if the connection is gone (stop working for it)."""
        channel = _SERVING.get()
        if channel is None or channel not in self._all_channels:
            await self._try_send_any(msg)
        else:
            await self._try_send(msg, channel)
        return not self.closed and not (channel is not None and channel.closed)

    async def request(self, make: Callable[[int], Message], timeout: float = L.REQUEST_TIMEOUT_S) -> list[Message]:
        """Send `make(request_id)` on its protocol's channel and wait for its complete answer.

        Raises RequestFailed on ERROR, timeout or a closed connection, and
        (code UNKNOWN_TYPE) when the peer does not speak the protocol.
        """
        if self.closed:
            raise RequestFailed("connection closed")
        deadline = trio.current_time() + timeout
        async with self._out_slots:
            rid = self.next_request_id()
            msg = make(rid)
            channel = await self._channel_for(type(msg), deadline)
            pending = _Pending(msg, channel)
            self._pending[rid] = pending
            try:
                await self._send_on(channel, msg)
                with trio.move_on_at(deadline) as scope:
                    await pending.done.wait()
                if scope.cancelled_caught:
                    raise RequestFailed(f"{type(msg).__name__} timed out after {timeout:g}s", timed_out=True)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise RequestFailed(f"connection lost: {exc}") from None
            finally:
                self._pending.pop(rid, None)
            if pending.error is not None:
                raise pending.error
            return pending.responses

    async def _channel_for(self, kind: type[Message], deadline: float) -> _Channel:
        """The channel that carries `kind`, opening its protocol's stream on first use."""
        main = self._main
        if main.carries(kind):
            return main
        protocol = protocol_of(kind)
        assert protocol is not None  # ERROR is carried by every channel
        channel = self._channels.get(protocol)
        if channel is not None and not channel.closed:
            return channel
        if protocol in self.refused_protocols:
            raise RequestFailed(f"the peer does not speak {protocol}", ErrorCode.UNKNOWN_TYPE)
        if self._open_stream is None or self._nursery is None:
            raise RequestFailed(f"no {protocol} stream to {self.remote_peer}")
        if self.remote_hello is None:
            raise RequestFailed(f"no {protocol} stream before the peer's Hello")
        async with self._opening.setdefault(protocol, trio.Lock()):
            channel = self._channels.get(protocol)  # opened while we waited (by us or the peer)
            if channel is not None and not channel.closed:
                return channel
            with trio.move_on_at(deadline) as scope:
                try:
                    stream = await self._open_stream(protocol)
                except (P2PError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise RequestFailed(f"cannot open {protocol}: {exc}") from None
            if scope.cancelled_caught:
                raise RequestFailed(f"opening {protocol} timed out", timed_out=True)
            if stream is None:
                self.refused_protocols.add(protocol)
                raise RequestFailed(f"the peer does not speak {protocol}", ErrorCode.UNKNOWN_TYPE)
            if self.closed:
                await trio.aclose_forcefully(stream)
                raise RequestFailed("connection closed")
            channel = _Channel(stream, protocol)
            self._channels[protocol] = channel
            self._all_channels.add(channel)
            self._nursery.start_soon(self._run_channel, channel)
            return channel

    async def accept_stream(self, stream: trio.abc.Stream, protocol: str) -> bool:
        """Serve a stream of `protocol` the peer opened, until it or the connection ends.

        False at once (the caller resets the stream) if the connection is
        gone, if the peer's Hello has not come within the Hello timeout (no
        other protocol before the session's Hello), or if the peer already
        has a live stream of that protocol.
        """
        if self.closed or self._nursery is None or self._main.protocol is None:
            return False
        if self.remote_hello is None:
            with trio.move_on_after(L.HELLO_TIMEOUT_S):
                await self.hello_received.wait()
        if self.remote_hello is None or self.closed:
            return False
        live = self._inbound.get(protocol)
        if protocol == self._main.protocol or (live is not None and not live.closed):
            return False
        channel = _Channel(stream, protocol)
        self._inbound[protocol] = channel
        self._all_channels.add(channel)
        ours = self._channels.get(protocol)
        if ours is None or ours.closed:
            self._channels[protocol] = channel  # our requests of it ride the peer's stream
        await self._run_channel(channel)
        return True

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and dispatch until the connection ends; then fail what waits."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                # Caught here, inside the nursery: anything that escapes a
                # nursery body arrives wrapped in an ExceptionGroup, which
                # plain `except` clauses outside would not match — and a peer
                # dying mid-frame would then take the whole node down.
                with self._stop:
                    try:
                        await self._read_loop(self._main, nursery)
                    except (RemoteProtocolError, DecryptError) as exc:
                        # (DecryptError: a frame that fails authentication, tampered
                        # with or a peer's bug: worth a line, not a debug message)
                        log.info("closing connection to %s: %s", self.remote_peer, exc)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError) as exc:
                        log.debug("connection to %s ended: %s", self.remote_peer, exc)
                    finally:
                        # Ended or cancelled (node shutdown): a reply being written
                        # is shielded from the cancel below; stop it too, or the
                        # nursery would wait for it up to the stall timeout.
                        self._closed.set()
                        self._abort_writes()
                nursery.cancel_scope.cancel()
        finally:
            self._closed.set()
            for pending in list(self._pending.values()):
                pending.fail("connection closed")
            with trio.CancelScope(shield=True):
                for channel in list(self._all_channels):
                    channel.closed = True
                    await trio.aclose_forcefully(channel.stream)

    async def _run_channel(self, channel: _Channel) -> None:
        """Read one protocol's channel until it ends; a peer's fault on it ends the connection."""
        try:
            assert self._nursery is not None
            await self._read_loop(channel, self._nursery)
        except (RemoteProtocolError, DecryptError) as exc:
            log.info("closing connection to %s (on %s): %s", self.remote_peer, channel.name, exc)
            self._closed.set()
            self._abort_writes()
            self._stop.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError) as exc:
            log.debug("%s stream of %s ended: %s", channel.name, self.remote_peer, exc)
        finally:
            self._drop_channel(channel)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(channel.stream)

    def _drop_channel(self, channel: _Channel) -> None:
        """A channel ended: forget it and fail the requests waiting on it (the next one reopens it)."""
        channel.closed = True
        self._all_channels.discard(channel)
        if channel.write_scope is not None:
            channel.write_scope.cancel()
        for table in (self._channels, self._inbound):
            if channel.protocol is not None and table.get(channel.protocol) is channel:
                del table[channel.protocol]
                if table is self._channels:
                    other = self._inbound.get(channel.protocol)
                    if other is not None and other is not channel and not other.closed:
                        self._channels[channel.protocol] = other
        for pending in list(self._pending.values()):
            if pending.channel is channel:
                pending.fail(f"the {channel.name} stream closed")

    async def _read_loop(self, channel: _Channel, nursery: trio.Nursery) -> None:
        decoder = FrameDecoder()
        stream = channel.stream
        # A SecureStream or YamuxStream hands over its chunks unjoined; the
        # frame decoder keeps views of them, so a block is copied once, when
        # its frame completes.
        receive_parts = getattr(stream, "receive_some_parts", None)
        # A yamux stream wakes us only once the frame in progress can be
        # complete (or its end came): not once per piece its connection
        # reads, a task switch each (a 1 MiB block arrives in many).
        yamux = stream if isinstance(stream, YamuxStream) else None
        main = channel is self._main
        chunks: Sequence[bytes | bytearray]
        while True:
            # Only the session channel times the connection out, and only when
            # no channel received anything for the idle timeout.
            with trio.move_on_after(L.IDLE_TIMEOUT_S if main else float("inf")) as idle:
                if yamux is not None:
                    chunks = await yamux.receive_some_parts(decoder.wanted)
                elif receive_parts is not None:
                    chunks = await receive_parts()
                else:
                    data = await stream.receive_some(READ_SIZE)
                    chunks = [data] if data else []
            if idle.cancelled_caught:
                if self._pending or trio.current_time() - self._last_received < L.IDLE_TIMEOUT_S:
                    continue
                return
            if not chunks:
                return
            self.last_activity = self._last_received = trio.current_time()
            for data in chunks:
                self.bytes_received += len(data)
                for payload in decoder.feed(data):
                    await self._dispatch(payload, channel, nursery)

    async def aclose(self) -> None:
        self._closed.set()
        self._abort_writes()
        for channel in list(self._all_channels):
            channel.closed = True
            await trio.aclose_forcefully(channel.stream)

    def _abort_writes(self) -> None:
        """The connection is going away: end the frames being written (shielded in `_send_on`)."""
        for channel in list(self._all_channels):
            if channel.write_scope is not None:
                channel.write_scope.cancel()

    async def _dispatch(self, payload: bytes, channel: _Channel, nursery: trio.Nursery) -> None:
        try:
            msg = codec.decode(payload)
        except RemoteProtocolError as exc:
            self._blame(exc)
            await self._try_send(Error(codec.error_request_id(exc), int(codec.error_code(exc)),
                                       str(exc)[: L.MAX_ERROR_MESSAGE_BYTES // 2]), channel)
            return
        except DecoderBug as exc:
            # Our bug, not the peer's: say so (INTERNAL, retryable elsewhere),
            # keep the traceback for us, and do not count it against the peer.
            self.decoder_bugs += 1
            if self.decoder_bugs <= MAX_LOGGED_DECODER_BUGS:
                log.error("%s (message from %s)", exc, self.remote_peer, exc_info=exc.__cause__ or exc)
                if self.decoder_bugs == MAX_LOGGED_DECODER_BUGS:
                    log.error("further decoder errors on the connection from %s are counted, not logged",
                              self.remote_peer)
            await self._try_send(Error(exc.request_id, ErrorCode.INTERNAL, "internal error decoding the message"),
                                 channel)
            return
        kind = type(msg)
        if not channel.carries(kind):
            # Each protocol's messages on its own stream: anything else there
            # is malformed input, answered and counted as such.
            self._blame(RemoteProtocolError(f"a {kind.__name__} on {channel.name}"))
            if kind.ROLE == "request":
                await self._try_send(Error(msg.request_id, ErrorCode.UNEXPECTED,
                                           f"{kind.__name__} belongs on {protocol_of(kind)}, not {channel.name}"), channel)
            return
        if kind.ROLE == "hello":
            if self.remote_hello is None:
                self.remote_hello = msg
                self.hello_received.set()
            else:
                self._blame(RemoteProtocolError("a second Hello on one connection"))
            return
        if kind.ROLE == "request":
            if self.remote_hello is None:
                await self._try_send(Error(msg.request_id, ErrorCode.UNEXPECTED, "request before Hello"), channel)
                return
            if self._in_slots.value == 0:
                await self._try_send(Error(msg.request_id, ErrorCode.BUSY, "too many requests in flight"), channel)
                return
            await self._in_slots.acquire()
            nursery.start_soon(self._serve, msg, channel)
            return
        pending = self._pending.get(msg.request_id)
        if pending is not None and pending.channel is not channel:
            self._blame(RemoteProtocolError(f"a {kind.__name__} on another stream than its request's"))
            return
        if pending is None or (pending.allowed and kind not in pending.allowed):
            if msg.request_id == 0 or pending is None:
                return  # unsolicited or late (after a timeout): drop quietly
            self._blame(RemoteProtocolError(f"a {kind.__name__} in answer to a request that cannot have it"))
            return
        first = not pending.responses and pending.error is None
        if not pending.add(msg):
            self._blame(RemoteProtocolError("a response about a CID never asked for"))
            return
        if first and isinstance(msg, _USEFUL_ANSWERS):
            # The peer sent data we asked for: it is of use to us. Not a Pong,
            # Peers, Have: any throwaway key answers the node's own peer
            # exchange with those, and would rank with the peers that serve us.
            self.answers += 1

    def _blame(self, exc: RemoteProtocolError) -> None:
        """Count one misbehaviour of the peer (on any channel); past MAX_MALFORMED, hang up (raise `exc`)."""
        self._malformed += 1
        if self._malformed > MAX_MALFORMED:
            raise RemoteProtocolError(f"more than {MAX_MALFORMED} malformed or unexpected messages; "
                                      f"the last: {exc}") from exc

    async def _serve(self, msg: Message, channel: _Channel) -> None:
        token = _SERVING.set(channel)
        try:
            try:
                replies = await self._handler(self, msg)
            except P2PError as exc:
                replies = [Error(msg.request_id, ErrorCode.REFUSED, str(exc)[:500])]
            except Exception:  # a bug in a handler must not kill the connection
                log.exception("handler failed for %s", type(msg).__name__)
                replies = [Error(msg.request_id, ErrorCode.INTERNAL, "internal error")]
            for reply in replies:
                await self._try_send(reply, channel)
        finally:
            _SERVING.reset(token)
            self._in_slots.release()

    async def _try_send(self, msg: Message, channel: _Channel) -> None:
        try:
            await self._send_on(channel, msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except P2PError as exc:  # e.g. a reply too big for one frame: our bug, not the peer's
            log.warning("could not send %s to %s: %s", type(msg).__name__, self.remote_peer, exc)

    async def _try_send_any(self, msg: Message) -> None:
        try:
            await self.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except P2PError as exc:
            log.warning("could not send %s to %s: %s", type(msg).__name__, self.remote_peer, exc)
