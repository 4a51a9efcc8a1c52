"""Multiaddr text parsing: canonical round trips, refusals, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.p2p.errors import InvalidMultiaddr
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.multiaddr import Multiaddr, parse_multiaddr

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("/ip4/127.0.0.1/tcp/4101", None),
        (f"/ip4/127.0.0.1/tcp/4101/p2p/{PEER}", None),
        (f"/ip4/10.0.0.1/tcp/0/ipfs/{PEER}", f"/ip4/10.0.0.1/tcp/0/p2p/{PEER}"),
        ("/ip6/0:0:0:0:0:0:0:1/tcp/65535", "/ip6/::1/tcp/65535"),
        ("/dns4/Node-1.Example.org/tcp/80", "/dns4/node-1.example.org/tcp/80"),
        ("/dns6/localhost/tcp/1", None),
        ("/dns/a.b/tcp/1", None),
    ],
)
def test_parse_and_format(text: str, canonical: str | None) -> None:
    addr = parse_multiaddr(text)
    assert str(addr) == (canonical or text)
    assert Multiaddr.parse(str(addr)) == addr


def test_fields() -> None:
    addr = Multiaddr.parse(f"/ip4/1.2.3.4/tcp/5/p2p/{PEER}")
    assert (addr.host, addr.port, addr.family) == ("1.2.3.4", 5, "ip4")
    assert addr.peer_id == PeerId.from_string(PEER)
    assert addr.with_peer(None) == Multiaddr("1.2.3.4", 5)
    other = Identity.generate().peer_id
    assert addr.with_peer(other).peer_id == other


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/",
        "ip4/1.2.3.4/tcp/1",
        "/ip4/1.2.3.4/tcp/1/",
        "/ip4/1.2.3.4/udp/1",
        "/ip4/1.2.3.4/tcp/65536",
        "/ip4/1.2.3.4/tcp/-1",
        "/ip4/1.2.3.4/tcp/+1",
        "/ip4/1.2.3.4/tcp/01",
        "/ip4/1.2.3.4/tcp/\u0661",
        "/ip4/1.2.3/tcp/1",
        "/ip4/01.2.3.4/tcp/1",
        "/ip4/::1/tcp/1",
        "/ip6/1.2.3.4/tcp/1",
        "/ip6/fe80::1%eth0/tcp/1",
        "/dns4/-bad.com/tcp/1",
        "/dns4/b\u00e4d.com/tcp/1",
        "/dns4/a..b/tcp/1",
        "/ip4/1.2.3.4/tcp/1/p2p/notapeer",
        "/ip4/1.2.3.4/tcp/1/p2p",
        f"/ip4/1.2.3.4/tcp/1/quic/{PEER}",
        f"/p2p/{PEER}",
        "/unix/tmp/sock/tcp/1",
        "/ip4/1.2.3.4/tcp/1" + "/x" * 300,
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(InvalidMultiaddr):
        Multiaddr.parse(text)


def test_constructor_validates() -> None:
    with pytest.raises(InvalidMultiaddr):
        Multiaddr("1.2.3.4", 70000)
    with pytest.raises(InvalidMultiaddr):
        Multiaddr("1.2.3.4", True)
    with pytest.raises(InvalidMultiaddr):
        Multiaddr("1.2.3.4", 1, family="udp")  # type: ignore[arg-type]


@given(st.text(max_size=120))
def test_fuzz_text_only_raises_invalid_multiaddr(text: str) -> None:
    try:
        addr = Multiaddr.parse(text)
    except InvalidMultiaddr:
        return
    assert Multiaddr.parse(str(addr)) == addr


_segment = st.sampled_from(
    ["ip4", "ip6", "dns4", "tcp", "p2p", "1.2.3.4", "::1", "80", PEER, "a.b", ""]
)


@given(st.lists(_segment, max_size=8))
def test_fuzz_structured(segments: list[str]) -> None:
    text = "/" + "/".join(segments)
    try:
        addr = Multiaddr.parse(text)
    except InvalidMultiaddr:
        return
    assert Multiaddr.parse(str(addr)) == addr


@given(st.ip_addresses(), st.integers(0, 65535))
def test_round_trip_any_ip(ip: object, port: int) -> None:
    family = "ip4" if ip.version == 4 else "ip6"  # type: ignore[attr-defined]
    addr = Multiaddr.parse(f"/{family}/{ip}/tcp/{port}")
    assert addr.port == port
    assert Multiaddr.parse(str(addr)) == addr
