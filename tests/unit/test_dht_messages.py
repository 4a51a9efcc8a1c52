"""The kad-dht protobuf codec and framing (shoal.p2p.dht.messages): exact bytes,
round trips, bounds checked before allocation, and random bytes only ever
raising DHTMessageError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import varint

from shoal.p2p.dht import messages as m
from shoal.p2p.dht.messages import (
    ConnectionType,
    DHTMessageError,
    FrameReader,
    Message,
    MessageType,
    PeerInfo,
    Record,
    decode,
    encode,
    frame,
)
from shoal.p2p.errors import P2PError, RemoteProtocolError


def test_known_bytes_of_a_find_node_request_and_response() -> None:
    # Written out by hand from the .proto: type=4 (field 1 varint), key (field 2).
    assert encode(Message(MessageType.FIND_NODE, key=b"abc")) == b"\x08\x04\x12\x03abc"
    peer = PeerInfo(b"\x01\x02", (b"\x04\x7f\x00\x00\x01",), ConnectionType.CONNECTED)
    body = encode(Message(MessageType.FIND_NODE, closer_peers=(peer,)))
    # closerPeers = field 8, length-delimited: Peer{id=1, addrs=2, connection=3}
    inner = b"\x0a\x02\x01\x02" + b"\x12\x05\x04\x7f\x00\x00\x01" + b"\x18\x01"
    assert body == b"\x08\x04" + b"\x42" + bytes([len(inner)]) + inner
    assert decode(body).closer_peers == (peer,)
    # PUT_VALUE is type 0: proto3 omits it, and an empty body decodes to it.
    assert encode(Message(MessageType.PUT_VALUE)) == b""
    assert decode(b"").type is MessageType.PUT_VALUE


def test_negative_cluster_level_is_a_ten_byte_varint_and_round_trips() -> None:
    body = encode(Message(MessageType.PING, cluster_level=-1))
    assert body.endswith(b"\x50" + b"\xff" * 9 + b"\x01")
    assert decode(body).cluster_level == -1


def test_unknown_fields_are_skipped_and_unknown_type_refused() -> None:
    extra = b"\x08\x03" + b"\x3a\x02hi" + b"\x7d\x00\x00\x00\x00"  # field 7 bytes, field 15 fixed32
    assert decode(extra).type is MessageType.GET_PROVIDERS
    with pytest.raises(DHTMessageError, match="unknown message type"):
        decode(b"\x08\x09")


def test_errors_belong_to_the_p2p_hierarchy() -> None:
    assert issubclass(DHTMessageError, RemoteProtocolError) and issubclass(DHTMessageError, P2PError)


peer_ids = st.binary(min_size=1, max_size=m.MAX_PEER_ID_LEN)
peers = st.builds(
    PeerInfo,
    peer_ids,
    st.lists(st.binary(max_size=64), max_size=m.MAX_ADDRS).map(tuple),
    st.sampled_from(ConnectionType),
)
records = st.builds(Record, st.binary(max_size=64), st.binary(max_size=256), st.text(max_size=16).filter(
    lambda s: len(s.encode()) <= m.MAX_TIME_LEN))
messages = st.builds(
    Message,
    st.sampled_from(MessageType),
    st.binary(max_size=80),
    st.none() | records,
    st.lists(peers, max_size=25).map(tuple),
    st.lists(peers, max_size=5).map(tuple),
    st.integers(-(2**31), 2**31 - 1),
)


@given(messages)
@settings(max_examples=200, deadline=None)
def test_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@given(st.lists(messages, min_size=1, max_size=4), st.integers(1, 50))
@settings(max_examples=100, deadline=None)
def test_frame_reader_reassembles_any_split(msgs: list[Message], chunk: int) -> None:
    stream = b"".join(frame(x) for x in msgs)
    reader = FrameReader()
    out = []
    for i in range(0, len(stream), chunk):
        reader.feed(stream[i : i + chunk])
        while (got := reader.next_message()) is not None:
            out.append(got)
    assert out == msgs and reader.buffered == 0


@given(st.binary(max_size=600))
@settings(max_examples=600, deadline=None)
def test_random_bytes_only_raise_the_package_error(data: bytes) -> None:
    try:
        decode(data)
    except DHTMessageError:
        pass
    reader = FrameReader(max_size=4096)
    try:
        reader.feed(data)
        while reader.next_message() is not None:
            pass
    except DHTMessageError:
        pass


@given(messages, st.integers(0, 10_000), st.integers(0, 255))
@settings(max_examples=300, deadline=None)
def test_mutated_messages_only_raise_the_package_error(msg: Message, pos: int, byte: int) -> None:
    body = bytearray(encode(msg))
    if body:
        body[pos % len(body)] = byte
    try:
        decode(bytes(body))
    except DHTMessageError:
        pass


def test_oversized_frame_is_refused_from_its_length_prefix_alone() -> None:
    reader = FrameReader()
    reader.feed(bytes(varint.encode(m.MAX_MESSAGE_SIZE + 1)))  # no body sent at all
    with pytest.raises(DHTMessageError, match="exceeds"):
        reader.next_message()
    reader = FrameReader()
    reader.feed(b"\xff" * 10)
    with pytest.raises(DHTMessageError, match="varint too long"):
        reader.next_message()
    assert FrameReader().next_message() is None


def test_reader_refuses_to_buffer_without_bound() -> None:
    reader = FrameReader(max_size=100)
    reader.feed(bytes(varint.encode(100)) + b"x" * 50)
    with pytest.raises(DHTMessageError, match="unread"):
        reader.feed(b"y" * 200)


def _peer_field(pid: bytes, n_addrs: int = 0) -> bytes:
    inner = b"\x0a" + bytes([len(pid)]) + pid + b"\x12\x01a" * n_addrs
    return b"\x42" + bytes(varint.encode(len(inner))) + inner


def test_counts_are_bounded_while_parsing() -> None:
    too_many_peers = b"\x08\x04" + b"".join(_peer_field(bytes([i % 250 + 1])) for i in range(m.MAX_PEERS + 1))
    with pytest.raises(DHTMessageError, match="peers"):
        decode(too_many_peers)
    ok = b"\x08\x04" + b"".join(_peer_field(bytes([i % 250 + 1])) for i in range(m.MAX_PEERS))
    assert len(decode(ok).closer_peers) == m.MAX_PEERS
    with pytest.raises(DHTMessageError, match="addrs"):
        decode(b"\x08\x04" + _peer_field(b"p", m.MAX_ADDRS + 1))
    with pytest.raises(DHTMessageError, match="without id"):
        decode(b"\x08\x04\x42\x00")
    with pytest.raises(DHTMessageError):
        decode(b"\x08\x04" + _peer_field(b"p" * (m.MAX_PEER_ID_LEN + 1)))
    with pytest.raises(DHTMessageError, match="larger"):
        decode(b"\x00" * (m.MAX_MESSAGE_SIZE + 1))


def test_wrong_wire_types_and_bad_utf8_are_refused() -> None:
    with pytest.raises(DHTMessageError, match="wrong wire type"):
        decode(b"\x0a\x01x")  # type as bytes
    with pytest.raises(DHTMessageError, match="wrong wire type"):
        decode(b"\x10\x01")  # key as varint
    with pytest.raises(DHTMessageError, match="UTF-8"):
        decode(b"\x1a\x03\x2a\x01\xff")  # Record.timeReceived = b"\xff"
