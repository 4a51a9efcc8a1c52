"""The kad-dht protobuf messages and their uvarint length-prefixed framing.

Hand-written for the schema of libp2p's kad-dht spec (`/ipfs/kad/1.0.0`)::

    message Message {
        MessageType type = 1;  int32 clusterLevelRaw = 10;  bytes key = 2;
        Record record = 3;  repeated Peer closerPeers = 8;
        repeated Peer providerPeers = 9;
    }
    message Peer   { bytes id = 1; repeated bytes addrs = 2; ConnectionType connection = 3; }
    message Record { bytes key = 1; bytes value = 2; string timeReceived = 5; }

Every length and count is checked against a bound before anything of that
size is kept: a frame may not exceed MAX_MESSAGE_SIZE (4 MiB, the limit
go-libp2p-kad-dht's reader applies), a peer list MAX_PEERS entries and a peer
MAX_ADDRS addresses. Bad bytes raise DHTMessageError and nothing else, so a
driver can answer or close with one except clause. Unknown fields are skipped
as protobuf requires; an unknown message type is refused (we could not act
on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from shoal.p2p.errors import RemoteProtocolError
from shoal.p2p.secure.identity import protobuf_fields

from . import K

MAX_MESSAGE_SIZE = 4 << 20
"""Largest frame body accepted (go-libp2p-kad-dht / go-msgio: 4 MiB)."""
MAX_PEERS = 10 * K
"""Entries accepted in closerPeers and in providerPeers (each)."""
MAX_ADDRS = 32
"""Multiaddrs accepted per peer."""
MAX_ADDR_LEN = 1024
MAX_PEER_ID_LEN = 128
MAX_KEY_LEN = 1024
MAX_TIME_LEN = 64
_VARINT_MAX_LEN = 10


class DHTMessageError(RemoteProtocolError):
    """A kad message or frame is malformed or exceeds a bound."""


class MessageType(IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


class ConnectionType(IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


def _check_len(what: str, value: bytes | str, limit: int) -> None:
    if len(value) > limit:
        raise DHTMessageError(f"{what} longer than {limit}")


@dataclass(frozen=True)
class PeerInfo:
    """A peer as the messages carry it: id bytes, multiaddr bytes, connectedness."""

    id: bytes
    addrs: tuple[bytes, ...] = ()
    connection: ConnectionType = ConnectionType.NOT_CONNECTED

    def __post_init__(self) -> None:
        if not self.id:
            raise DHTMessageError("peer without id")
        _check_len("peer id", self.id, MAX_PEER_ID_LEN)
        if len(self.addrs) > MAX_ADDRS:
            raise DHTMessageError(f"more than {MAX_ADDRS} addrs for one peer")
        for addr in self.addrs:
            _check_len("multiaddr", addr, MAX_ADDR_LEN)


@dataclass(frozen=True)
class Record:
    """A PUT_VALUE/GET_VALUE record (validation of its value is the caller's)."""

    key: bytes
    value: bytes
    time_received: str = ""

    def __post_init__(self) -> None:
        _check_len("record key", self.key, MAX_KEY_LEN)
        _check_len("timeReceived", self.time_received, MAX_TIME_LEN)


@dataclass(frozen=True)
class Message:
    """One kad request or response (the same message type serves both)."""

    type: MessageType
    key: bytes = b""
    record: Record | None = None
    closer_peers: tuple[PeerInfo, ...] = field(default=())
    provider_peers: tuple[PeerInfo, ...] = field(default=())
    cluster_level: int = 0

    def __post_init__(self) -> None:
        _check_len("key", self.key, MAX_KEY_LEN)
        if not -(2**31) <= self.cluster_level < 2**31:
            raise DHTMessageError("clusterLevelRaw out of int32 range")
        for name, peers in (("closerPeers", self.closer_peers), ("providerPeers", self.provider_peers)):
            if len(peers) > MAX_PEERS:
                raise DHTMessageError(f"more than {MAX_PEERS} {name}")


# -- encoding -----------------------------------------------------------------


def _uvarint(value: int) -> bytes:
    # Protobuf varints go up to 10 bytes (a negative int32 is sign-extended
    # to 64 bits); multiformats' varint stops at 9, so ours is local.
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, value: bytes) -> bytes:
    return _uvarint(number << 3 | 2) + _uvarint(len(value)) + value


def _varint_field(number: int, value: int) -> bytes:
    return _uvarint(number << 3) + _uvarint(value & (2**64 - 1))


def _encode_peer(peer: PeerInfo) -> bytes:
    out = [_len_field(1, peer.id)]
    out.extend(_len_field(2, a) for a in peer.addrs)
    if peer.connection:
        out.append(_varint_field(3, int(peer.connection)))
    return b"".join(out)


def _encode_record(rec: Record) -> bytes:
    out = []
    if rec.key:
        out.append(_len_field(1, rec.key))
    if rec.value:
        out.append(_len_field(2, rec.value))
    if rec.time_received:
        out.append(_len_field(5, rec.time_received.encode()))
    return b"".join(out)


