"""Trio driver: a libp2p connection (Noise + yamux) and its negotiated streams.

The upgrade follows js-libp2p's and go-libp2p's order exactly:

    TCP -> [pnet protector, with a swarm key] -> multistream-select `/noise`
        (or Shoal's AES-GCM Noise first, see shoal.p2p.secure.cipher_choice)
        -> Noise XX (libp2p payload) -> multistream-select `/yamux/1.0.0`
        -> yamux session -> one yamux stream per protocol, each negotiated
           by multistream-select (the opener is the dialer of that stream)

The connection's dialer is the multistream dialer of both upgrades, the
Noise initiator and the yamux client (odd stream ids).

Tasks (one nursery, owned by `Libp2pConnection.run`): a reader feeds the
sans-IO `YamuxSession` and routes its events to stream objects, a writer
sends whatever the session queued (so no task that reads ever blocks on a
send), and one task per inbound stream runs multistream-select as listener
and then the registered handler. Backpressure: a stream buffers at most its
receive window (the session grants credit only for bytes the application
has read), and senders wait while more than `MAX_QUEUED` bytes wait for the
writer or the peer's window is exhausted.

All protocol decisions live in `multistream` and `yamux`; this module only
moves bytes, owns the clock (negotiation timeouts) and the tasks.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Mapping, Sequence

import trio

from shoal.p2p.errors import (
    HandshakeError, LocalProtocolError, P2PError, ProtocolError, RemoteProtocolError,
)
from shoal.p2p.libp2p import multistream as mss
from shoal.p2p.libp2p.yamux import (
    DEFAULT_WINDOW, GoAwayCode, GoAwayReceived, PingAnswered, StreamData, StreamEnded, StreamOpened,
    StreamReset, WindowIncreased, YamuxSession,
)
from shoal.p2p.secure.cipher_choice import NOISE_PROTOCOL, cipher_for, security_protocols
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.secure.pnet_stream import protect
from shoal.p2p.secure.secure_stream import (
    DEFAULT_HANDSHAKE_TIMEOUT, SecureStream, secure_accept, secure_dial,
)

__all__ = [
    "NOISE_PROTOCOL",
    "YAMUX_PROTOCOL",
    "Libp2pConnection",
    "NegotiationFailed",
    "StreamHandler",
    "YamuxStream",
    "upgrade_inbound",
    "upgrade_outbound",
]

log = logging.getLogger("shoal.libp2p")

YAMUX_PROTOCOL = "/yamux/1.0.0"
NEGOTIATION_TIMEOUT = 10.0
MAX_QUEUED = 4 * 1024 * 1024
"""Bytes stream senders may queue for the writer before they wait. The
queue holds views of the senders' own buffers (no copy), so this bounds how
much one writer round encrypts, not memory; it is above Shoal's largest
frame (a 2 MiB block and its envelope), so a block reaches the writer in one
round (at 1 MiB, a 1 MiB block's last bytes went in a second round of
their own: a tiny Noise frame and one more send and wake-up per block)."""

StreamHandler = Callable[["YamuxStream"], Awaitable[None]]


class NegotiationFailed(P2PError):
    """multistream-select ended without a common protocol."""

    hint = "the peer does not speak that protocol (or refused it)"


class PrefixedStream(trio.abc.Stream):
    """`inner`, with `prefix` returned first: bytes a negotiation read past its end."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self._prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            n = len(self._prefix) if max_bytes is None else max_bytes
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            await trio.lowlevel.checkpoint()
            return out
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _run_negotiation(
    stream: trio.abc.Stream, machine: mss.Dialer | mss.Listener
) -> mss.Selected:
    """Drive one multistream-select machine over `stream` to its outcome."""
    while True:
        out = machine.data_to_send()
        if out:
            await stream.send_all(out)
        data = await stream.receive_some(mss.MAX_MESSAGE)
        if not data:
            raise RemoteProtocolError("connection closed during multistream-select")
        event = machine.receive_data(data)
        if isinstance(event, mss.Selected):
            out = machine.data_to_send()
            if out:
                await stream.send_all(out)
            return event
        if isinstance(event, mss.Rejected):
            raise NegotiationFailed(f"peer supports none of {list(event.proposed)}")


