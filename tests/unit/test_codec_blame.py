"""A decoder bug is ours, malformed input is the peer's (issue 12 item 17).

`codec.decode` used to turn every exception into the peer's MALFORMED error,
so a bug in our decoder was reported to (and counted against) an honest
peer. Now bad bytes raise RemoteProtocolError and an exception class no bad
input can cause raises DecoderBug; the connection answers INTERNAL for it
and does not count it as the peer's malformed message.
"""

from __future__ import annotations

from typing import Any, Sequence

import msgpack
import pytest
import trio
from hypothesis import given, settings, strategies as st
from trio.testing import memory_stream_pair

from shoal.p2p.wire import codec
from shoal.p2p.wire import limits as L
from shoal.p2p.net.connection import PeerConnection
from shoal.p2p.errors import DecoderBug, RemoteProtocolError
from shoal.p2p.wire.framing import FrameDecoder, encode_frame
from shoal.p2p.secure.identity import Identity
from shoal.p2p.wire.messages import MESSAGE_TYPES, Error, ErrorCode, Hello, Message, Ping, Pong

BOOM = b"decoder-bug-trigger"


def _buggy_tuplify(real: Any) -> Any:
    def tuplify(value: object) -> object:
        if value == BOOM:
            raise KeyError("a bug in our decoder")
        return real(value)
    return tuplify


def test_an_unexpected_exception_in_the_decoder_is_our_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_tuplify", _buggy_tuplify(codec._tuplify))
    with pytest.raises(DecoderBug) as info:
        codec.decode(codec.encode(Ping(41, BOOM)))
    assert not isinstance(info.value, RemoteProtocolError)
    assert info.value.request_id == 41
    assert isinstance(info.value.__cause__, KeyError)
    assert codec.decode(codec.encode(Ping(42, b"fine"))) == Ping(42, b"fine")


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                  st.binary(max_size=40), st.text(max_size=20))
_values = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(type_code=st.sampled_from(sorted(MESSAGE_TYPES)), rid=st.integers(-5, 2**40),
       fields=st.lists(_values, max_size=8))
def test_malformed_fields_blame_the_peer_never_us(type_code: int, rid: int, fields: list[object]) -> None:
    payload = msgpack.packb([L.PROTOCOL_VERSION, type_code, rid, *fields], use_bin_type=True)
    try:
        msg = codec.decode(payload)
    except RemoteProtocolError:
        return  # the peer's fault, as it should be; DecoderBug would fail the test
    # Accepted: then it is a valid message of that type, which survives a round trip.
    assert msg.TYPE == type_code and msg.request_id == rid
    assert codec.decode(codec.encode(msg)) == msg


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_blame_the_peer_never_us(payload: bytes) -> None:
    try:
        msg = codec.decode(payload)
    except RemoteProtocolError:
        return
    assert codec.decode(codec.encode(msg)) == msg


async def _pong(conn: PeerConnection, msg: Message) -> Sequence[Message]:
    assert isinstance(msg, Ping)
    return [Pong(msg.request_id, msg.payload)]


async def test_the_connection_answers_internal_and_does_not_blame_the_peer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_tuplify", _buggy_tuplify(codec._tuplify))
    ours, theirs = memory_stream_pair()
    conn = PeerConnection(ours, Identity.generate().peer_id, _pong)
    replies: list[Message] = []
    frames = FrameDecoder()
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        await theirs.send_all(encode_frame(codec.encode(Hello(0, (L.PROTOCOL_VERSION,), (), "test", 0, 0))))
        # More decoder bugs than the malformed-message allowance: still connected.
        for rid in range(1, 20):
            await theirs.send_all(encode_frame(codec.encode(Ping(rid, BOOM))))
        await theirs.send_all(encode_frame(codec.encode(Ping(99, b"still there?"))))
        with trio.fail_after(10):
            while len(replies) < 20:
                for payload in frames.feed(await theirs.receive_some(1 << 16)):
                    replies.append(codec.decode(payload))
        nursery.cancel_scope.cancel()
    errors = [r for r in replies if isinstance(r, Error)]
    assert len(errors) == 19
    assert all(e.code == ErrorCode.INTERNAL for e in errors)
    assert sorted(e.request_id for e in errors) == list(range(1, 20))
    assert Pong(99, b"still there?") in replies
    assert conn.decoder_bugs == 19 and conn._malformed == 0


async def test_decoder_bugs_are_logged_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Each decoder bug was logged with its traceback: a peer that found an
    input tripping one could fill the node's log at line rate. Now the first
    few are logged, then only counted."""
    from shoal.p2p.net.connection import MAX_LOGGED_DECODER_BUGS

    monkeypatch.setattr(codec, "_tuplify", _buggy_tuplify(codec._tuplify))
    ours, theirs = memory_stream_pair()
    conn = PeerConnection(ours, Identity.generate().peer_id, _pong)
    frames = FrameDecoder()
    replies = 0
    with caplog.at_level("ERROR", logger="shoal"):
        async with trio.open_nursery() as nursery:
            await nursery.start(conn.run)
            await theirs.send_all(encode_frame(codec.encode(Hello(0, (L.PROTOCOL_VERSION,), (), "test", 0, 0))))
            for rid in range(1, 51):
                await theirs.send_all(encode_frame(codec.encode(Ping(rid, BOOM))))
            with trio.fail_after(10):
                while replies < 50:
                    replies += len(frames.feed(await theirs.receive_some(1 << 16)))
            nursery.cancel_scope.cancel()
    assert conn.decoder_bugs == 50
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == MAX_LOGGED_DECODER_BUGS + 1  # the first few, then one "counted, not logged"
