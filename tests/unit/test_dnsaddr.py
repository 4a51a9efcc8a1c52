"""/dnsaddr multiaddrs: parsing, bounded recursive resolution, the TXT codec."""

from __future__ import annotations

import struct

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.p2p.errors import InvalidMultiaddr
from shoal.p2p.net.dns_txt import (
    DnsError,
    UdpTxtResolver,
    build_txt_query,
    parse_txt_response,
)
from shoal.p2p.net.dnsaddr import resolve_dnsaddr
from shoal.p2p.secure.multiaddr import Dnsaddr, Multiaddr, parse_address

# Two of kubo's bootstrap peer ids (RSA, sha256 multihashes).
NB = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
SJ = "QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt"


class FakeResolver:
    """TXT records from a dict; records every name asked for."""

    def __init__(self, zone: dict[str, list[str]]) -> None:
        self.zone = zone
        self.asked: list[str] = []

    async def txt(self, name: str) -> list[str]:
        self.asked.append(name)
        if name == "_dnsaddr.broken.example":
            raise DnsError("server failure")
        return self.zone.get(name, [])


KUBO_LIKE = {
    "_dnsaddr.bootstrap.libp2p.io": [
        f"dnsaddr=/dnsaddr/nb.bootstrap.libp2p.io/p2p/{NB}",
        f"dnsaddr=/dnsaddr/sj.bootstrap.libp2p.io/p2p/{SJ}",
    ],
    "_dnsaddr.nb.bootstrap.libp2p.io": [
        f"dnsaddr=/ip4/139.178.91.71/tcp/4001/p2p/{NB}",
        f"dnsaddr=/ip4/139.178.91.71/udp/4001/quic-v1/p2p/{NB}",
        f"dnsaddr=/ip6/2604:1380:45e3:6e00::1/tcp/4001/p2p/{NB}",
        f"dnsaddr=/ip4/6.6.6.6/tcp/4001/p2p/{SJ}",  # another peer: filtered out
        "some-other-txt-record",
    ],
    "_dnsaddr.sj.bootstrap.libp2p.io": [
        f"dnsaddr=/ip4/145.40.118.135/tcp/4001/p2p/{SJ}",
        f"dnsaddr=/dns4/sj.example/tcp/4001/p2p/{SJ}",
    ],
}


def test_parse_address() -> None:
    d = parse_address(f"/dnsaddr/Bootstrap.libp2p.io/p2p/{NB}")
    assert isinstance(d, Dnsaddr) and d.host == "bootstrap.libp2p.io"
    assert str(d) == f"/dnsaddr/bootstrap.libp2p.io/p2p/{NB}"
    assert parse_address("/dnsaddr/bootstrap.libp2p.io") == Dnsaddr("bootstrap.libp2p.io")
    assert isinstance(parse_address("/ip4/1.2.3.4/tcp/1"), Multiaddr)
    for bad in ["/dnsaddr/", "/dnsaddr/a..b", "/dnsaddr/x/tcp/1", "/dnsaddr/x/p2p/nope"]:
        with pytest.raises(InvalidMultiaddr):
            parse_address(bad)


async def test_resolves_kubo_style_two_levels_filtered_by_peer() -> None:
    resolver = FakeResolver(KUBO_LIKE)
    got = await resolve_dnsaddr(Dnsaddr("bootstrap.libp2p.io"), resolver)
    assert [str(a) for a in got] == [
        f"/ip4/139.178.91.71/tcp/4001/p2p/{NB}",
        f"/ip6/2604:1380:45e3:6e00::1/tcp/4001/p2p/{NB}",
        f"/ip4/145.40.118.135/tcp/4001/p2p/{SJ}",
        f"/dns4/sj.example/tcp/4001/p2p/{SJ}",
    ]
    only_sj = await resolve_dnsaddr(Dnsaddr.parse(f"/dnsaddr/bootstrap.libp2p.io/p2p/{SJ}"), resolver)
    assert {str(a.peer_id) for a in only_sj} == {SJ} and len(only_sj) == 2


async def test_recursion_and_counts_are_bounded() -> None:
    loop = {"_dnsaddr.a.example": ["dnsaddr=/dnsaddr/a.example"]}
    resolver = FakeResolver(loop)
    assert await resolve_dnsaddr(Dnsaddr("a.example"), resolver, max_depth=4) == []
    assert len(resolver.asked) == 4
    many = {"_dnsaddr.m.example": [f"dnsaddr=/ip4/10.0.0.1/tcp/{p}" for p in range(1, 500)]}
    assert len(await resolve_dnsaddr(Dnsaddr("m.example"), FakeResolver(many), max_results=10)) == 10
    wide = {"_dnsaddr.w.example": [f"dnsaddr=/dnsaddr/n{i}.example" for i in range(100)]}
    resolver = FakeResolver(wide)
    await resolve_dnsaddr(Dnsaddr("w.example"), resolver, max_lookups=5)
    assert len(resolver.asked) == 5