async def select_protocol(
    stream: trio.abc.Stream, protocols: Sequence[str], timeout: float = NEGOTIATION_TIMEOUT
) -> mss.Selected:
    """multistream-select as dialer; NegotiationFailed or ProtocolError on failure."""
    with trio.fail_after(timeout):
        return await _run_negotiation(stream, mss.Dialer(protocols))


async def accept_protocol(
    stream: trio.abc.Stream, supported: Sequence[str], timeout: float = NEGOTIATION_TIMEOUT
) -> mss.Selected:
    """multistream-select as listener."""
    with trio.fail_after(timeout):
        return await _run_negotiation(stream, mss.Listener(supported))


class YamuxStream(trio.abc.HalfCloseableStream):
    """One yamux stream: a half-closeable trio stream with window backpressure.

    `receive_some` returns b"" after the peer's FIN; after the peer's RST
    (or the connection's end) it raises `trio.BrokenResourceError`.
    `send_eof` sends FIN; `aclose` sends FIN if not yet sent and discards
    later data; `reset` aborts both directions.
    """

    def __init__(self, conn: "Libp2pConnection", stream_id: int, inbound: bool) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.inbound = inbound
        self.protocol = ""
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._uncredited = 0  # unread bytes already granted back once
        self._eof = False
        self._reset = False
        self._sent_eof = False
        self._closed = False
        self._sending = False
        self._receiving = False
        # Set when this stream's reader may go on (data, EOF, reset, close,
        # the connection's end): its own wake-up, so a read on one stream
        # does not wake the readers of every other stream of the connection.
        self._readable: trio.Event | None = None
        self._wake_at = 1  # buffered bytes that wake the waiting reader (`at_least`)

    def _check_send(self) -> None:
        if self._closed or self._sent_eof:
            raise trio.ClosedResourceError("stream closed for sending")
        if self._reset:
            raise trio.BrokenResourceError("stream was reset")
        if self.conn.closed:
            raise trio.BrokenResourceError("connection closed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.send_all_parts((data,))

    async def send_all_parts(
        self, parts: "tuple[bytes | bytearray | memoryview, ...] | list[bytes | bytearray | memoryview]"
    ) -> None:
        """Send the concatenation of `parts` without joining them (Shoal's
        frames: a header and a block's bytes); as `send_all` of their join."""
        self._check_send()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            conn, session = self.conn, self.conn.session
            views = [v for v in (memoryview(data).cast("B") for data in parts) if len(v)]
            total = sum(map(len, views))
            while views:
                self._check_send()
                room = min(session.send_window(self.stream_id), MAX_QUEUED - conn.queued)
                if room <= 0:
                    await conn.wait_change()
                    continue
                # No copy: the queue holds views of `parts`, and this call does
                # not return before the writer has sent them (below). One
                # call for all parts: a frame's header and its block share
                # one yamux frame and one writer round.
                taken = session.send_data_parts(self.stream_id, views, room)
                conn.queued += taken
                conn.queued_gen += 1
                conn.wake_writer()
                while taken:
                    head = views[0]
                    if len(head) <= taken:
                        taken -= len(head)
                        del views[0]
                    else:
                        views[0] = head[taken:]
                        taken = 0
            if not total:
                await trio.lowlevel.checkpoint()
            mine = conn.queued_gen if total else 0
            while conn.sent_gen < mine:
                if conn.closed:
                    raise trio.BrokenResourceError("connection closed")
                await conn.wait_change()
        finally:
            self._sending = False

    def grow_window(self, window: int) -> None:
        """Let the peer have up to `window` bytes in flight on this stream (see
        `YamuxSession.grow_window`): for a stream that is always read."""
        if not self.conn.closed and not self._reset:
            self.conn.session.grow_window(self.stream_id, window)
            self.conn.wake_writer()

    async def wait_send_all_might_not_block(self) -> None:
        while self.conn.session.send_window(self.stream_id) == 0 and not (
                self._reset or self.conn.closed or self._sent_eof or self._closed):
            await self.conn.wait_change()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        parts = await self._receive(max_bytes)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def receive_some_parts(self, at_least: int = 1) -> list[bytes]:
        """Everything buffered, as the chunks it arrived in (not joined): [] at EOF.

        For a reader that splits its own frames out of the chunks (Shoal's
        frame decoder keeps views of them): a 1 MiB block is then copied
        once, when its frame completes, not again to join the chunks.

        `at_least`: wait until that many bytes are buffered (or EOF, reset,
        close: then whatever there is), so a reader that needs the rest of a
        frame is woken once for it, not once per piece the connection reads
        (a task switch each). Capped at half the stream's receive window,
        which the peer can always fill without more credit: never a wait for
        bytes the window does not let the peer send.
        """
        return await self._receive(None, at_least)

    async def _receive(self, max_bytes: int | None, at_least: int = 1) -> list[bytes]:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            waited = False
            if at_least > 1:
                at_least = min(at_least, self.conn.session.receive_window_of(self.stream_id) // 2)
            while self._buffered < at_least and not (
                    self._buffered and (self._eof or self._reset or self._closed or self.conn.closed)):
                if self._closed and not self._reset:
                    # Closed by another task while this one waited (as a trio
                    # socket does): the reader must not wait for data forever.
                    raise trio.ClosedResourceError("stream closed")
                if self._reset:
                    raise trio.BrokenResourceError("stream was reset")
                if self._eof:
                    await trio.lowlevel.checkpoint()
                    return []
                if self.conn.closed:
                    raise trio.BrokenResourceError("connection closed")
                readable = self._readable = trio.Event()
                self._wake_at = at_least
                await readable.wait()
                waited = True
            out = self._take(max_bytes)
            n = sum(map(len, out))
            again = min(self._uncredited, n)
            self._uncredited -= again
            session = self.conn.session
            session.consumed(self.stream_id, n - again)
            if session.has_data_to_send:  # a window update (at half a window): not every read
                self.conn.wake_writer()
            if not waited:  # the wait was this call's checkpoint: not a second task switch
                await trio.lowlevel.checkpoint()
            return out
        finally:
            self._receiving = False

    def _take(self, max_bytes: int | None) -> list[bytes]:
        """Up to `max_bytes` from the front, as whole chunks plus at most one
        split one: never a join of the whole buffer (which may hold a 16 MiB
        window, read 256 KiB at a time)."""
        chunks = self._chunks
        if max_bytes is None or max_bytes >= self._buffered:
            out = chunks
            self._chunks = []
            self._buffered = 0
            return out
        taken: list[bytes] = []
        need = max_bytes
        i = 0
        while need:
            head = chunks[i]
            if len(head) <= need:
                taken.append(head)
                need -= len(head)
                i += 1
            else:
                taken.append(head[:need])
                chunks[i] = head[need:]
                need = 0
        del chunks[:i]
        self._buffered -= max_bytes
        return taken

    def _wake_reader(self) -> None:
        readable = self._readable
        if readable is not None:
            self._readable = None
            self._wake_at = 1
            readable.set()

    def _deliver(self, data: bytes) -> None:
        if self._closed:  # nobody will read it: grant the credit back at once
            self.conn.session.consumed(self.stream_id, len(data))
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= self._wake_at:
            self._wake_reader()

    def unread(self, data: bytes) -> None:
        """Put back bytes a negotiation read past its end (not credited again)."""
        if data:
            self._chunks.insert(0, data)
            self._buffered += len(data)
            self._uncredited += len(data)

    def _fin(self) -> None:
        if self._sent_eof or self._closed:
            return
        self._sent_eof = True
        if not self._reset and not self.conn.closed and self.conn.session.is_open(self.stream_id):
            self.conn.session.send_fin(self.stream_id)
            self.conn.wake_writer()

    async def send_eof(self) -> None:
        self._fin()
        await trio.lowlevel.checkpoint()

    def reset(self) -> None:
        """Abort both directions at once (RST)."""
        if not self._reset:
            self._reset = True
            self._closed = True
            if not self.conn.closed:
                self.conn.session.reset(self.stream_id)
                self.conn.wake_writer()
            self.conn.forget(self)
            self._wake_reader()  # a task waiting in receive_some sees it
            self.conn._notify()  # and one waiting in send_all

    async def aclose(self) -> None:
        # Everything happens before the one checkpoint at the end, so a
        # cancelled close (trio.aclose_forcefully) still closes.
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._fin()
        self._closed = True
        self._wake_reader()  # a task waiting in receive_some gets ClosedResourceError
        self.conn._notify()  # one waiting in send_all sees the close too
        # Credit back what was never read, so the peer's sender is not stuck.
        if self._buffered > self._uncredited and not self.conn.closed:
            self.conn.session.consumed(self.stream_id, self._buffered - self._uncredited)
            self.conn.wake_writer()
        self._chunks.clear()
        self._buffered = 0
        if self._eof:
            self.conn.forget(self)
        await trio.lowlevel.checkpoint()


class Libp2pConnection:
    """A secured, multiplexed connection. Start `run` in a nursery, then use it."""

    def __init__(
        self,
        secure: SecureStream,
        *,
        is_client: bool,
        handlers: Mapping[str, StreamHandler],
        leftover: bytes = b"",
        remote_addr: tuple[str, int] | None = None,
        local_addr: tuple[str, int] | None = None,
        max_inbound_streams: int = 256,
        receive_window: int = DEFAULT_WINDOW,
    ) -> None:
        self.secure = secure
        self.session = YamuxSession(is_client, max_inbound_streams=max_inbound_streams,
                                    receive_window=receive_window)
        self.handlers = handlers  # the registry may be shared (a host's) and grow
        self.remote_peer: PeerId = secure.remote_peer
        self.remote_addr = remote_addr
        self.local_addr = local_addr
        self.queued = 0
        self.queued_gen = 0  # stream sends queued so far (counted per send_data)
        self.sent_gen = 0  # of those, how many the writer has handed to the transport
        self.closed = False
        self.go_away_code: int | None = None
        self._leftover = leftover
        self._streams: dict[int, YamuxStream] = {}
        self._changed = trio.Event()
        self._closed_event = trio.Event()
        self._writer_wake = trio.Event()
        self._pings: dict[int, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._writing = False

    # -- small coordination primitives -------------------------------------------

    async def wait_change(self) -> None:
        """Wait until the next state change (window, sent, close...; not
        stream data: a stream's reader has a wake-up of its own)."""
        await self._changed.wait()

    async def wait_closed(self) -> None:
        """Wait until the connection has ended (not woken by its traffic)."""
        await self._closed_event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def wake_writer(self) -> None:
        self._writer_wake.set()

    def forget(self, stream: YamuxStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]

    # -- public API -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connection until either side closes it; cancels its stream handlers."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                task_status.started()
                try:
                    await self._reader()
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._shutdown()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.secure)

    async def open_stream(
        self, protocols: str | Sequence[str], timeout: float = NEGOTIATION_TIMEOUT
    ) -> YamuxStream:
        """A new stream, negotiated to the first of `protocols` the peer speaks."""
        if isinstance(protocols, str):
            protocols = [protocols]
        if self.closed:
            raise trio.BrokenResourceError("connection closed")
        sid = self.session.open_stream()
        stream = YamuxStream(self, sid, inbound=False)
        self._streams[sid] = stream
        self.wake_writer()
        try:
            selected = await select_protocol(stream, protocols, timeout)
        except BaseException:
            stream.reset()
            raise
        stream.protocol = selected.protocol
        stream.unread(selected.leftover)
        return stream

    async def ping_session(self, timeout: float = 10.0) -> float:
        """Round-trip time of a yamux-level ping, in seconds."""
        opaque = self.session.ping()
        done = self._pings[opaque] = trio.Event()
        self.wake_writer()
        start = trio.current_time()
        try:
            with trio.fail_after(timeout):
                while not done.is_set():
                    if self.closed:
                        raise trio.BrokenResourceError("connection closed")
                    await self.wait_change()
        finally:
            self._pings.pop(opaque, None)
        return trio.current_time() - start

    async def aclose(self) -> None:
        """GoAway(normal), flush, close the transport."""
        if self.closed:
            await trio.lowlevel.checkpoint()
            return
        self.session.go_away(GoAwayCode.NORMAL)
        with trio.move_on_after(2):
            await self._flush_now()
        self._shutdown()
        await trio.aclose_forcefully(self.secure)

    # -- tasks ---------------------------------------------------------------------------

    async def _flush_now(self) -> None:
        while (self.session.has_data_to_send or self._writing) and not self.closed:
            self.wake_writer()
            await self.wait_change()

    async def _writer(self) -> None:
        session = self.session
        while True:
            if not session.has_data_to_send:
                await self._writer_wake.wait()
                self._writer_wake = trio.Event()
                continue
            taking = self.queued_gen
            parts = session.data_to_send_parts()
            self.queued = 0
            self._writing = True
            try:
                await self.secure.send_all_parts(tuple(parts))
            except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError):
                self._shutdown()
                return
            finally:
                self._writing = False
            self.sent_gen = taking
            self._notify()

    async def _reader(self) -> None:
        parts: list[bytes] = [self._leftover] if self._leftover else []
        self._leftover = b""
        while True:
            if not parts:
                try:
                    # The decrypted Noise frames as they are: no join of up to 1 MiB.
                    parts = await self.secure.receive_some_parts()
                except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError) as exc:
                    log.debug("connection to %s broke: %s", self.remote_peer, exc)
                    return
                if not parts:
                    return
            try:
                self._feed(parts)
            except ProtocolError as exc:
                log.info("yamux protocol error from %s: %s", self.remote_peer, exc)
                # The session queued GoAway(protocol error): try to get it out.
                with trio.move_on_after(1):
                    await self._flush_now()
                return
            parts = []

    def _feed(self, parts: list[bytes]) -> None:
        events = self.session.receive_data_parts(parts)
        changed = False
        for event in events:
            if type(event) is StreamData:
                # A stream's data wakes its own reader (`_deliver`), nobody else.
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._deliver(event.data)
                else:
                    self.session.consumed(event.stream_id, len(event.data))
                continue
            changed = True
            if isinstance(event, StreamOpened):
                self._accept(event.stream_id)
            elif isinstance(event, StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._eof = True
                    stream._wake_reader()
                    if stream._closed:
                        self.forget(stream)
            elif isinstance(event, StreamReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._reset = True
                    stream._wake_reader()
            elif isinstance(event, PingAnswered):
                ev = self._pings.get(event.opaque)
                if ev is not None:
                    ev.set()
            elif isinstance(event, GoAwayReceived):
                self.go_away_code = event.code
            elif isinstance(event, WindowIncreased):
                pass  # the notify below wakes the senders
        if self.session.has_data_to_send:
            self.wake_writer()
        if changed:  # windows, opens, ends, resets, pings, GoAway: what `wait_change` waits for
            self._notify()

    def _accept(self, stream_id: int) -> None:
        stream = YamuxStream(self, stream_id, inbound=True)
        self._streams[stream_id] = stream
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_inbound, stream)

    async def _serve_inbound(self, stream: YamuxStream) -> None:
        try:
            selected = await accept_protocol(stream, sorted(self.handlers))
        except (trio.TooSlowError, ProtocolError, NegotiationFailed, LocalProtocolError,
                trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("inbound stream %d from %s: negotiation failed: %s",
                      stream.stream_id, self.remote_peer, exc)
            stream.reset()
            return
        stream.protocol = selected.protocol
        stream.unread(selected.leftover)
        try:
            await self.handlers[selected.protocol](stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError,
                trio.TooSlowError) as exc:
            log.debug("%s handler for %s ended: %s", selected.protocol, self.remote_peer, exc)
            stream.reset()
            return
        except Exception:
            log.exception("%s handler failed", selected.protocol)
            stream.reset()
            return
        await stream.aclose()

    def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in list(self._streams.values()):
            if not stream._eof:
                stream._reset = True
            stream._wake_reader()
        self._streams.clear()
        self._closed_event.set()
        self._notify()
        self._writer_wake.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


def _addr(stream: trio.abc.Stream, which: str) -> tuple[str, int] | None:
    """The (host, port) of a trio SocketStream under any wrappers, if there is one."""
    inner: object = stream
    for _ in range(8):
        sock = getattr(inner, "socket", None)
        if sock is not None:
            try:
                addr = sock.getpeername() if which == "peer" else sock.getsockname()
                return (str(addr[0]), int(addr[1]))
            except OSError:
                return None
        inner = getattr(inner, "transport", None) or getattr(inner, "inner", None)
        if inner is None:
            return None
    return None


async def _upgrade(
    tcp: trio.abc.Stream,
    identity: Identity,
    handlers: Mapping[str, StreamHandler],
    *,
    initiator: bool,
    expected_peer: PeerId | None,
    swarm_key: SwarmKey | None,
    timeout: float,
    receive_window: int,
    security: Sequence[str] | None,
) -> Libp2pConnection:
    raw = protect(tcp, swarm_key)
    # With a swarm key, most failures mean the peer holds another key or none: say so.
    note = "" if swarm_key is None else (
        f" (private swarm {swarm_key.fingerprint()}: does the peer hold the same swarm key?)")
    try:
        with trio.fail_after(timeout):
            if security is None:
                security = security_protocols()
            if initiator:
                chosen = await select_protocol(raw, security, timeout)
            else:
                chosen = await accept_protocol(raw, security, timeout)
            cipher = cipher_for(chosen.protocol)
            plain = PrefixedStream(raw, chosen.leftover) if chosen.leftover else raw
            if initiator:
                secure = await secure_dial(plain, identity, expected_peer, timeout=timeout, cipher=cipher)
                muxer = await select_protocol(secure, [YAMUX_PROTOCOL], timeout)
            else:
                secure = await secure_accept(plain, identity, timeout=timeout, cipher=cipher)
                muxer = await accept_protocol(secure, [YAMUX_PROTOCOL], timeout)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(raw)
        if isinstance(exc, trio.TooSlowError):
            raise HandshakeError(f"connection upgrade took longer than {timeout} s{note}") from None
        if isinstance(exc, RemoteProtocolError):
            raise HandshakeError(f"{exc}{note}") from None
        if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError)):
            raise HandshakeError(f"connection broke during the upgrade: {exc}{note}") from exc
        raise
    return Libp2pConnection(secure, is_client=initiator, handlers=handlers,
                            leftover=muxer.leftover, receive_window=receive_window,
                            remote_addr=_addr(tcp, "peer"), local_addr=_addr(tcp, "sock"))


