"""Sans-IO yamux: frames, windows, half-close, reset, ping, GoAway, limits, fuzzing."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings, strategies as st

from shoal.p2p.errors import LocalProtocolError, RemoteProtocolError
from shoal.p2p.libp2p import yamux as y
from shoal.p2p.libp2p.yamux import Flag, FrameType, YamuxSession, encode_header

W = y.DEFAULT_WINDOW


def frames(data: bytes) -> list[tuple[int, int, int, int]]:
    """(type, flags, stream id, length) of every frame in `data`."""
    out, pos = [], 0
    while pos < len(data):
        _, t, f, sid, n = struct.unpack_from(">BBHII", data, pos)
        out.append((t, f, sid, n))
        pos += 12 + (n if t == FrameType.DATA else 0)
    return out


def test_open_ack_data_fin_both_ways() -> None:
    a, b = YamuxSession(True), YamuxSession(False)
    sid = a.open_stream()
    assert sid == 1 and a.open_stream() == 3
    assert a.send_data(sid, b"hello") == 5
    a.send_fin(sid)
    wire = a.data_to_send()
    assert frames(wire)[0] == (FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
    events = b.receive_data(wire)
    assert events == [y.StreamOpened(1), y.StreamOpened(3), y.StreamData(1, b"hello"), y.StreamEnded(1)]
    back = b.data_to_send()
    assert frames(back)[0] == (FrameType.WINDOW_UPDATE, Flag.ACK, 1, 0)
    # The half-closed stream still carries the other direction.
    assert b.send_data(1, b"world") == 5
    b.send_fin(1)
    events = a.receive_data(back + b.data_to_send())
    assert y.StreamData(1, b"world") in events and y.StreamEnded(1) in events
    assert not a.is_open(1) and not b.is_open(1)  # both FINs: forgotten on both sides
    with pytest.raises(LocalProtocolError):
        a.send_data(1, b"late")


def test_window_is_enforced_and_granted_at_half() -> None:
    a, b = YamuxSession(True), YamuxSession(False)
    sid = a.open_stream()
    assert a.send_data(sid, bytes(W + 100)) == W  # only one window's worth
    assert a.send_window(sid) == 0
    b.receive_data(a.data_to_send())
    b.consumed(sid, W // 2 - 1)
    assert not [f for f in frames(b.data_to_send()) if f[0] == FrameType.WINDOW_UPDATE and f[3]]
    b.consumed(sid, 1)
    grants = [f for f in frames(b.data_to_send()) if f[0] == FrameType.WINDOW_UPDATE]
    assert grants == [(FrameType.WINDOW_UPDATE, 0, sid, W // 2)]
    assert a.receive_data(encode_header(FrameType.WINDOW_UPDATE, 0, sid, W // 2)) == [y.WindowIncreased(sid)]
    assert a.send_window(sid) == W // 2


def test_exceeding_the_window_is_a_protocol_error_with_go_away() -> None:
    b = YamuxSession(False)
    b.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))
    b.data_to_send()
    # Refused on the header: the oversized payload is never waited for.
    with pytest.raises(RemoteProtocolError):
        b.receive_data(encode_header(FrameType.DATA, 0, 1, W + 1))
    assert frames(b.data_to_send()) == [(FrameType.GO_AWAY, 0, 0, y.GoAwayCode.PROTOCOL_ERROR)]
    with pytest.raises(LocalProtocolError):
        b.receive_data(b"")


def test_a_larger_receive_window_is_granted_with_syn_and_ack() -> None:
    big = 4 * W
    a, b = YamuxSession(True, receive_window=big), YamuxSession(False, receive_window=big)
    sid = a.open_stream()
    syn = a.data_to_send()
    assert frames(syn) == [(FrameType.WINDOW_UPDATE, Flag.SYN, sid, big - W)]
    assert b.receive_data(syn) == [y.StreamOpened(sid), y.WindowIncreased(sid)]
    assert b.send_window(sid) == big
    ack = b.data_to_send()
    assert frames(ack) == [(FrameType.WINDOW_UPDATE, Flag.ACK, sid, big - W)]
    a.receive_data(ack)
    assert a.send_window(sid) == big
    assert a.send_data(sid, bytes(big + 1)) == big
    b.receive_data(a.data_to_send())  # a whole 1 MiB window in: no error
    with pytest.raises(RemoteProtocolError):  # one byte more is past the window
        b.receive_data(encode_header(FrameType.DATA, 0, sid, 1) + b"x")
    with pytest.raises(LocalProtocolError):
        YamuxSession(True, receive_window=64 * 1024 * 1024)


def test_payload_is_passed_on_as_it_arrives() -> None:
    """Nothing of a Data frame is held back: pieces come out of each feed, FIN after the last."""
    b = YamuxSession(False)
    frame = encode_header(FrameType.DATA, Flag.SYN | Flag.FIN, 1, 10) + b"0123456789"
    assert b.receive_data(frame[:5]) == []  # only part of the header
    assert b.receive_data(frame[5:15]) == [y.StreamOpened(1), y.StreamData(1, b"012")]
    assert b.receive_data(frame[15:]) == [y.StreamData(1, b"3456789"), y.StreamEnded(1)]


def test_window_counts_across_frames() -> None:
    b = YamuxSession(False)
    b.receive_data(encode_header(FrameType.DATA, Flag.SYN, 1, W) + bytes(W))
    with pytest.raises(RemoteProtocolError):
        b.receive_data(encode_header(FrameType.DATA, 0, 1, 1) + b"x")


@pytest.mark.parametrize("bad", [
    encode_header(FrameType.DATA, Flag.SYN, 2, 0),  # listener's parity from the client side
    encode_header(FrameType.DATA, 0, 0, 0),  # stream 0
    encode_header(FrameType.PING, Flag.SYN, 5, 1),  # ping on a stream
    encode_header(FrameType.GO_AWAY, 0, 3, 0),
    b"\x01" + encode_header(FrameType.PING, Flag.SYN, 0, 1)[1:],  # version 1
    encode_header(7, 0, 1, 0),  # unknown type
    encode_header(FrameType.PING, 0, 0, 1),  # ping without SYN/ACK
])
def test_malformed_frames(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        YamuxSession(False).receive_data(bad)


def test_stream_id_reuse_is_refused() -> None:
    b = YamuxSession(False)
    b.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 3, 0))
    with pytest.raises(RemoteProtocolError):
        b.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))


def test_inbound_stream_limit_answers_rst() -> None:
    b = YamuxSession(False, max_inbound_streams=2)
    wire = b"".join(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, sid, 0) for sid in (1, 3, 5))
    assert b.receive_data(wire) == [y.StreamOpened(1), y.StreamOpened(3)]
    assert frames(b.data_to_send())[-1] == (FrameType.WINDOW_UPDATE, Flag.RST, 5, 0)
    # Data for the refused stream is dropped, not an error; closing one frees a slot.
    b.receive_data(encode_header(FrameType.DATA, 0, 5, 3) + b"abc")
    b.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0))
    assert b.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 7, 0)) == [y.StreamOpened(7)]


def test_reset_both_ways() -> None:
    a, b = YamuxSession(True), YamuxSession(False)
    sid = a.open_stream()
    b.receive_data(a.data_to_send())
    a.reset(sid)
    assert b.receive_data(a.data_to_send()) == [y.StreamReset(sid)]
    assert not b.is_open(sid)
    with pytest.raises(LocalProtocolError):
        a.send_data(sid, b"x")


def test_ping_and_go_away() -> None:
    a, b = YamuxSession(True), YamuxSession(False)
    opaque = a.ping()
    assert b.receive_data(a.data_to_send()) == []
    assert a.receive_data(b.data_to_send()) == [y.PingAnswered(opaque)]
    b.go_away(y.GoAwayCode.NORMAL)
    assert a.receive_data(b.data_to_send()) == [y.GoAwayReceived(0)]
    with pytest.raises(LocalProtocolError):
        a.open_stream()
    # After our own GoAway a peer's new stream is refused with RST.
    b.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))
    assert frames(b.data_to_send()) == [(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0)]


def test_data_after_fin_is_an_error() -> None:
    b = YamuxSession(False)
    b.receive_data(encode_header(FrameType.DATA, Flag.SYN | Flag.FIN, 1, 1) + b"a")
    with pytest.raises(RemoteProtocolError):
        b.receive_data(encode_header(FrameType.DATA, 0, 1, 1) + b"b")


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[bytes], list[tuple[str, int]], int]:
    n = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.sampled_from([0, 1, 17, 4096, 100_000, W, W + 3, 3 * W + 11]),
                          min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**32))
    rng = random.Random(seed)
    payloads = [rng.randbytes(s) for s in sizes]
    ops = draw(st.lists(st.tuples(st.sampled_from(["send", "pump", "read", "ping"]),
                                  st.integers(0, n - 1)), max_size=60))
    return payloads, ops, seed


@settings(max_examples=150, deadline=None)
@given(plans())
def test_random_interleavings_deliver_every_stream_in_order(
    plan: tuple[list[bytes], list[tuple[str, int]], int],
) -> None:
    payloads, ops, seed = plan
    rng = random.Random(seed ^ 0x5A5A)
    a = YamuxSession(True, receive_window=rng.choice([W, 3 * W]))
    b = YamuxSession(False, receive_window=rng.choice([W, 2 * W]))
    sids = [a.open_stream() for _ in payloads]
    sent = [0] * len(payloads)
    fin = [False] * len(payloads)
    got: dict[int, bytearray] = {sid: bytearray() for sid in sids}
    unread: dict[int, int] = {sid: 0 for sid in sids}
    ended: set[int] = set()
    wire_ab = bytearray()
    wire_ba = bytearray()

    def send(i: int) -> None:
        if sent[i] < len(payloads[i]):
            chunk = rng.randint(1, 300_000)
            sent[i] += a.send_data(sids[i], payloads[i][sent[i] : sent[i] + chunk])
        if sent[i] == len(payloads[i]) and not fin[i]:
            a.send_fin(sids[i])
            fin[i] = True

    def pump() -> None:
        wire_ab.extend(a.data_to_send())
        cut = rng.randint(0, len(wire_ab))  # random fragmentation of the byte stream
        for event in b.receive_data(bytes(wire_ab[:cut])):
            if isinstance(event, y.StreamData):
                got[event.stream_id] += event.data
                unread[event.stream_id] += len(event.data)
            elif isinstance(event, y.StreamEnded):
                ended.add(event.stream_id)
        del wire_ab[:cut]
        wire_ba.extend(b.data_to_send())
        cut = rng.randint(0, len(wire_ba))
        a.receive_data(bytes(wire_ba[:cut]))
        del wire_ba[:cut]

    def read(i: int) -> None:
        n = rng.randint(0, unread[sids[i]])
        unread[sids[i]] -= n
        b.consumed(sids[i], n)

    for op, i in ops:
        {"send": send, "pump": lambda _: pump(), "read": read, "ping": lambda _: a.ping()}[op](i)
    for _ in range(10_000):  # then drain: everything completes
        if len(ended) == len(sids):
            break
        for i in range(len(sids)):
            send(i)
            read(i)
        wire_ab.extend(a.data_to_send())
        for event in b.receive_data(bytes(wire_ab)):
            if isinstance(event, y.StreamData):
                got[event.stream_id] += event.data
                unread[event.stream_id] += len(event.data)
            elif isinstance(event, y.StreamEnded):
                ended.add(event.stream_id)
        wire_ab.clear()
        a.receive_data(bytes(wire_ba) + b.data_to_send())
        wire_ba.clear()
    assert ended == set(sids)
    for sid, payload in zip(sids, payloads):
        assert bytes(got[sid]) == payload


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda t, f, s, n: encode_header(t, f, s, n),
              st.integers(0, 4), st.integers(0, 15), st.integers(0, 8), st.integers(0, 70)),
), max_size=12), st.booleans())
def test_fuzz_decoder_raises_only_protocol_errors(pieces: list[bytes], client: bool) -> None:
    session = YamuxSession(client, max_inbound_streams=3)
    try:
        for piece in pieces:
            session.receive_data(piece)
            session.data_to_send()
    except RemoteProtocolError:
        assert session.failed


def test_send_data_parts_spans_parts_within_window_and_limit() -> None:
    """A frame may span parts (a Shoal frame's 4-byte header and the block
    after it share one Data frame); the window and the caller's limit bound
    what is taken; the peer reads exactly the concatenation."""
    big = 4 * W
    a, b = YamuxSession(True, receive_window=big), YamuxSession(False, receive_window=big)
    sid = a.open_stream()
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    payload = bytes(range(256)) * 4096  # 1 MiB
    parts = [memoryview(b"\x00\x10\x00\x04"), memoryview(payload[:7]), memoryview(payload[7:])]
    whole = b"".join(parts)
    assert a.send_data_parts(sid, parts, 100) == 100  # the caller's limit
    assert a.send_data_parts(sid, [memoryview(whole)[100:]], len(whole)) == big - 100  # the window
    wire = a.data_to_send()
    sizes = [f[3] for f in frames(wire) if f[0] == FrameType.DATA]
    rest = big - 100
    assert sizes == [100] + [y.MAX_SEND_FRAME] * (rest // y.MAX_SEND_FRAME) + [rest % y.MAX_SEND_FRAME]
    got = b"".join(e.data for e in b.receive_data(wire) if isinstance(e, y.StreamData))
    assert got == whole[:big]
    assert a.send_window(sid) == 0 and a.send_data_parts(sid, [memoryview(whole)], 10) == 0


def test_send_data_parts_one_frame_for_a_header_and_its_block() -> None:
    a, b = YamuxSession(True, receive_window=4 * W), YamuxSession(False, receive_window=4 * W)
    sid = a.open_stream()
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    header, block = memoryview(b"\x00\x00\x10\x00"), memoryview(bytes(4096))
    assert a.send_data_parts(sid, [header, block], 1 << 20) == 4100
    assert [f[3] for f in frames(a.data_to_send())] == [4100]  # not one frame per part
    with pytest.raises(LocalProtocolError):
        a.send_data_parts(99, [header], 10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=8), st.data())
def test_receive_data_parts_is_receive_data_of_each(sizes: list[int], data: st.DataObject) -> None:
    """The events of `receive_data_parts(parts)` are those of `receive_data`
    on each part in turn, however the wire is cut (inside headers, inside
    payloads, exactly at frame ends), including the all-payload fast path."""
    a = YamuxSession(True)
    sid = a.open_stream()
    for n in sizes:
        a.send_data(sid, bytes([n % 251]) * n)
    a.send_fin(sid)
    wire = a.data_to_send()
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(wire)), max_size=12))))
    parts = [wire[i:j] for i, j in zip([0, *cuts], [*cuts, len(wire)])]
    one, many = YamuxSession(False), YamuxSession(False)
    expected = [e for p in parts for e in one.receive_data(p)]
    assert many.receive_data_parts(parts) == expected
    assert many.data_to_send() == one.data_to_send()
    assert b"".join(e.data for e in expected if isinstance(e, y.StreamData)) == b"".join(
        bytes([n % 251]) * n for n in sizes)


def test_receive_data_parts_bounds_and_failure_as_receive_data() -> None:
    """A Data frame over the window is refused on its header inside a batch:
    GoAway(protocol error) queued, the session dead."""
    b = YamuxSession(False)
    syn = encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
    over = encode_header(FrameType.DATA, 0, 1, W + 1)
    with pytest.raises(RemoteProtocolError):
        b.receive_data_parts([syn, over, bytes(100)])
    assert b.failed and frames(b.data_to_send())[-1] == (FrameType.GO_AWAY, 0, 0, 1)
    with pytest.raises(LocalProtocolError):
        b.receive_data_parts([bytes(10)])
