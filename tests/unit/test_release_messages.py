"""ReleaseRequest / ReleaseResponse on the wire: round trip, bounds, and
garbage through the decoder (only RemoteProtocolError may come out)."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.p2p.wire import limits as L
from shoal.p2p.wire.codec import decode, encode, error_code, error_request_id
from shoal.p2p.errors import LocalProtocolError, RemoteProtocolError
from shoal.p2p.wire.messages import (
    MESSAGE_TYPES, RESPONSES, Error, ErrorCode, Message, ReleaseRequest, ReleaseResponse,
)

req_ids = st.integers(1, L.MAX_REQUEST_ID)
cids = st.binary(min_size=L.MIN_CID_BYTES, max_size=L.MAX_CID_BYTES)
sigs = st.binary(min_size=L.SIGNATURE_BYTES, max_size=L.SIGNATURE_BYTES)
releases = st.one_of(
    st.builds(ReleaseRequest, req_ids, cids, sigs),
    st.builds(ReleaseResponse, req_ids, cids, st.booleans()),
)
CID = b"\x01\x55\x12\x20" + bytes(32)
SIG = bytes(range(64))


def test_registered_as_a_request_response_pair_with_fresh_codes() -> None:
    assert MESSAGE_TYPES[0x32] is ReleaseRequest and MESSAGE_TYPES[0x33] is ReleaseResponse
    assert len(MESSAGE_TYPES) == len({c.TYPE for c in MESSAGE_TYPES.values()})
    assert RESPONSES[ReleaseRequest] == (ReleaseResponse, Error)
    assert ReleaseRequest.ROLE == "request" and ReleaseResponse.ROLE == "response"


@settings(max_examples=300)
@given(releases)
def test_round_trip(msg: Message) -> None:
    wire = encode(msg)
    assert len(wire) <= L.MAX_FRAME_BYTES
    assert decode(wire) == msg
    assert encode(decode(wire)) == wire


def test_wire_layout_is_versioned_like_the_others() -> None:
    assert msgpack.unpackb(encode(ReleaseRequest(9, CID, SIG))) == [L.PROTOCOL_VERSION, 0x32, 9, CID, SIG]
    assert msgpack.unpackb(encode(ReleaseResponse(9, CID, True))) == [L.PROTOCOL_VERSION, 0x33, 9, CID, True]


def test_largest_encodings_fit_a_frame() -> None:
    big = bytes(L.MAX_CID_BYTES)
    for msg in (ReleaseRequest(L.MAX_REQUEST_ID, big, SIG), ReleaseResponse(L.MAX_REQUEST_ID, big, False)):
        assert len(encode(msg)) <= L.MAX_FRAME_BYTES and decode(encode(msg)) == msg


@pytest.mark.parametrize("build", [
    lambda: ReleaseRequest(0, CID, SIG),  # a request needs a fresh non-zero id
    lambda: ReleaseRequest(L.MAX_REQUEST_ID + 1, CID, SIG),
    lambda: ReleaseRequest(1, CID[: L.MIN_CID_BYTES - 1], SIG),
    lambda: ReleaseRequest(1, bytes(L.MAX_CID_BYTES + 1), SIG),
    lambda: ReleaseRequest(1, CID, SIG[:63]),
    lambda: ReleaseRequest(1, CID, SIG + b"\x00"),
    lambda: ReleaseRequest(1, bytearray(CID), SIG),  # type: ignore[arg-type]
    lambda: ReleaseRequest(1, CID.hex(), SIG),  # type: ignore[arg-type]
    lambda: ReleaseResponse(0, CID, True),  # a response echoes a real id
    lambda: ReleaseResponse(1, CID, 1),  # type: ignore[arg-type]  # an int is not a bool
    lambda: ReleaseResponse(1, CID, None),  # type: ignore[arg-type]
    lambda: ReleaseResponse(1, b"", True),
])
def test_invalid_releases_are_never_built(build: object) -> None:
    with pytest.raises(LocalProtocolError):
        build()  # type: ignore[operator]


def wire(*items: object) -> bytes:
    out: bytes = msgpack.packb(list(items), use_bin_type=True)
    return out


@pytest.mark.parametrize("payload", [
    wire(1, 0x32, 5, CID),  # too few fields
    wire(1, 0x32, 5, CID, SIG, b"x"),  # too many
    wire(1, 0x32, 5, CID, SIG[:10]),
    wire(1, 0x32, 5, "not-bin", SIG),
    wire(1, 0x32, 0, CID, SIG),
    wire(1, 0x33, 5, CID, 1),
    wire(1, 0x33, 5, CID, "true"),
    wire(1, 0x33, 5, CID[:3], True),
    wire(1, 0x33, 5, [CID], True),
])
def test_malformed_releases_are_refused_with_their_id(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(payload)
    assert error_code(info.value) == ErrorCode.MALFORMED
    assert error_request_id(info.value) == 5 or b"\x00" in payload[:4]


def test_newer_version_of_a_release_gets_its_own_code() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(wire(2, 0x32, 77, CID, SIG))
    assert error_code(info.value) == ErrorCode.UNSUPPORTED_VERSION and error_request_id(info.value) == 77


def _mutations(rng: random.Random, valid: bytes) -> bytes:
    kind = rng.randrange(5)
    buf = bytearray(valid)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if kind == 1:  # truncation
        return bytes(buf[: rng.randrange(len(buf))])
    if kind == 2:  # trailing junk
        return bytes(buf) + rng.randbytes(rng.randint(1, 8))
    if kind == 3:  # a field swapped for something weird
        weird: list[object] = [0, -1, 2**64 - 1, True, None, 1.5, "", "x" * 300, b"", bytes(65), [], [[[]]]]
        fields = msgpack.unpackb(valid)
        fields[rng.randrange(len(fields))] = rng.choice(weird)
        return wire(*fields)
    return rng.randbytes(rng.randint(0, 200))  # plain garbage


def test_fuzz_garbage_only_raises_the_protocol_error() -> None:
    rng = random.Random(20261128)
    corpus = [encode(ReleaseRequest(3, CID, SIG)), encode(ReleaseResponse(3, CID, False)),
              encode(ReleaseRequest(L.MAX_REQUEST_ID, bytes(L.MAX_CID_BYTES), SIG)),
              encode(ReleaseResponse(1, CID, True))]
    decoded = rejected = 0
    for _ in range(20_000):
        payload = _mutations(rng, rng.choice(corpus))
        try:
            msg = decode(payload)
        except RemoteProtocolError:
            rejected += 1
            continue
        decoded += 1
        assert type(msg) in (ReleaseRequest, ReleaseResponse)
        assert decode(encode(msg)) == msg  # whatever decodes is a valid message
    assert rejected > 5_000 and decoded > 100


def test_every_prefix_of_a_release_is_refused() -> None:
    """(Bit flips of both messages run in test_codec_fuzz.py with every other type.)"""
    for valid in (encode(ReleaseRequest(3, CID, SIG)), encode(ReleaseResponse(3, CID, True))):
        for cut in range(len(valid)):
            with pytest.raises(RemoteProtocolError):
                decode(valid[:cut])