async def test_failed_branch_does_not_spoil_the_rest() -> None:
    zone = {"_dnsaddr.top.example": ["dnsaddr=/dnsaddr/broken.example", "dnsaddr=/ip4/1.2.3.4/tcp/5"]}
    got = await resolve_dnsaddr(Dnsaddr("top.example"), FakeResolver(zone))
    assert got == [Multiaddr("1.2.3.4", 5)]


# -- the DNS codec -------------------------------------------------------------


def _name(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"


def make_answer(qid: int, name: str, records: list[tuple[bytes, int, bytes]], flags: int = 0x8180) -> bytes:
    msg = struct.pack(">HHHHHH", qid, flags, 1, len(records), 0, 0)
    msg += _name(name) + struct.pack(">HH", 16, 1)
    for owner, rtype, rdata in records:
        msg += owner + struct.pack(">HHIH", rtype, 1, 60, len(rdata)) + rdata
    return msg


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


def test_query_layout() -> None:
    q = build_txt_query("_dnsaddr.bootstrap.libp2p.io", 0x1234)
    assert q[:12] == bytes.fromhex("123401000001000000000001")
    assert q[12:].startswith(_name("_dnsaddr.bootstrap.libp2p.io") + b"\x00\x10\x00\x01")
    assert q.endswith(b"\x00\x00\x29\x10\x00" + b"\x00" * 6)
    with pytest.raises(DnsError):
        build_txt_query("a" * 64 + ".example", 1)


def test_parse_answer_with_compression_and_cname() -> None:
    name = "_dnsaddr.x.example"
    ptr = b"\xc0\x0c"  # the question's name
    cname_target = _name("y.example")
    msg = make_answer(7, name, [
        (ptr, 16, txt(b"dnsaddr=/ip4/1.2.3.4/tcp/5")),
        (ptr, 16, txt(b"dnsaddr=/ip4/", b"9.9.9.9/tcp/1")),  # two strings, joined
        (ptr, 5, cname_target),
        (cname_target, 16, txt(b"via-cname")),
        (_name("unrelated.example"), 16, txt(b"not ours")),
    ])
    assert parse_txt_response(msg, 7, name) == [
        "dnsaddr=/ip4/1.2.3.4/tcp/5", "dnsaddr=/ip4/9.9.9.9/tcp/1", "via-cname",
    ]


@pytest.mark.parametrize("mutate", [
    lambda m: m[:11],                                  # short header
    lambda m: b"\x00\x08" + m[2:],                     # another id
    lambda m: m[:2] + b"\x01\x00" + m[4:],             # a query, not an answer
    lambda m: m[:2] + b"\x83\x80" + m[4:],             # truncated (TC)
    lambda m: m[:2] + b"\x81\x82" + m[4:],             # SERVFAIL
    lambda m: m[:-3],                                   # cut record
    lambda m: m[:12] + b"\xc0\x0c" + m[12:],            # pointer loop in the question
])
def test_parse_refuses_malformed(mutate: object) -> None:
    msg = make_answer(7, "a.example", [(b"\xc0\x0c", 16, txt(b"hi"))])
    with pytest.raises(DnsError):
        parse_txt_response(mutate(msg), 7, "a.example")  # type: ignore[operator]


def test_nxdomain_is_empty() -> None:
    assert parse_txt_response(make_answer(3, "a.example", [], flags=0x8183), 3, "a.example") == []


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 299), st.binary(max_size=8))
def test_parse_fuzz(noise: bytes, pos: int, patch: bytes) -> None:
    """Random and patched answers: a list of strings or DnsError, nothing else."""
    base = make_answer(9, "a.example", [(b"\xc0\x0c", 16, txt(b"dnsaddr=/ip4/1.2.3.4/tcp/5"))])
    patched = base[:pos] + patch + base[pos + len(patch):]
    for msg in (noise, patched, b"\x00\x09" + noise):
        try:
            result = parse_txt_response(msg, 9, "a.example")
        except DnsError:
            continue
        assert all(isinstance(s, str) for s in result)


async def test_udp_resolver_against_a_loopback_server() -> None:
    """The trio driver: one datagram out, a stray one ignored, ours parsed."""
    server = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]

    async def serve() -> None:
        query, peer = await server.recvfrom(4096)
        qid = int.from_bytes(query[:2], "big")
        await server.sendto(make_answer(qid ^ 1, "_dnsaddr.a.example", []), peer)
        await server.sendto(make_answer(qid, "_dnsaddr.a.example",
                                        [(b"\xc0\x0c", 16, txt(b"dnsaddr=/ip4/1.2.3.4/tcp/5"))]), peer)

    with server, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            resolver = UdpTxtResolver("127.0.0.1", port, timeout=5)
            got = await resolve_dnsaddr(Dnsaddr("a.example"), resolver)
    assert got == [Multiaddr("1.2.3.4", 5)]
    # No answer at all: a DnsError after the timeout, not a hang.
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    with silent, pytest.raises(DnsError):
        await UdpTxtResolver("127.0.0.1", silent.getsockname()[1], timeout=0.3).txt("a.example")
