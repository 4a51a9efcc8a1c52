"""Text multiaddrs for TCP peers: `/ip4/127.0.0.1/tcp/4101/p2p/12D3KooW...`.

Supported: `/ip4/A/tcp/P`, `/ip6/A/tcp/P`, `/dns4/H/tcp/P`, `/dns6/H/tcp/P`
and `/dns/H/tcp/P`, each optionally followed by `/p2p/PEERID` (the legacy
`/ipfs/PEERID` is read as `/p2p/`). Output is canonical: compressed IPv6,
lower-case host names, `/p2p/` with base58btc ids, so equal addresses give
equal strings.

`/dnsaddr/HOST[/p2p/PEERID]` (kubo's bootstrap list) is a `Dnsaddr`, read by
`parse_address`: it names TXT records, not an endpoint, and is resolved by
`shoal.p2p.net.dnsaddr` before dialling.

Not supported (refused with InvalidMultiaddr): the binary multiaddr form,
UDP/QUIC/WebSocket and other transports, `/p2p/ID` on its own, IPv6 zones.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from shoal.p2p.errors import InvalidMultiaddr
from shoal.p2p.secure.identity import PeerId

__all__ = ["Dnsaddr", "Family", "Multiaddr", "parse_address", "parse_multiaddr"]

Family = Literal["ip4", "ip6", "dns4", "dns6", "dns"]
_FAMILIES: tuple[str, ...] = ("ip4", "ip6", "dns4", "dns6", "dns")
_MAX_LEN = 512
_PORT_RE = re.compile(r"(?:0|[1-9][0-9]{0,4})")
_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _check_hostname(host: str) -> str:
    host = host.lower()
    if len(host) > 253 or not host.isascii():
        raise InvalidMultiaddr(f"invalid DNS name {host!r}")
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise InvalidMultiaddr(f"invalid DNS name {host!r}")
    return host


def _canonical_host(family: str, host: str) -> str:
    if family == "ip4":
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise InvalidMultiaddr(f"invalid IPv4 address {host!r}") from None
    if family == "ip6":
        if "%" in host:
            raise InvalidMultiaddr(f"IPv6 zones are not supported: {host!r}")
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise InvalidMultiaddr(f"invalid IPv6 address {host!r}") from None
    return _check_hostname(host)


@dataclass(frozen=True, slots=True)
class Multiaddr:
    """A TCP endpoint, optionally pinned to the PeerId expected there.

    Built values are validated and canonical; compare them with `==`.
    """

    host: str
    port: int
    peer_id: PeerId | None = None
    family: Family = "ip4"

    def __post_init__(self) -> None:
        if self.family not in _FAMILIES:
            raise InvalidMultiaddr(f"unsupported address family {self.family!r}")
        port = self.port
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise InvalidMultiaddr(f"port must be 0..65535, not {self.port!r}")
        if not isinstance(self.host, str):
            raise InvalidMultiaddr("host must be a string")
        if self.peer_id is not None and not isinstance(self.peer_id, PeerId):
            raise InvalidMultiaddr("peer_id must be a PeerId")
        object.__setattr__(self, "host", _canonical_host(self.family, self.host))

    @classmethod
    def parse(cls, text: str) -> Multiaddr:
        """Parse the text form; InvalidMultiaddr on anything unsupported."""
        if not isinstance(text, str) or len(text) > _MAX_LEN:
            raise InvalidMultiaddr("multiaddr must be a string of at most 512 characters")
        parts = text.split("/")
        if parts[0] != "" or len(parts) not in (5, 7):
            raise InvalidMultiaddr(f"expected /<family>/<host>/tcp/<port>[/p2p/<id>], got {text!r}")
        _, family, host, proto, port = parts[:5]
        if family not in _FAMILIES:
            raise InvalidMultiaddr(f"unsupported address family {family!r} in {text!r}")
        if proto != "tcp":
            raise InvalidMultiaddr(f"only tcp is supported, got {proto!r} in {text!r}")
        if not _PORT_RE.fullmatch(port):
            raise InvalidMultiaddr(f"invalid port {port!r} in {text!r}")
        peer: PeerId | None = None
        if len(parts) == 7:
            if parts[5] not in ("p2p", "ipfs"):
                raise InvalidMultiaddr(f"expected /p2p/<id> after the port in {text!r}")
            peer = PeerId.from_string(parts[6])
        return cls(host, int(port), peer, family)  # type: ignore[arg-type]

    def __str__(self) -> str:
        text = f"/{self.family}/{self.host}/tcp/{self.port}"
        if self.peer_id is not None:
            text += f"/p2p/{self.peer_id}"
        return text

    def with_peer(self, peer_id: PeerId | None) -> Multiaddr:
        """The same endpoint pinned to `peer_id` (or unpinned with None)."""
        return Multiaddr(self.host, self.port, peer_id, self.family)


def parse_multiaddr(text: str) -> Multiaddr:
    """Shorthand for `Multiaddr.parse`."""
    return Multiaddr.parse(text)


@dataclass(frozen=True, slots=True)
class Dnsaddr:
    """`/dnsaddr/HOST[/p2p/ID]`: addresses published in TXT records at `_dnsaddr.HOST`.

    The optional peer id filters what the records give (libp2p dnsaddr spec).
    """

    host: str
    peer_id: PeerId | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise InvalidMultiaddr("host must be a string")
        if self.peer_id is not None and not isinstance(self.peer_id, PeerId):
            raise InvalidMultiaddr("peer_id must be a PeerId")
        object.__setattr__(self, "host", _check_hostname(self.host))

    @classmethod
    def parse(cls, text: str) -> Dnsaddr:
        if not isinstance(text, str) or len(text) > _MAX_LEN:
            raise InvalidMultiaddr("multiaddr must be a string of at most 512 characters")
        parts = text.split("/")
        if parts[0] != "" or len(parts) not in (3, 5) or parts[1] != "dnsaddr":
            raise InvalidMultiaddr(f"expected /dnsaddr/<host>[/p2p/<id>], got {text!r}")
        peer: PeerId | None = None
        if len(parts) == 5:
            if parts[3] not in ("p2p", "ipfs"):
                raise InvalidMultiaddr(f"expected /p2p/<id> after the host in {text!r}")
            peer = PeerId.from_string(parts[4])
        return cls(parts[2], peer)

    def __str__(self) -> str:
        text = f"/dnsaddr/{self.host}"
        if self.peer_id is not None:
            text += f"/p2p/{self.peer_id}"
        return text


def parse_address(text: str) -> Multiaddr | Dnsaddr:
    """A dialable TCP multiaddr, or a `/dnsaddr/` one still to be resolved."""
    if isinstance(text, str) and text.startswith("/dnsaddr/"):
        return Dnsaddr.parse(text)
    return Multiaddr.parse(text)
