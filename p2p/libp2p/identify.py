"""Identify (`/ipfs/id/1.0.0`) and ping (`/ipfs/ping/1.0.0`): codecs and stream handlers.

Identify: the side that accepts the stream writes one `Identify` protobuf,
varint-length-prefixed, and closes; the opener reads it. Fields (libp2p
identify spec): publicKey=1, listenAddrs=2 (binary multiaddrs), protocols=3,
observedAddr=4, protocolVersion=5, agentVersion=6. We send no signed peer
record (field 8, optional). The encoding reuses the protobuf helpers of
`shoal.p2p.secure.identity`; decoding is bounded (`MAX_IDENTIFY` bytes, at
most `MAX_ENTRIES` addresses and protocols) and raises only
`RemoteProtocolError`.

Ping: the opener sends 32 random bytes, the acceptor echoes them; one
stream may carry many pings.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Final

import trio

from shoal.p2p.errors import P2PError, RemoteProtocolError
from shoal.p2p.secure.identity import (
    PeerId, decode_public_key, protobuf_bytes_field, protobuf_fields,
)
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.store.ipld import varint

__all__ = [
    "IDENTIFY_PROTOCOL",
    "MAX_IDENTIFY",
    "PING_PROTOCOL",
    "PROTOCOL_VERSION",
    "IdentifyInfo",
    "agent_version",
    "decode_identify",
    "decode_multiaddr",
    "encode_identify",
    "encode_multiaddr",
    "identify",
    "read_length_prefixed",
    "receive_exactly",
    "send_identify",
    "ping",
    "ping_handler",
]

IDENTIFY_PROTOCOL: Final = "/ipfs/id/1.0.0"
PING_PROTOCOL: Final = "/ipfs/ping/1.0.0"
PROTOCOL_VERSION: Final = "ipfs/0.1.0"
MAX_IDENTIFY: Final = 8192
"""js-libp2p's default bound for an identify message; we use it both ways."""
MAX_ENTRIES: Final = 128
PING_SIZE: Final = 32
_IP4, _TCP, _IP6, _DNS, _DNS4, _DNS6, _P2P = 4, 6, 41, 53, 54, 55, 421


def agent_version() -> str:
    """`shoal/<installed package version>`."""
    from importlib import metadata

    try:
        return f"shoal/{metadata.version('shoal')}"
    except metadata.PackageNotFoundError:
        return "shoal/0+unknown"


def encode_multiaddr(addr: Multiaddr) -> bytes:
    """The binary form of a TCP multiaddr (with its /p2p/ part, if any)."""
    out = bytearray()
    if addr.family == "ip4":
        out += varint.encode(_IP4) + ipaddress.IPv4Address(addr.host).packed
    elif addr.family == "ip6":
        out += varint.encode(_IP6) + ipaddress.IPv6Address(addr.host).packed
    else:
        code = {"dns": _DNS, "dns4": _DNS4, "dns6": _DNS6}[addr.family]
        host = addr.host.encode()
        out += varint.encode(code) + varint.encode(len(host)) + host
    out += varint.encode(_TCP) + addr.port.to_bytes(2, "big")
    if addr.peer_id is not None:
        pid = addr.peer_id.to_bytes()
        out += varint.encode(_P2P) + varint.encode(len(pid)) + pid
    return bytes(out)


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 63, 7):
        if pos >= len(buf):
            raise RemoteProtocolError("truncated varint in multiaddr")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise RemoteProtocolError("varint too long in multiaddr")


def decode_multiaddr(data: bytes) -> str:
    """Text form of a binary multiaddr made of ip4/ip6/dns*/tcp/p2p parts.

    Other protocols raise RemoteProtocolError (the caller skips that address).
    """
    pos, parts = 0, []
    while pos < len(data):
        code, pos = _read_uvarint(data, pos)
        if code in (_IP4, _IP6):
            size = 4 if code == _IP4 else 16
            if pos + size > len(data):
                raise RemoteProtocolError("truncated address")
            raw = data[pos : pos + size]
            host = str(ipaddress.IPv4Address(raw) if size == 4 else ipaddress.IPv6Address(raw))
            parts.append(f"/{'ip4' if size == 4 else 'ip6'}/{host}")
            pos += size
        elif code == _TCP:
            if pos + 2 > len(data):
                raise RemoteProtocolError("truncated port")
            parts.append(f"/tcp/{int.from_bytes(data[pos : pos + 2], 'big')}")
            pos += 2
        elif code in (_DNS, _DNS4, _DNS6, _P2P):
            size, pos = _read_uvarint(data, pos)
            if size > len(data) - pos:
                raise RemoteProtocolError("truncated multiaddr part")
            raw = data[pos : pos + size]
            pos += size
            if code == _P2P:
                try:
                    parts.append(f"/p2p/{PeerId.from_bytes(raw)}")
                except (ValueError, P2PError) as exc:
                    raise RemoteProtocolError(f"bad peer id in multiaddr: {exc}") from None
            else:
                name = {_DNS: "dns", _DNS4: "dns4", _DNS6: "dns6"}[code]
                try:
                    parts.append(f"/{name}/{raw.decode('ascii')}")
                except UnicodeDecodeError:
                    raise RemoteProtocolError("non-ASCII DNS name") from None
        else:
            raise RemoteProtocolError(f"unsupported multiaddr protocol {code}")
        if len(parts) > 8:
            raise RemoteProtocolError("multiaddr too long")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class IdentifyInfo:
    """What a peer says about itself (public key checked against its PeerId by the caller)."""

    public_key: bytes = b""
    listen_addrs: tuple[bytes, ...] = ()
    protocols: tuple[str, ...] = ()
    observed_addr: bytes | None = None
    protocol_version: str = ""
    agent_version: str = ""
    unknown_fields: int = field(default=0, compare=False)

    def listen_addr_texts(self) -> list[str]:
        """Listen addresses we can read (others are skipped)."""
        out = []
        for raw in self.listen_addrs:
            try:
                out.append(decode_multiaddr(raw))
            except RemoteProtocolError:
                continue
        return out

    def peer_id(self) -> PeerId:
        """The PeerId of `public_key`; RemoteProtocolError if it is not a valid key."""
        try:
            return PeerId.from_public_key(decode_public_key(self.public_key))
        except (ValueError, P2PError) as exc:
            raise RemoteProtocolError(f"identify: bad public key: {exc}") from None


