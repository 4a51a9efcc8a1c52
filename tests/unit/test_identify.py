"""Identify codec and binary multiaddrs: round trips, bounds, fuzzing, spoofed keys."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from shoal.p2p.errors import RemoteProtocolError
from shoal.p2p.libp2p.identify import (
    MAX_IDENTIFY, IdentifyInfo, decode_identify, decode_multiaddr, encode_identify,
    encode_multiaddr, identify, send_identify,
)
from shoal.p2p.secure.identity import Identity, protobuf_bytes_field
from shoal.p2p.secure.multiaddr import Multiaddr


@pytest.mark.parametrize("text", [
    "/ip4/127.0.0.1/tcp/4101",
    "/ip6/::1/tcp/1",
    "/dns4/example.org/tcp/443",
    "/ip4/10.0.0.7/tcp/65535/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
])
def test_binary_multiaddr_round_trip(text: str) -> None:
    addr = Multiaddr.parse(text)
    assert decode_multiaddr(encode_multiaddr(addr)) == str(addr)


def test_known_binary_form() -> None:
    # /ip4/127.0.0.1/tcp/4001 as every libp2p implementation encodes it.
    assert encode_multiaddr(Multiaddr.parse("/ip4/127.0.0.1/tcp/4001")) == bytes.fromhex("047f000001060fa1")


def test_identify_round_trip_and_peer() -> None:
    me = Identity.generate()
    info = IdentifyInfo(
        public_key=me.public_key_proto,
        listen_addrs=(encode_multiaddr(Multiaddr.parse("/ip4/1.2.3.4/tcp/5")),),
        protocols=("/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"),
        observed_addr=encode_multiaddr(Multiaddr.parse("/ip4/5.6.7.8/tcp/9")),
        protocol_version="ipfs/0.1.0",
        agent_version="shoal/0.1.0",
    )
    back = decode_identify(encode_identify(info))
    assert back == info
    assert back.peer_id() == me.peer_id
    assert back.listen_addr_texts() == ["/ip4/1.2.3.4/tcp/5"]


def test_bounds() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_identify(bytes(MAX_IDENTIFY + 1))
    many = b"".join(protobuf_bytes_field(3, b"/p") for _ in range(129))
    with pytest.raises(RemoteProtocolError):
        decode_identify(many)
    with pytest.raises(RemoteProtocolError):
        decode_identify(protobuf_bytes_field(6, b"\xff\xfe"))


async def test_identify_refuses_a_key_that_is_not_the_connections_peer() -> None:
    honest, liar = Identity.generate(), Identity.generate()
    left, right = trio.testing.memory_stream_pair()
    await send_identify(left, IdentifyInfo(public_key=liar.public_key_proto))
    with pytest.raises(RemoteProtocolError):
        await identify(right, honest.peer_id)


async def test_identify_refuses_an_oversized_length_before_reading_it() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(b"\x81\x80\x01")  # 16385 > 8 KiB, and no body follows
    with pytest.raises(RemoteProtocolError):
        await identify(right)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoders_raise_only_protocol_errors(data: bytes) -> None:
    try:
        info = decode_identify(data)
        info.listen_addr_texts()
        info.peer_id()
    except RemoteProtocolError:
        pass
    try:
        decode_multiaddr(data)
    except RemoteProtocolError:
        pass
