"""The trio driver over in-memory streams: handshake, framing, failures."""

from __future__ import annotations

import os
from typing import Awaitable, Callable

import pytest
import trio
import trio.testing
from trio.testing import lockstep_stream_pair, memory_stream_pair

from shoal.p2p.errors import DecryptError, HandshakeError, PeerIdMismatch, RemoteProtocolError
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.noise import MAX_MESSAGE
from shoal.p2p.secure.secure_stream import (
    FrameDecoder, SecureStream, encode_frame, secure_accept, secure_dial,
)

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
MALLORY = Identity.from_seed(b"m" * 32)


async def connect(
    left: trio.abc.Stream, right: trio.abc.Stream, expected: Identity | None = BOB
) -> tuple[SecureStream, SecureStream]:
    """Dial from ALICE on `left`, accept as BOB on `right`."""
    results: dict[str, SecureStream] = {}

    async def accept() -> None:
        results["b"] = await secure_accept(right, BOB)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        results["a"] = await secure_dial(left, ALICE, expected.peer_id if expected else None)
    return results["a"], results["b"]


@pytest.mark.parametrize("pair_factory", [memory_stream_pair, lockstep_stream_pair])
async def test_happy_path_both_ways(pair_factory: object) -> None:
    left, right = pair_factory()  # type: ignore[operator]
    a, b = await connect(left, right)
    assert a.remote_peer == BOB.peer_id and b.remote_peer == ALICE.peer_id
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, b"hello bob")
        assert await b.receive_some(100) == b"hello bob"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.send_all, b"hello alice")
        assert await a.receive_some(5) == b"hello"
        assert await a.receive_some(100) == b" alice"
    await a.aclose()
    assert await b.receive_some(10) == b""
    await b.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"late")


async def test_dial_without_expected_peer_learns_it() -> None:
    a, b = await connect(*memory_stream_pair(), expected=None)
    assert a.remote_peer == BOB.peer_id


Side = Callable[[], Awaitable[object]]


async def both(dial: Side, accept: Side) -> list[object]:
    """Run both sides to the end; return each one's result or exception."""
    out: list[object] = [None, None]

    async def run(i: int, fn: Side) -> None:
        try:
            out[i] = await fn()
        except Exception as exc:
            out[i] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0, dial)
        nursery.start_soon(run, 1, accept)
    return out


async def test_wrong_expected_peer() -> None:
    left, right = memory_stream_pair()
    dialled, accepted = await both(
        lambda: secure_dial(left, ALICE, MALLORY.peer_id), lambda: secure_accept(right, BOB)
    )
    assert isinstance(dialled, PeerIdMismatch)
    # The dialler hung up before sending message 3, so Bob never learns who called.
    assert isinstance(accepted, HandshakeError) and not isinstance(accepted, PeerIdMismatch)


async def test_big_payload_round_trip() -> None:
    a, b = await connect(*memory_stream_pair())
    payload = os.urandom(3 * 1024 * 1024 + 7)
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, payload)
        while len(received) < len(payload):
            received += await b.receive_some(100_000)
    assert received == payload


async def test_frames_on_the_wire_are_bounded() -> None:
    """Sniff the raw transport: every frame is a length prefix plus <= 65535 bytes."""
    left, right = memory_stream_pair()
    a, b = await connect(left, right)
    decoder = FrameDecoder()

    async def sniff() -> None:
        data = await right.receive_some()
        decoder.feed(data)

    await a.send_all(b"\x00" * 200_000)
    sizes: list[int] = []
    while len(sizes) < 4:
        await sniff()
        while (frame := decoder.next_frame()) is not None:
            sizes.append(len(frame))
    assert sizes == [MAX_MESSAGE, MAX_MESSAGE, MAX_MESSAGE, 200_000 - 3 * (MAX_MESSAGE - 16) + 16]


def _inject(b: SecureStream) -> trio.abc.Stream:
    """Give `b` a fresh incoming byte source; return the end that feeds it.

    Tests first read Alice's encrypted frames off the real transport, then
    feed Bob copies that are altered, replayed or cut short.
    """
    feed, source = memory_stream_pair()
    b._reader._stream = source
    return feed


