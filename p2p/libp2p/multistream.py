"""Sans-IO multistream-select 1.0 (`/multistream/1.0.0`), both roles.

Wire format (libp2p connection spec): every message is an unsigned varint
length followed by that many bytes, the last of which is "\\n". Both sides
send the header `/multistream/1.0.0`; the dialer then proposes protocols
one at a time, the listener echoes one it speaks or answers "na". A dialer
may send "ls"; we answer it (go-multistream's format: one varint-prefixed
message holding each protocol as its own varint-prefixed "name\\n") unless
the listener was built with `allow_ls=False`, then with "na".

Bounds, checked before any allocation: a message is at most 1 KiB (its
varint at most 2 bytes), a negotiation at most `MAX_PROPOSALS` proposals.
Every malformed input raises `RemoteProtocolError`, nothing else.

Like h11, no I/O: feed received bytes with `receive_data`, which returns
`NeedData`, `Selected` or `Rejected`; send what `data_to_send` returns.
`Selected.leftover` holds bytes that followed the final message (a dialer
may pipeline its first protocol bytes): they belong to the chosen protocol.
Deliberately not here: the lazy (optimistic) dialer mode; we always wait for
the listener's echo, which costs one round trip per stream and never sends
protocol bytes to a listener that refused the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Final, Sequence, Union

from shoal.p2p.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEADER",
    "MAX_MESSAGE",
    "MAX_PROPOSALS",
    "Dialer",
    "Listener",
    "NeedData",
    "Rejected",
    "Selected",
    "encode_message",
    "check_protocol_id",
]

HEADER: Final = "/multistream/1.0.0"
NA: Final = "na"
LS: Final = "ls"
MAX_MESSAGE: Final = 1024
"""Largest message, its final newline included (js-libp2p uses the same bound)."""
MAX_PROPOSALS: Final = 16
"""Most protocols a dialer may propose (and `ls` requests it may send) per negotiation."""
_MAX_VARINT_BYTES: Final = 2  # 1024 < 2**14


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing decided yet: send `data_to_send()`, then feed more bytes."""