def encode(msg: Message) -> bytes:
    """The protobuf bytes of `msg` (proto3: zero/empty fields are omitted)."""
    out = []
    if msg.type:
        out.append(_varint_field(1, int(msg.type)))
    if msg.key:
        out.append(_len_field(2, msg.key))
    if msg.record is not None:
        out.append(_len_field(3, _encode_record(msg.record)))
    out.extend(_len_field(8, _encode_peer(p)) for p in msg.closer_peers)
    out.extend(_len_field(9, _encode_peer(p)) for p in msg.provider_peers)
    if msg.cluster_level:
        out.append(_varint_field(10, msg.cluster_level))
    body = b"".join(out)
    if len(body) > MAX_MESSAGE_SIZE:
        raise DHTMessageError("message larger than MAX_MESSAGE_SIZE")
    return body


def frame(msg: Message) -> bytes:
    """`msg` encoded and prefixed with its uvarint length, as sent on the stream."""
    body = encode(msg)
    return _uvarint(len(body)) + body


# -- decoding -----------------------------------------------------------------


def _bytes(value: int | bytes, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise DHTMessageError(f"{what}: wrong wire type")
    return value


def _int(value: int | bytes, what: str) -> int:
    if not isinstance(value, int):
        raise DHTMessageError(f"{what}: wrong wire type")
    return value


def _decode_peer(buf: bytes) -> PeerInfo:
    pid = b""
    addrs: list[bytes] = []
    conn = 0
    for number, value in protobuf_fields(buf):
        if number == 1:
            pid = _bytes(value, "Peer.id")
        elif number == 2:
            if len(addrs) >= MAX_ADDRS:
                raise DHTMessageError(f"more than {MAX_ADDRS} addrs for one peer")
            addrs.append(_bytes(value, "Peer.addrs"))
        elif number == 3:
            conn = _int(value, "Peer.connection")
    try:
        connection = ConnectionType(conn)
    except ValueError:
        # proto3 enums are open: an unknown connectedness is just "unknown".
        connection = ConnectionType.NOT_CONNECTED
    return PeerInfo(pid, tuple(addrs), connection)


def _decode_record(buf: bytes) -> Record:
    key = value = b""
    time_received = ""
    for number, item in protobuf_fields(buf):
        if number == 1:
            key = _bytes(item, "Record.key")
        elif number == 2:
            value = _bytes(item, "Record.value")
        elif number == 5:
            raw = _bytes(item, "Record.timeReceived")
            _check_len("timeReceived", raw, MAX_TIME_LEN)
            try:
                time_received = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DHTMessageError("timeReceived is not UTF-8") from exc
    return Record(key, value, time_received)


def decode(data: bytes) -> Message:
    """Parse one message body; DHTMessageError on anything malformed or too big."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise DHTMessageError("message larger than MAX_MESSAGE_SIZE")
    try:
        return _decode(data)
    except ValueError as exc:  # from protobuf_fields: truncation, bad varint...
        if isinstance(exc, DHTMessageError):
            raise
        raise DHTMessageError(f"malformed kad message: {exc}") from exc


def _decode(data: bytes) -> Message:
    mtype = 0
    key = b""
    record: Record | None = None
    closer: list[PeerInfo] = []
    providers: list[PeerInfo] = []
    cluster = 0
    for number, value in protobuf_fields(data):
        if number == 1:
            mtype = _int(value, "type")
        elif number == 2:
            key = _bytes(value, "key")
        elif number == 3:
            record = _decode_record(_bytes(value, "record"))
        elif number in (8, 9):
            target = closer if number == 8 else providers
            if len(target) >= MAX_PEERS:
                raise DHTMessageError(f"more than {MAX_PEERS} peers in one list")
            target.append(_decode_peer(_bytes(value, "peer")))
        elif number == 10:
            raw = _int(value, "clusterLevelRaw")
            if raw >= 2**63:
                raw -= 2**64
            cluster = raw
    try:
        message_type = MessageType(mtype)
    except ValueError as exc:
        raise DHTMessageError(f"unknown message type {mtype}") from exc
    return Message(message_type, key, record, tuple(closer), tuple(providers), cluster)


class FrameReader:
    """Splits a byte stream into messages: uvarint length, then that many bytes.

    `feed` bytes as they arrive, then call `next_message` until it returns
    None. The length prefix is checked against MAX_MESSAGE_SIZE as soon as it
    is complete, before the body is waited for, and `feed` refuses to hold
    more than two maximal frames (the driver reads at most one per call), so a peer cannot make us buffer without bound.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_size

    def feed(self, data: bytes) -> None:
        """Append received bytes (the driver drains with next_message between feeds)."""
        if len(self._buf) + len(data) > 2 * (self._max + _VARINT_MAX_LEN):
            raise DHTMessageError("peer sent more than two maximal frames unread")
        self._buf += data

    def next_message(self) -> Message | None:
        """The next complete message, or None if more bytes are needed."""
        length = 0
        for i in range(min(len(self._buf), _VARINT_MAX_LEN)):
            byte = self._buf[i]
            length |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                start = i + 1
                break
        else:
            if len(self._buf) >= _VARINT_MAX_LEN:
                raise DHTMessageError("frame length varint too long")
            return None
        if length > self._max:
            raise DHTMessageError(f"frame of {length} bytes exceeds {self._max}")
        if len(self._buf) - start < length:
            return None
        body = bytes(self._buf[start : start + length])
        del self._buf[: start + length]
        return decode(body)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed (0 at a clean message boundary)."""
        return len(self._buf)
