"""FrameDecoder: any chunking gives the same frames; hostile lengths never allocate."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.p2p.wire import limits as L
from shoal.p2p.errors import LocalProtocolError, RemoteProtocolError
from shoal.p2p.wire.framing import FrameDecoder, encode_frame


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def test_encode_frame_layout() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_encode_frame_refuses_empty_and_oversize() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"")
    with pytest.raises(LocalProtocolError):
        encode_frame(bytes(L.MAX_FRAME_BYTES + 1))
    assert len(encode_frame(bytes(L.MAX_FRAME_BYTES))) == L.MAX_FRAME_BYTES + 4


@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    st.lists(st.integers(0, 10_000), max_size=30),
)
def test_any_chunking_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    got: list[bytes] = []
    for chunk in chunked(stream, cuts):
        got += dec.feed(chunk)
        assert dec.buffered <= L.MAX_DECODER_BUFFER_BYTES
    assert got == payloads
    assert dec.at_boundary
    dec.end_of_stream()


def test_byte_at_a_time() -> None:
    payloads = [b"x", bytes(1000), b"hello"]
    dec = FrameDecoder()
    got = [f for b in b"".join(map(encode_frame, payloads)) for f in dec.feed(bytes([b]))]
    assert got == payloads


def test_feed_accepts_memoryview_and_bytearray() -> None:
    dec = FrameDecoder()
    assert dec.feed(memoryview(encode_frame(b"ab"))) == [b"ab"]
    assert dec.feed(bytearray(encode_frame(b"cd"))) == [b"cd"]


def test_max_size_frame_is_accepted_split_in_two() -> None:
    frame = encode_frame(bytes(L.MAX_FRAME_BYTES))
    dec = FrameDecoder()
    assert dec.feed(frame[:1000]) == []
    assert dec.buffered == 996
    assert dec.feed(frame[1000:]) == [bytes(L.MAX_FRAME_BYTES)]
    assert dec.buffered == 0


@pytest.mark.parametrize("declared", [L.MAX_FRAME_BYTES + 1, 2**31, 2**32 - 1])
def test_oversize_length_fails_before_buffering(declared: int) -> None:
    dec = FrameDecoder()
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="exceeds"):
            dec.feed(declared.to_bytes(4, "big") + bytes(64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert dec.buffered == 0


def test_oversize_length_detected_from_header_alone() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\xff\xff") == []
    with pytest.raises(RemoteProtocolError):
        dec.feed(b"\xff\xff")


def test_zero_length_frame_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="empty"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_decoder_is_poisoned_after_an_error() -> None:
    dec = FrameDecoder()
    with pytest.raises(RemoteProtocolError):
        dec.feed(b"\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError, match="already failed"):
        dec.feed(encode_frame(b"ok"))
    with pytest.raises(RemoteProtocolError):
        dec.end_of_stream()


@pytest.mark.parametrize("held", [b"\x00\x00", b"\x00\x00\x00\x05ab"])
def test_eof_inside_a_frame_is_an_error(held: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(held)
    assert not dec.at_boundary
    with pytest.raises(RemoteProtocolError, match="inside a frame"):
        dec.end_of_stream()


def test_custom_cap() -> None:
    dec = FrameDecoder(max_frame_bytes=10)
    assert dec.feed(encode_frame(bytes(10))) == [bytes(10)]
    with pytest.raises(RemoteProtocolError):
        dec.feed(encode_frame(bytes(11)))


def test_buffer_stays_bounded_under_random_streams() -> None:
    rng = random.Random(7)
    dec = FrameDecoder(max_frame_bytes=4096)
    for _ in range(2000):
        payload = rng.randbytes(rng.randint(1, 4096))
        frame = encode_frame(payload, max_frame_bytes=4096)
        cut = rng.randint(0, len(frame))
        got = dec.feed(frame[:cut]) + dec.feed(frame[cut:])
        assert got == [payload]
        assert dec.buffered <= 4 + 4096


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6))
def test_wanted_is_exactly_what_completes_the_frame_in_progress(payloads: list[bytes]) -> None:
    """Fed one byte short of `wanted`, nothing completes; one more byte completes
    the header or the frame: a reader may wait for `wanted` bytes and lose nothing."""
    wire = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    got: list[bytes] = []
    pos = 0
    while pos < len(wire):
        wanted = decoder.wanted
        assert 1 <= wanted <= len(wire) - pos
        assert decoder.feed(wire[pos : pos + wanted - 1]) == []
        pos += wanted - 1
        assert decoder.wanted == 1
        got += decoder.feed(wire[pos : pos + 1])
        pos += 1
    assert got == payloads and decoder.at_boundary and decoder.wanted == 4