@dataclass(frozen=True, slots=True)
class Selected:
    """Both sides agreed on `protocol`; `leftover` is the first bytes of it."""

    protocol: str
    leftover: bytes = b""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The listener refused every protocol the dialer proposed."""

    proposed: tuple[str, ...]


Event = Union[NeedData, Selected, Rejected]


def check_protocol_id(protocol: str) -> str:
    """A protocol id we may send: non-empty, no newline, fits one message."""
    if not isinstance(protocol, str) or not protocol or "\n" in protocol:
        raise LocalProtocolError(f"invalid protocol id {protocol!r}")
    if protocol in (NA, LS) or len(protocol.encode()) + 1 > MAX_MESSAGE:
        raise LocalProtocolError(f"invalid protocol id {protocol!r}")
    return protocol


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_message(text: str) -> bytes:
    """One multistream message: varint length, UTF-8 text, newline."""
    body = text.encode() + b"\n"
    if len(body) > MAX_MESSAGE:
        raise LocalProtocolError("multistream message longer than 1 KiB")
    return _uvarint(len(body)) + body


_HEADER_MESSAGE: Final = bytes([len(HEADER) + 1]) + HEADER.encode() + b"\n"


class _Reader:
    """Splits bounded, newline-terminated messages off a byte buffer."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        # One message plus its prefix is the most a negotiation waits for;
        # anything beyond belongs to the selected protocol (or is refused
        # message by message), so the buffer never holds more than one
        # feed beyond a message.
        self._buf += data

    def next_raw(self) -> bytes | None:
        """The next message body (newline included), None until complete."""
        buf = self._buf
        length = 0
        for i in range(min(len(buf), _MAX_VARINT_BYTES + 1)):
            byte = buf[i]
            length |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                break
            if i + 1 >= _MAX_VARINT_BYTES:
                raise RemoteProtocolError("multistream length prefix too long")
        else:
            return None  # the varint itself is not complete yet
        prefix = i + 1
        if length == 0 or length > MAX_MESSAGE:
            raise RemoteProtocolError(f"multistream message of {length} bytes")
        if len(buf) < prefix + length:
            return None
        body = bytes(buf[prefix : prefix + length])
        del buf[: prefix + length]
        return body

    def next_message(self) -> str | None:
        body = self.next_raw()
        if body is None:
            return None
        if not body.endswith(b"\n"):
            raise RemoteProtocolError("multistream message does not end with a newline")
        try:
            text = body[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("multistream message is not UTF-8") from None
        if "\n" in text:
            raise RemoteProtocolError("multistream message holds a newline")
        return text

    def check_header_prefix(self) -> None:
        """Refuse at the first byte that cannot begin the header message.

        Every negotiation starts with exactly `/multistream/1.0.0`, so a
        wrong byte is wrong at once: noise from a peer without the swarm
        key (or any other protocol) is refused on its first bytes instead
        of after waiting for a length prefix that may claim 1 KiB.
        """
        n = min(len(self._buf), len(_HEADER_MESSAGE))
        if self._buf[:n] != _HEADER_MESSAGE[:n]:
            raise RemoteProtocolError(f"not multistream-select 1.0: {bytes(self._buf[:16])!r}")

    def take_rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


class _Negotiation:
    """What both roles share: the outbox, and feeding received bytes (the
    header's first bytes checked at once, nothing after the outcome)."""

    _outbox: bytearray
    _reader: _Reader
    _header_seen: bool
    _result: "Selected | Rejected | None"

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._result is not None:
            raise LocalProtocolError("negotiation already finished")
        self._reader.feed(data)
        if not self._header_seen:
            self._reader.check_header_prefix()


class Dialer(_Negotiation):
    """The proposing side: header plus the first proposal go out at once."""

    def __init__(self, protocols: Sequence[str]) -> None:
        if not 1 <= len(protocols) <= MAX_PROPOSALS:
            raise LocalProtocolError(f"propose 1..{MAX_PROPOSALS} protocols")
        self._protocols = tuple(check_protocol_id(p) for p in protocols)
        self._index = 0
        self._reader = _Reader()
        self._header_seen = False
        self._outbox = bytearray(encode_message(HEADER) + encode_message(self._protocols[0]))
        self._result: Selected | Rejected | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> Event:
        """Feed bytes from the listener; the outcome once it is known."""
        self._feed(data)
        while (message := self._reader.next_message()) is not None:
            if not self._header_seen:
                if message != HEADER:
                    raise RemoteProtocolError(f"not multistream-select 1.0: {message[:64]!r}")
                self._header_seen = True
                continue
            proposed = self._protocols[self._index]
            if message == proposed:
                self._result = Selected(proposed, self._reader.take_rest())
                return self._result
            if message != NA:
                raise RemoteProtocolError(
                    f"listener answered {message[:64]!r} to {proposed!r}")
            self._index += 1
            if self._index == len(self._protocols):
                self._result = Rejected(self._protocols)
                return self._result
            self._outbox += encode_message(self._protocols[self._index])
        return NeedData()


class Listener(_Negotiation):
    """The answering side: echoes the first proposal it supports.

    It says nothing before the dialer's header has arrived whole and right
    (the dialer sends its header and first proposal without waiting, as
    js-libp2p and go-multistream do): a prober that does not speak
    multistream-select, or has no swarm key, gets not one byte back.
    """

    def __init__(self, supported: Collection[str], *, allow_ls: bool = True) -> None:
        self._supported = frozenset(check_protocol_id(p) for p in supported)
        self._ls_body = self._encode_ls(sorted(self._supported)) if allow_ls else None
        self._reader = _Reader()
        self._header_seen = False
        self._requests = 0
        self._outbox = bytearray()  # our header goes out once theirs has arrived
        self._result: Selected | None = None

    @staticmethod
    def _encode_ls(protocols: list[str]) -> bytes:
        inner = b"".join(encode_message(p) for p in protocols)
        return _uvarint(len(inner)) + inner

    def receive_data(self, data: bytes | bytearray | memoryview) -> Event:
        """Feed bytes from the dialer; Selected once a protocol is agreed."""
        self._feed(data)
        while (message := self._reader.next_message()) is not None:
            if not self._header_seen:
                if message != HEADER:
                    raise RemoteProtocolError(f"not multistream-select 1.0: {message[:64]!r}")
                self._header_seen = True
                self._outbox += encode_message(HEADER)
                continue
            self._requests += 1
            if self._requests > MAX_PROPOSALS:
                raise RemoteProtocolError(f"more than {MAX_PROPOSALS} proposals")
            if message in self._supported:
                self._outbox += encode_message(message)
                self._result = Selected(message, self._reader.take_rest())
                return self._result
            if message == LS and self._ls_body is not None:
                self._outbox += self._ls_body
            else:
                self._outbox += encode_message(NA)
        return NeedData()


def parse_ls_response(body: bytes) -> list[str]:
    """The protocol list inside an `ls` answer's outer message body (for tests and tools)."""
    reader = _Reader()
    reader.feed(body)
    out: list[str] = []
    while (message := reader.next_message()) is not None:
        out.append(message)
        if len(out) > 4096:
            raise RemoteProtocolError("ls answer lists too many protocols")
    if reader.take_rest():
        raise RemoteProtocolError("ls answer ends inside a message")
    return out