async def test_tampered_frame() -> None:
    s1, s2 = memory_stream_pair()
    a, b = await connect(s1, s2)
    await a.send_all(b"secret")
    tampered = bytearray(await s2.receive_some())
    tampered[5] ^= 1
    await _inject(b).send_all(bytes(tampered))
    with pytest.raises(DecryptError):
        await b.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await b.receive_some()


async def test_replayed_frame() -> None:
    s1, s2 = memory_stream_pair()
    a, b = await connect(s1, s2)
    await a.send_all(b"pay 10")
    raw = await s2.receive_some()
    await _inject(b).send_all(raw + raw)
    assert await b.receive_some() == b"pay 10"
    with pytest.raises(DecryptError):
        await b.receive_some()


async def test_truncated_frame_after_handshake() -> None:
    s1, s2 = memory_stream_pair()
    a, b = await connect(s1, s2)
    await a.send_all(b"abc")
    raw = await s2.receive_some()
    feed = _inject(b)
    await feed.send_all(raw[:-1])
    await feed.aclose()
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        await b.receive_some()


@pytest.mark.parametrize(
    "garbage",
    [
        b"",  # immediate EOF
        b"\x00",  # EOF inside the length prefix
        b"\x00\x30" + b"\x01" * 10,  # EOF inside the frame
        b"\x00\x05hello",  # a message too short to hold an ephemeral key
        encode_frame(os.urandom(32)) + encode_frame(os.urandom(200)),  # random third message
    ],
    # Named, not by their bytes: the random case's bytes differ between the
    # pytest-xdist workers, which must collect the same test ids.
    ids=["eof", "eof-in-prefix", "eof-in-frame", "too-short", "random-third-message"],
)
async def test_garbage_handshake_to_acceptor(garbage: bytes) -> None:
    left, right = memory_stream_pair()
    await left.send_all(garbage)
    await left.aclose()
    with pytest.raises(HandshakeError):
        await secure_accept(right, BOB)


async def test_garbage_handshake_to_dialler() -> None:
    left, right = memory_stream_pair()

    async def evil_responder() -> None:
        await right.receive_some()
        await right.send_all(encode_frame(os.urandom(200)))

    dialled, _ = await both(lambda: secure_dial(left, ALICE, BOB.peer_id), evil_responder)
    assert isinstance(dialled, HandshakeError)


async def test_handshake_timeout() -> None:
    left, right = memory_stream_pair()  # nobody ever dials
    with pytest.raises(HandshakeError, match="longer than"):
        await secure_accept(right, BOB, timeout=0.05)
    # The transport was closed for us.
    with pytest.raises(trio.ClosedResourceError):
        await right.send_all(b"x")


async def test_concurrent_receivers_are_refused() -> None:
    a, b = await connect(*memory_stream_pair())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await b.receive_some()
        await a.send_all(b"unblock")


def test_frame_decoder_handles_split_input() -> None:
    frames = [b"", b"a", b"x" * 1000, b"y" * MAX_MESSAGE]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(wire), 7):
        decoder.feed(wire[i : i + 7])
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == frames and decoder.pending == 0
    with pytest.raises(ValueError):
        encode_frame(b"z" * (MAX_MESSAGE + 1))


def test_frame_decoder_keeps_a_read_and_joins_only_the_straddling_frame() -> None:
    """Frames whole inside one read are views of that read (no copy of the read
    into a buffer); only the frame cut by a read boundary is joined."""
    frames = [os.urandom(n) for n in (65535, 65535, 1000, 65535, 7)]
    wire = b"".join(encode_frame(f) for f in frames)
    cut = 2 + 65535 + 2 + 30_000  # inside the second frame
    first, second = wire[:cut], wire[cut:]
    decoder = FrameDecoder()
    decoder.feed(first)
    view = decoder.next_frame_view()
    assert view is not None and bytes(view) == frames[0]
    assert view.obj is first  # the read itself, not a copy of it
    assert decoder.next_frame_view() is None
    assert decoder.pending == 2 + 30_000
    decoder.feed(second)
    assert decoder.declared_size() == 65535
    # Holds at most the read plus the one joined frame.
    assert decoder.pending == len(second) + 2 + 30_000
    got = []
    while (view := decoder.next_frame_view()) is not None:
        got.append((bytes(view), view.obj is second))
    assert [g for g, _ in got] == frames[1:]
    assert [whole for _, whole in got] == [False, True, True, True]
    assert decoder.pending == 0


