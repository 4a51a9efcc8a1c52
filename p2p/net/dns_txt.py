"""A bounded DNS TXT lookup over UDP, sans-IO codec plus a small trio driver.

Why our own: `/dnsaddr` bootstrap addresses (kubo's default list) are TXT
records, and the standard library resolves only addresses. A TXT query is
one UDP datagram each way; the codec below builds the query (with an EDNS0
OPT record so answers up to 4 KiB fit without TCP) and parses the answer
strictly: our id, QR set, one question, bounded name compression, TXT
records owned by the asked name or a CNAME of it. Everything malformed is a
`DnsError`; a truncated answer (TC) is refused rather than half used.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import trio

from shoal.p2p.errors import P2PError

__all__ = ["DnsError", "UdpTxtResolver", "build_txt_query", "parse_txt_response"]

TYPE_CNAME = 5
TYPE_TXT = 16
TYPE_OPT = 41
CLASS_IN = 1
EDNS_PAYLOAD = 4096
MAX_RECORDS = 64
MAX_POINTER_HOPS = 16
_RCODE_NXDOMAIN = 3


class DnsError(P2PError):
    """A DNS lookup failed or its answer was malformed."""


def _encode_name(name: str) -> bytes:
    name = name.rstrip(".").lower()
    if not name or len(name) > 253 or not name.isascii():
        raise DnsError(f"invalid DNS name {name!r}")
    out = bytearray()
    for label in name.split("."):
        if not 1 <= len(label) <= 63:
            raise DnsError(f"invalid DNS name {name!r}")
        out += bytes([len(label)]) + label.encode()
    return bytes(out + b"\x00")


def build_txt_query(name: str, query_id: int) -> bytes:
    """One recursive TXT query for `name`, with an EDNS0 OPT (4 KiB payload)."""
    header = query_id.to_bytes(2, "big") + b"\x01\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x01"
    question = _encode_name(name) + TYPE_TXT.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
    opt = b"\x00" + TYPE_OPT.to_bytes(2, "big") + EDNS_PAYLOAD.to_bytes(2, "big") + b"\x00" * 6
    return header + question + opt


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """A possibly compressed name at `pos`; returns it and the position after it."""
    labels: list[str] = []
    end = -1
    hops = 0
    total = 0
    while True:
        if pos >= len(msg):
            raise DnsError("truncated name")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsError("truncated name pointer")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DnsError("too many name pointers")
            if end < 0:
                end = pos + 2
            pos = (length & 0x3F) << 8 | msg[pos + 1]
            continue
        if length & 0xC0:
            raise DnsError("bad label type")
        pos += 1
        if length == 0:
            return ".".join(labels).lower(), (end if end >= 0 else pos)
        if pos + length > len(msg):
            raise DnsError("truncated label")
        total += length + 1
        if total > 255:
            raise DnsError("name too long")
        labels.append(msg[pos : pos + length].decode("latin-1"))
        pos += length


def parse_txt_response(msg: bytes, query_id: int, name: str) -> list[str]:
    """The TXT strings for `name` in a response; [] for NXDOMAIN or no records.

    Each record's character-strings are joined, as RFC 7208 does; bytes that
    are not UTF-8 make the record unusable, so it is skipped.
    """
    if len(msg) < 12:
        raise DnsError("DNS answer shorter than its header")
    if int.from_bytes(msg[0:2], "big") != query_id:
        raise DnsError("DNS answer for another query")
    flags = int.from_bytes(msg[2:4], "big")
    if not flags & 0x8000:
        raise DnsError("DNS message is not an answer")
    if flags & 0x0200:
        raise DnsError("DNS answer truncated")
    rcode = flags & 0x000F
    if rcode == _RCODE_NXDOMAIN:
        return []
    if rcode:
        raise DnsError(f"DNS error code {rcode}")
    qdcount, ancount = int.from_bytes(msg[4:6], "big"), int.from_bytes(msg[6:8], "big")
    if qdcount != 1:
        raise DnsError("DNS answer must echo one question")
    if ancount > MAX_RECORDS:
        raise DnsError(f"{ancount} DNS answer records")
    wanted = name.rstrip(".").lower()
    qname, pos = _read_name(msg, 12)
    if qname != wanted or pos + 4 > len(msg):
        raise DnsError("DNS answer echoes another question")
    pos += 4
    owners = {wanted}
    out: list[str] = []
    for _ in range(ancount):
        owner, pos = _read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DnsError("truncated DNS record")
        rtype = int.from_bytes(msg[pos : pos + 2], "big")
        rclass = int.from_bytes(msg[pos + 2 : pos + 4], "big")
        rdlen = int.from_bytes(msg[pos + 8 : pos + 10], "big")
        pos += 10
        if pos + rdlen > len(msg):
            raise DnsError("truncated DNS record data")
        rdata_start, pos = pos, pos + rdlen
        if rclass != CLASS_IN or owner not in owners:
            continue
        if rtype == TYPE_CNAME:
            target, _ = _read_name(msg, rdata_start)
            owners.add(target)
        elif rtype == TYPE_TXT:
            out.extend(_txt_strings(msg[rdata_start:pos]))
    return out


def _txt_strings(rdata: bytes) -> list[str]:
    parts = bytearray()
    i = 0
    while i < len(rdata):
        n = rdata[i]
        if i + 1 + n > len(rdata):
            raise DnsError("truncated TXT string")
        parts += rdata[i + 1 : i + 1 + n]
        i += 1 + n
    try:
        return [bytes(parts).decode("utf-8")]
    except UnicodeDecodeError:
        return []


def system_nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str:
    """The first `nameserver` of resolv.conf; DnsError when there is none."""
    try:
        lines = resolv_conf.read_text(errors="replace").splitlines()[:200]
    except OSError as exc:
        raise DnsError(f"no DNS server: {exc}") from None
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            return parts[1]
    raise DnsError(f"no nameserver in {resolv_conf}")


@dataclass
class UdpTxtResolver:
    """TXT lookups over UDP to one server (default: resolv.conf's first)."""

    nameserver: str | None = None
    port: int = 53
    timeout: float = 3.0

    async def txt(self, name: str) -> list[str]:
        server = self.nameserver or system_nameserver()
        query_id = secrets.randbelow(1 << 16)
        query = build_txt_query(name, query_id)
        family = trio.socket.AF_INET6 if ":" in server else trio.socket.AF_INET
        with trio.socket.socket(family, trio.socket.SOCK_DGRAM) as sock:
            try:
                await sock.connect((server, self.port))
                await sock.send(query)
                with trio.fail_after(self.timeout):
                    while True:  # skip stray datagrams until ours or the timeout
                        answer = await sock.recv(65535)
                        try:
                            return parse_txt_response(answer, query_id, name)
                        except DnsError as exc:
                            if "another query" not in str(exc):
                                raise
            except trio.TooSlowError:
                raise DnsError(f"no DNS answer for {name} from {server}") from None
            except OSError as exc:
                raise DnsError(f"DNS lookup of {name} failed: {exc}") from None