async def upgrade_outbound(
    tcp: trio.abc.Stream,
    identity: Identity,
    handlers: Mapping[str, StreamHandler],
    *,
    expected_peer: PeerId | None = None,
    swarm_key: SwarmKey | None = None,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    receive_window: int = DEFAULT_WINDOW,
    security: Sequence[str] | None = None,
) -> Libp2pConnection:
    """Upgrade a dialled TCP stream as libp2p does; the caller then starts `run`.

    `security`: the Noise protocol ids to propose, in order (default: what
    `shoal.p2p.secure.cipher_choice.security_protocols` picks for this CPU).

    On failure the TCP stream is closed and a HandshakeError subclass is
    raised (PeerIdMismatch for the wrong peer; a timeout, malformed
    multistream-select or a broken connection become HandshakeError too,
    naming the swarm key when there is one), or NegotiationFailed when the
    peer speaks neither `/noise` nor `/yamux/1.0.0`.
    """
    return await _upgrade(tcp, identity, handlers, initiator=True, expected_peer=expected_peer,
                          swarm_key=swarm_key, timeout=timeout, receive_window=receive_window,
                          security=security)


async def upgrade_inbound(
    tcp: trio.abc.Stream,
    identity: Identity,
    handlers: Mapping[str, StreamHandler],
    *,
    swarm_key: SwarmKey | None = None,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    receive_window: int = DEFAULT_WINDOW,
    security: Sequence[str] | None = None,
) -> Libp2pConnection:
    """Upgrade an accepted TCP stream as the listener; errors as `upgrade_outbound`.

    `security`: the Noise protocol ids accepted (default as `upgrade_outbound`)."""
    return await _upgrade(tcp, identity, handlers, initiator=False, expected_peer=None,
                          swarm_key=swarm_key, timeout=timeout, receive_window=receive_window,
                          security=security)