@pytest.mark.parametrize("seed", range(20))
def test_frame_decoder_any_split_gives_the_frames_in_order(seed: int) -> None:
    """Random frame sizes and random read boundaries (1 byte up to several
    frames, also cutting a length prefix): the same frames, in order, and the
    buffered bytes never exceed one read plus one frame."""
    import random

    rng = random.Random(seed)
    frames = [rng.randbytes(rng.choice((0, 1, 2, 100, 65534, 65535, rng.randrange(65536))))
              for _ in range(40)]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got: list[bytes] = []
    pos = 0
    while pos < len(wire):
        n = rng.choice((1, 2, 3, rng.randrange(1, 70_000), rng.randrange(1, 300_000)))
        data = wire[pos : pos + n]
        pos += len(data)
        decoder.feed(bytearray(data) if rng.random() < 0.2 else data)
        assert decoder.pending <= len(data) + 2 + MAX_MESSAGE
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
    assert got == frames
    assert decoder.pending == 0


def test_frame_views_split_at_every_offset() -> None:
    """Frames of one read taken in one call, the wire cut at every offset
    (inside a prefix, inside a body, between frames): the same frames in
    order, each once, and a partial frame kept for the next read."""
    frames = [b"", b"a", os.urandom(300), b"end"]
    wire = b"".join(encode_frame(f) for f in frames)
    for cut in range(len(wire) + 1):
        decoder = FrameDecoder()
        got: list[bytes] = []
        for data in (wire[:cut], wire[cut:]):
            decoder.feed(data)
            got += [bytes(v) for v in decoder.frame_views()]
            assert decoder.frame_views() == []
        assert got == frames
        assert decoder.pending == 0


def test_frame_views_several_reads_with_straddling_frames() -> None:
    """Random reads over many frames, `frame_views` after each: in order, the
    straddling frame first, at most one read plus one frame held."""
    import random

    rng = random.Random(7)
    frames = [rng.randbytes(rng.choice((0, 5, 65535, rng.randrange(65536)))) for _ in range(60)]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got: list[bytes] = []
    pos = 0
    while pos < len(wire):
        data = wire[pos : pos + rng.choice((1, 3, rng.randrange(1, 200_000)))]
        pos += len(data)
        decoder.feed(data)
        assert decoder.pending <= len(data) + 2 + MAX_MESSAGE
        got += [bytes(v) for v in decoder.frame_views()]
    assert got == frames and decoder.pending == 0


@pytest.mark.parametrize("sizes", [
    [4, 1 << 20],  # a Shoal frame: header, then a block
    [12, 65507, 12, 65507, 12, 3],  # yamux headers and payloads: frames spanning parts
    [0, 65519, 0, 65519 * 2, 1],  # empty parts, exact multiples of a frame
    [1] * 70,  # many tiny parts in one frame
])
async def test_send_all_parts_is_one_write_cut_as_send_all(sizes: list[int]) -> None:
    """The parts' frames are sealed into one wire buffer: one transport write,
    frames cut at the same 65519-byte plaintext boundaries as `send_all` of
    the join, and the peer reads exactly the join."""
    left, right = memory_stream_pair()
    a, b = await connect(left, right)
    writes: list[bytes] = []
    send_all = a.transport.send_all

    async def recording(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        await send_all(data)

    a.transport.send_all = recording  # type: ignore[method-assign]
    parts = [os.urandom(n) for n in sizes]
    whole = b"".join(parts)
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all_parts, parts)
        while len(got) < len(whole):
            got += await b.receive_some()
    assert bytes(got) == whole
    (wire,) = writes
    lengths, pos = [], 0
    while pos < len(wire):
        n = int.from_bytes(wire[pos : pos + 2], "big")
        lengths.append(n)
        pos += 2 + n
    full, rest = divmod(len(whole), MAX_MESSAGE - 16)
    assert lengths == [MAX_MESSAGE] * full + ([rest + 16] if rest else [])
