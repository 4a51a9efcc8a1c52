"""Sans-IO yamux session (hashicorp/yamux spec.md, as libp2p uses it).

Every frame starts with a 12-byte header: version (0), type, flags (16 bits),
stream id (32 bits), length (32 bits), all big-endian. Types: Data (length =
payload bytes), WindowUpdate (length = window delta), Ping (length = opaque
value, stream 0), GoAway (length = error code, stream 0). Flags: SYN opens a
stream, ACK accepts it (or answers a ping), FIN half-closes our direction,
RST aborts both. The dialer (client) uses odd stream ids, the listener even.

Flow control: each direction of each stream starts with a 256 KiB window.
Data may only be sent within the receiver's window; the receiver grants
more with WindowUpdate once the application has consumed half of it, so a
stream never buffers more than its window. A session may grant a larger
fixed window (`receive_window`, up to 16 MiB) with the SYN or ACK frame, as
go-yamux does, so one stream can fill a path with more than 256 KiB in flight. A peer sending past the window,
reusing a stream id, or sending a malformed frame has broken the protocol:
the session queues GoAway(protocol error) and raises `RemoteProtocolError`.

Bounds, before allocation: a Data frame longer than the stream's remaining
receive window is refused on its header; payloads are passed on as they
arrive, so the decoder holds at most a partial header; at most
`max_inbound_streams` streams opened by the peer at once (a further SYN is
answered with RST, as go-yamux does with a full backlog); a send window
never exceeds 2**32-1.

Usage, like h11: call methods (`open_stream`, `send_data`, `send_fin`,
`reset`, `consumed`, `ping`, `go_away`) and `receive_data(bytes)`, which
returns events; send whatever `data_to_send()` returns after either.
Deliberately not here: window auto-tuning (the window stays fixed),
keep-alive timers and any clock; the driver owns time.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, Union

from shoal.p2p.errors import LocalProtocolError, RemoteProtocolError
from shoal.p2p.secure.noise import MAX_PLAINTEXT

__all__ = [
    "DEFAULT_WINDOW",
    "HEADER_LEN",
    "Flag",
    "FrameType",
    "GoAwayCode",
    "GoAwayReceived",
    "PingAnswered",
    "StreamData",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
    "WindowIncreased",
    "YamuxSession",
    "encode_header",
]

VERSION: Final = 0
HEADER_LEN: Final = 12
DEFAULT_WINDOW: Final = 256 * 1024
MAX_WINDOW: Final = 2**32 - 1
MAX_SEND_FRAME: Final = 4 * MAX_PLAINTEXT - HEADER_LEN
"""Largest Data payload we send: header and payload fill exactly four Noise
frames, so a bulk sender's frames line up with Noise's 65519-byte plaintext
cut and no tiny Noise frame carries a frame's last bytes (one header per
~256 KiB instead of one per Noise frame)."""
MAX_RECEIVE_WINDOW: Final = 16 * 1024 * 1024
"""Largest receive window a session may grant per stream (go-yamux's cap)."""
DEFAULT_MAX_INBOUND: Final = 256
DEFAULT_MAX_OUTBOUND: Final = 1024
_HEADER: Final = struct.Struct(">BBHII")


class FrameType(enum.IntEnum):
    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3


class Flag(enum.IntFlag):
    NONE = 0
    SYN = 1
    ACK = 2
    FIN = 4
    RST = 8


# The flags and types as plain ints for the parser: `int & Flag.SYN` goes
# through enum's Python-level __and__ and builds a Flag, per frame (measured:
# ~18 000 calls per 512 MiB in an in-process loopback transfer).
_SYN: Final = int(Flag.SYN)
_ACK: Final = int(Flag.ACK)
_FIN: Final = int(Flag.FIN)
_RST: Final = int(Flag.RST)
_DATA: Final = int(FrameType.DATA)
_WINDOW_UPDATE: Final = int(FrameType.WINDOW_UPDATE)
_PING: Final = int(FrameType.PING)
_GO_AWAY: Final = int(FrameType.GO_AWAY)


class GoAwayCode(enum.IntEnum):
    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


def encode_header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    return _HEADER.pack(VERSION, ftype, flags, stream_id, length)


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened `stream_id` (we have accepted it: ACK is queued)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamData:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed: no more data will come on `stream_id`."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer (or a refused open) aborted `stream_id` in both directions."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class WindowIncreased:
    """We may send more on `stream_id` (its send window grew, or it was acked)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PingAnswered:
    opaque: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    code: int


Event = Union[StreamOpened, StreamData, StreamEnded, StreamReset, WindowIncreased,
              PingAnswered, GoAwayReceived]


class _Stream:
    __slots__ = ("send_window", "recv_window", "window", "unacked", "local_open", "remote_open",
                 "inbound", "need_ack")

    def __init__(self, inbound: bool, window: int = DEFAULT_WINDOW) -> None:
        self.send_window = DEFAULT_WINDOW
        self.recv_window = DEFAULT_WINDOW  # what the peer may still send us
        self.window = window  # the receive window we keep granting (session's, or grown)
        self.unacked = 0  # consumed by the application, not yet granted back
        self.local_open = True  # we have not sent FIN
        self.remote_open = True  # the peer has not sent FIN
        self.inbound = inbound
        self.need_ack = inbound  # our next frame on it must carry ACK


class YamuxSession:
    """One yamux session; `is_client` is the side that dialled the connection."""

    def __init__(
        self,
        is_client: bool,
        *,
        max_inbound_streams: int = DEFAULT_MAX_INBOUND,
        max_outbound_streams: int = DEFAULT_MAX_OUTBOUND,
        receive_window: int = DEFAULT_WINDOW,
    ) -> None:
        if not DEFAULT_WINDOW <= receive_window <= MAX_RECEIVE_WINDOW:
            raise LocalProtocolError("receive window must be 256 KiB .. 16 MiB")
        self.is_client = is_client
        self.receive_window = receive_window
        self.max_inbound_streams = max_inbound_streams
        self.max_outbound_streams = max_outbound_streams
        self._next_id = 1 if is_client else 2
        self._streams: dict[int, _Stream] = {}
        self._inbound_count = 0
        self._last_remote_id = 0
        self._outbox: list[bytes | memoryview] = []
        self._hdr = bytearray()  # a header split across feeds (< 12 bytes)
        self._left = 0  # payload bytes of the current Data frame still to come
        self._payload_stream: _Stream | None = None  # where they go (None: dropped)
        self._payload_sid = 0
        self._payload_flags = 0
        self._next_ping = 1
        self.local_go_away = False
        self.remote_go_away: int | None = None
        self.failed = False

    # -- what the application does -------------------------------------------

    def data_to_send(self) -> bytes:
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    def data_to_send_parts(self) -> list[bytes | memoryview]:
        """Like `data_to_send`, without joining (a writer that can send parts)."""
        out, self._outbox = self._outbox, []
        return out

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outbox)

    def open_stream(self) -> int:
        """Allocate a stream id and queue its SYN (a zero-delta WindowUpdate)."""
        self._check_alive()
        if self.local_go_away or self.remote_go_away is not None:
            raise LocalProtocolError("session is going away: no new streams")
        if len(self._streams) - self._inbound_count >= self.max_outbound_streams:
            raise LocalProtocolError("too many open outbound streams")
        if self._next_id > MAX_WINDOW:
            raise LocalProtocolError("stream ids exhausted")
        sid = self._next_id
        self._next_id += 2
        st = self._streams[sid] = _Stream(inbound=False, window=self.receive_window)
        # The SYN carries the growth of our receive window beyond the spec's 256 KiB.
        extra = self.receive_window - DEFAULT_WINDOW
        st.recv_window += extra
        self._outbox.append(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, sid, extra))
        return sid

    def send_window(self, stream_id: int) -> int:
        """Bytes `send_data` would accept now on this stream (0 if closed)."""
        st = self._streams.get(stream_id)
        if st is None or not st.local_open:
            return 0
        return st.send_window

    def receive_window_of(self, stream_id: int) -> int:
        """The receive window this stream is granted (256 KiB unless grown)."""
        st = self._streams.get(stream_id)
        return DEFAULT_WINDOW if st is None else st.window

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, *, copy: bool = True
    ) -> int:
        """Queue as much of `data` as the window allows; the number of bytes taken.

        With `copy=False` the queue holds views of `data`: the caller must keep
        it unchanged until the bytes have left through `data_to_send*`.
        """
        self._check_alive()
        st = self._local_stream(stream_id)
        view = memoryview(data).cast("B")
        take = min(len(view), st.send_window)
        pos = 0
        while pos < take:
            n = min(take - pos, MAX_SEND_FRAME)
            self._outbox.append(encode_header(FrameType.DATA, self._flags(st), stream_id, n))
            piece = view[pos : pos + n]
            self._outbox.append(bytes(piece) if copy else piece)
            pos += n
        st.send_window -= take
        return take

    def send_data_parts(self, stream_id: int, parts: list[memoryview], limit: int) -> int:
        """Queue up to `limit` bytes of the concatenation of `parts` (byte views),
        as much as the window allows; the number of bytes taken.

        As `send_data(copy=False)` of their join, without joining: a Data
        frame may span parts (a Shoal frame's header and the block after
        it go out in one yamux frame, not a tiny frame for the header), and
        the queue holds views of `parts`, which the caller keeps unchanged
        until the bytes have left through `data_to_send*`.
        """
        self._check_alive()
        st = self._local_stream(stream_id)
        take = min(limit, st.send_window, sum(map(len, parts)))
        outbox = self._outbox
        i, pos, left = 0, 0, take  # next part, offset in it, bytes still to queue
        while left > 0:
            frame = min(left, MAX_SEND_FRAME)
            outbox.append(_HEADER.pack(VERSION, _DATA, self._flags(st), stream_id, frame))
            while frame:
                part = parts[i]
                n = min(frame, len(part) - pos)
                outbox.append(part if n == len(part) else part[pos : pos + n])
                frame -= n
                left -= n
                pos += n
                if pos == len(part):
                    i, pos = i + 1, 0
        taken = take - left
        st.send_window -= taken
        return taken

    def send_fin(self, stream_id: int) -> None:
        """Half-close our direction: the peer sees end of data."""
        self._check_alive()
        st = self._local_stream(stream_id)
        st.local_open = False
        self._outbox.append(encode_header(FrameType.WINDOW_UPDATE, self._flags(st) | Flag.FIN,
                                          stream_id, 0))
        self._maybe_forget(stream_id, st)

    def reset(self, stream_id: int) -> None:
        """Abort the stream both ways; unknown or finished streams are ignored."""
        if self.failed:
            return
        st = self._streams.pop(stream_id, None)
        if st is None:
            return
        if st.inbound:
            self._inbound_count -= 1
        self._outbox.append(encode_header(FrameType.WINDOW_UPDATE, Flag.RST, stream_id, 0))

    def consumed(self, stream_id: int, n: int) -> None:
        """The application took `n` received bytes: grant them back at half a window."""
        st = self._streams.get(stream_id)
        if st is None or self.failed:
            return
        st.unacked += n
        if st.remote_open and st.unacked >= st.window // 2:
            self._outbox.append(encode_header(FrameType.WINDOW_UPDATE, self._flags(st),
                                              stream_id, st.unacked))
            st.recv_window += st.unacked
            st.unacked = 0

    def grow_window(self, stream_id: int, window: int) -> None:
        """Keep granting `window` bytes (at most 16 MiB) on this one stream from now on.

        For a stream the application always reads (a long-lived protocol
        stream that carries bulk data): the rest of the session keeps its
        window, so many idle streams cannot pin many large buffers. The
        growth is granted at once with a WindowUpdate; a smaller `window`
        than the stream has is ignored (windows never shrink).
        """
        if not DEFAULT_WINDOW <= window <= MAX_RECEIVE_WINDOW:
            raise LocalProtocolError("receive window must be 256 KiB .. 16 MiB")
        st = self._streams.get(stream_id)
        if st is None or self.failed or window <= st.window:
            return
        extra = window - st.window
        st.window = window
        if st.remote_open:
            st.recv_window += extra
            self._outbox.append(encode_header(FrameType.WINDOW_UPDATE, self._flags(st), stream_id, extra))

    def ping(self) -> int:
        """Queue a ping; `PingAnswered(opaque)` arrives with the answer."""
        self._check_alive()
        opaque = self._next_ping
        self._next_ping = (self._next_ping + 1) & MAX_WINDOW or 1
        self._outbox.append(encode_header(FrameType.PING, Flag.SYN, 0, opaque))
        return opaque

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """Tell the peer no new streams will be accepted (existing ones go on)."""
        if self.local_go_away or self.failed:
            return
        self.local_go_away = True
        self._outbox.append(encode_header(FrameType.GO_AWAY, 0, 0, int(code)))

    # -- what the peer does ----------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the peer; the events they complete, in order.

        A Data frame's payload is passed on as it arrives (one `StreamData`
        per piece of the frame in this feed), never buffered here: the
        session holds at most a partial 12-byte header between feeds, and
        each payload byte is copied once.
        """
        self._check_alive()
        events: list[Event] = []
        try:
            self._parse(data, events)
        except RemoteProtocolError:
            self._fail(GoAwayCode.PROTOCOL_ERROR)
            raise
        return events

    def receive_data_parts(self, parts: "list[bytes] | tuple[bytes, ...]") -> list[Event]:
        """`receive_data` of each part in order, with one event list: what a
        driver gets from one transport read (a Noise frame's plaintext each).

        Why: one call per ~64 KiB part (a list, a try, the liveness check)
        was a share of the receive path's Python; here a part that is all
        payload of the Data frame in progress costs one event and no call.
        """
        self._check_alive()
        events: list[Event] = []
        try:
            for data in parts:
                left = self._left
                n = len(data)
                if 0 < n < left and type(data) is bytes:  # all payload, the frame goes on
                    self._left = left - n
                    st = self._payload_stream
                    if st is not None and self._streams.get(self._payload_sid) is st:
                        events.append(StreamData(self._payload_sid, data))
                    continue
                self._parse(data, events)
        except RemoteProtocolError:
            self._fail(GoAwayCode.PROTOCOL_ERROR)
            raise
        return events

    def _parse(self, data: bytes | bytearray | memoryview, events: list[Event]) -> None:
        n, pos = len(data), 0
        hdr = self._hdr
        while pos < n:
            if self._left:
                take = min(self._left, n - pos)
                st = self._payload_stream
                if st is not None and self._streams.get(self._payload_sid) is st:
                    chunk = data if take == n and isinstance(data, bytes) else data[pos : pos + take]
                    events.append(StreamData(self._payload_sid,
                                             chunk if isinstance(chunk, bytes) else bytes(chunk)))
                pos += take
                self._left -= take
                if not self._left:
                    self._end_data_frame(events)
                continue
            if not hdr and n - pos >= HEADER_LEN:
                version, ftype, flags, sid, length = _HEADER.unpack_from(data, pos)
                pos += HEADER_LEN
            else:
                need = HEADER_LEN - len(hdr)
                hdr += data[pos : pos + need]
                pos = min(pos + need, n)
                if len(hdr) < HEADER_LEN:
                    return
                version, ftype, flags, sid, length = _HEADER.unpack(hdr)
                hdr.clear()
            self._frame(version, ftype, flags, sid, length, events)

    def _end_data_frame(self, events: list[Event]) -> None:
        """Flags of a Data frame apply after its payload (FIN after the last byte)."""
        st, sid = self._payload_stream, self._payload_sid
        self._payload_stream = None
        if st is not None and self._streams.get(sid) is st:
            self._stream_flags(sid, st, self._payload_flags, events)

    def _frame(self, version: int, ftype: int, flags: int, sid: int, length: int,
               events: list[Event]) -> None:
        if version != VERSION:
            raise RemoteProtocolError(f"yamux version {version}")
        if ftype == _DATA:
            if sid == 0:
                raise RemoteProtocolError("data frame on stream 0")
            st = self._streams.get(sid)
            # Bound the payload on the header alone, before any of it arrives.
            limit = st.recv_window if st is not None and not flags & _SYN else DEFAULT_WINDOW
            if length > limit:
                raise RemoteProtocolError(
                    f"stream {sid}: {length} bytes exceed the receive window of {limit}")
            if flags & _SYN:
                st = self._remote_open(sid, events)
            if st is not None and length:
                if not st.remote_open:
                    raise RemoteProtocolError(f"stream {sid}: data after FIN")
                st.recv_window -= length
            # st None: a stream we reset or refused; its payload is read and dropped.
            self._payload_stream, self._payload_sid = st, sid
            self._payload_flags = flags
            self._left = length
            if not length:
                self._end_data_frame(events)
        elif ftype == _WINDOW_UPDATE:
            if sid == 0:
                raise RemoteProtocolError("window update on stream 0")
            st = self._streams.get(sid)
            if flags & _SYN:
                st = self._remote_open(sid, events)
            if st is not None and self._streams.get(sid) is st:
                if length:
                    if st.send_window + length > MAX_WINDOW:
                        raise RemoteProtocolError(f"stream {sid}: send window overflow")
                    st.send_window += length
                    events.append(WindowIncreased(sid))
                self._stream_flags(sid, st, flags, events)
        elif ftype == _PING:
            if sid != 0:
                raise RemoteProtocolError("ping on a stream")
            if flags & _SYN:
                self._outbox.append(encode_header(FrameType.PING, Flag.ACK, 0, length))
            elif flags & _ACK:
                events.append(PingAnswered(length))
            else:
                raise RemoteProtocolError("ping without SYN or ACK")
        elif ftype == _GO_AWAY:
            if sid != 0:
                raise RemoteProtocolError("go-away on a stream")
            if self.remote_go_away is None:
                self.remote_go_away = length
                events.append(GoAwayReceived(length))
        else:
            raise RemoteProtocolError(f"unknown yamux frame type {ftype}")

    def _remote_open(self, sid: int, events: list[Event]) -> _Stream | None:
        """A SYN from the peer: accept (queue ACK) or refuse with RST."""
        if sid == 0 or (sid % 2 == 1) == self.is_client:
            raise RemoteProtocolError(f"peer opened stream {sid} with our parity")
        if sid <= self._last_remote_id:
            raise RemoteProtocolError(f"peer reused stream id {sid}")
        self._last_remote_id = sid
        if self.local_go_away or self._inbound_count >= self.max_inbound_streams:
            self._outbox.append(encode_header(FrameType.WINDOW_UPDATE, Flag.RST, sid, 0))
            return None
        st = _Stream(inbound=True, window=self.receive_window)
        self._streams[sid] = st
        self._inbound_count += 1
        # Accept at once: a window update carrying ACK (and any window growth).
        extra = self.receive_window - DEFAULT_WINDOW
        st.recv_window += extra
        self._outbox.append(encode_header(FrameType.WINDOW_UPDATE, Flag.ACK, sid, extra))
        st.need_ack = False
        events.append(StreamOpened(sid))
        return st

    def _stream_flags(self, sid: int, st: _Stream, flags: int, events: list[Event]) -> None:
        if flags & _ACK and not st.inbound:
            events.append(WindowIncreased(sid))  # acknowledged: senders may proceed
        if flags & _RST:
            self._streams.pop(sid, None)
            if st.inbound:
                self._inbound_count -= 1
            events.append(StreamReset(sid))
            return
        if flags & _FIN:
            if st.remote_open:
                st.remote_open = False
                events.append(StreamEnded(sid))
            self._maybe_forget(sid, st)

    # -- helpers ------------------------------------------------------------------

    def _flags(self, st: _Stream) -> int:
        if st.need_ack:
            st.need_ack = False
            return Flag.ACK
        return 0

    def _local_stream(self, stream_id: int) -> _Stream:
        st = self._streams.get(stream_id)
        if st is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        if not st.local_open:
            raise LocalProtocolError(f"stream {stream_id} is closed for sending")
        return st

    def _maybe_forget(self, sid: int, st: _Stream) -> None:
        if not st.local_open and not st.remote_open and self._streams.get(sid) is st:
            del self._streams[sid]
            if st.inbound:
                self._inbound_count -= 1

    def _check_alive(self) -> None:
        if self.failed:
            raise LocalProtocolError("yamux session failed")

    def _fail(self, code: int) -> None:
        self.failed = True
        if not self.local_go_away:
            self.local_go_away = True
            self._outbox.append(encode_header(FrameType.GO_AWAY, 0, 0, int(code)))

    def fail_internal(self) -> None:
        """Our side broke: queue GoAway(internal error); the session is dead."""
        if not self.failed:
            self._fail(GoAwayCode.INTERNAL_ERROR)

    @property
    def open_streams(self) -> int:
        return len(self._streams)