def _text(value: int | bytes, what: str) -> str:
    if not isinstance(value, bytes):
        raise RemoteProtocolError(f"identify: {what} is not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"identify: {what} is not UTF-8") from None


def encode_identify(info: IdentifyInfo) -> bytes:
    """The protobuf body (without the length prefix)."""
    out = bytearray()
    if info.protocol_version:
        out += protobuf_bytes_field(5, info.protocol_version.encode())
    if info.agent_version:
        out += protobuf_bytes_field(6, info.agent_version.encode())
    if info.public_key:
        out += protobuf_bytes_field(1, info.public_key)
    for addr in info.listen_addrs:
        out += protobuf_bytes_field(2, addr)
    if info.observed_addr is not None:
        out += protobuf_bytes_field(4, info.observed_addr)
    for proto in info.protocols:
        out += protobuf_bytes_field(3, proto.encode())
    if len(out) > MAX_IDENTIFY:
        raise ValueError("identify message longer than 8 KiB")
    return bytes(out)


def decode_identify(body: bytes) -> IdentifyInfo:
    """Parse an Identify protobuf body; RemoteProtocolError on anything malformed."""
    if len(body) > MAX_IDENTIFY:
        raise RemoteProtocolError("identify message longer than 8 KiB")
    public_key = b""
    addrs: list[bytes] = []
    protocols: list[str] = []
    observed: bytes | None = None
    pv = av = ""
    unknown = 0
    try:
        for number, value in protobuf_fields(body):
            if number == 1 and isinstance(value, bytes):
                public_key = value
            elif number == 2 and isinstance(value, bytes):
                addrs.append(value)
            elif number == 3:
                protocols.append(_text(value, "protocol"))
            elif number == 4 and isinstance(value, bytes):
                observed = value
            elif number == 5:
                pv = _text(value, "protocolVersion")
            elif number == 6:
                av = _text(value, "agentVersion")
            else:
                unknown += 1
            if len(addrs) > MAX_ENTRIES or len(protocols) > MAX_ENTRIES:
                raise RemoteProtocolError("identify lists too many entries")
    except ValueError as exc:
        raise RemoteProtocolError(f"identify: {exc}") from None
    return IdentifyInfo(public_key, tuple(addrs), tuple(protocols), observed, pv, av, unknown)


# -- stream helpers and handlers (over any trio stream) -----------------------------


async def read_length_prefixed(stream: trio.abc.ReceiveStream, limit: int) -> bytes:
    """One uvarint-length-prefixed message, refused before allocation if over `limit`.

    Reads the prefix byte by byte so nothing after the message is consumed.
    """
    prefix = bytearray()
    while True:
        byte = await stream.receive_some(1)
        if not byte:
            raise RemoteProtocolError("stream ended inside a length prefix")
        prefix += byte
        if not byte[0] & 0x80:
            break
        if len(prefix) >= 4:
            raise RemoteProtocolError("length prefix too long")
    length = _read_uvarint(bytes(prefix), 0)[0]
    if length > limit:
        raise RemoteProtocolError(f"message of {length} bytes exceeds {limit}")
    body = await receive_exactly(stream, length)
    assert body is not None
    return body


async def identify(
    stream: trio.abc.Stream, expected_peer: PeerId | None = None, timeout: float = 10.0
) -> IdentifyInfo:
    """Read the peer's Identify message from a stream we opened to `/ipfs/id/1.0.0`.

    With `expected_peer` (the PeerId the connection's Noise handshake proved),
    a message whose public key is another peer's is refused: identify must
    not let a peer speak for someone else.
    """
    with trio.fail_after(timeout):
        body = await read_length_prefixed(stream, MAX_IDENTIFY)
    await stream.aclose()
    info = decode_identify(body)
    if expected_peer is not None and info.peer_id() != expected_peer:
        raise RemoteProtocolError(f"identify: public key of {info.peer_id()}, not {expected_peer}")
    return info


async def send_identify(stream: trio.abc.Stream, info: IdentifyInfo) -> None:
    body = encode_identify(info)
    await stream.send_all(varint.encode(len(body)) + body)


async def ping_handler(stream: trio.abc.Stream) -> None:
    """Echo every 32-byte ping until the opener closes the stream."""
    while True:
        payload = await receive_exactly(stream, PING_SIZE, eof_ok=True)
        if payload is None:
            return
        await stream.send_all(payload)


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int, *, eof_ok: bool = False) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            if eof_ok and not buf:
                return None
            raise RemoteProtocolError(f"stream ended after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


async def ping(stream: trio.abc.Stream, count: int = 1, timeout: float = 10.0) -> list[float]:
    """Send `count` pings on a `/ipfs/ping/1.0.0` stream; their round-trip times."""
    rtts = []
    with trio.fail_after(timeout):
        for _ in range(count):
            payload = os.urandom(PING_SIZE)
            start = trio.current_time()
            await stream.send_all(payload)
            echo = await receive_exactly(stream, PING_SIZE)
            if echo != payload:
                raise RemoteProtocolError("ping answer differs from what was sent")
            rtts.append(trio.current_time() - start)
    await stream.aclose()
    return rtts
