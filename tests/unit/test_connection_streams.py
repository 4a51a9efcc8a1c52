"""Each Shoal protocol on its own stream (issue 16 item 1): PeerConnection's channels (not to be confused with lane processes).

Two PeerConnections are linked by in-memory streams: the session stream
they start with, and whatever `open_stream` makes when a request of another
protocol is sent (the other side takes it through `accept_stream`, as the
node's handler registry does after multistream-select). A bare stream end
plays a hostile peer where the test needs to write frames itself.
"""

from __future__ import annotations

from typing import Sequence

import pytest
import trio
import trio.testing

from shoal.p2p.net.connection import MAX_MALFORMED, PeerConnection, RequestFailed
from shoal.p2p.secure.identity import Identity
from shoal.p2p.wire import codec, limits as L, protocols as P
from shoal.p2p.wire.framing import FrameDecoder, encode_frame
from shoal.p2p.wire.messages import (
    Error, ErrorCode, Have, Hello, Message, NameAck, NamePublish, Ping, Pong, WantHave,
)

CID = b"\x01\x55\x12\x20" + bytes(32)
HELLO = Hello(0, (L.PROTOCOL_VERSION,), (), "test", 0, 0)


async def serve(conn: PeerConnection, msg: Message) -> Sequence[Message]:
    rid = msg.request_id
    if isinstance(msg, Ping):
        return [Pong(rid, msg.payload)]
    if isinstance(msg, WantHave):
        return [Have(rid, msg.cids)]
    if isinstance(msg, NamePublish):
        return [NameAck(rid, True)]
    return [Error(rid, ErrorCode.UNKNOWN_TYPE, "no")]


class Pair:
    """Two linked connections; `opened` lists (side, protocol) of every stream opened."""

    def __init__(self, nursery: trio.Nursery, *, refuse: frozenset[str] = frozenset(),
                 a_in: int = L.MAX_INFLIGHT_REQUESTS_PER_PEER, b_handler=serve) -> None:  # type: ignore[no-untyped-def]
        self.nursery = nursery
        self.refuse = refuse
        self.opened: list[tuple[str, str]] = []
        a_stream, b_stream = trio.testing.memory_stream_pair()
        self.a = PeerConnection(a_stream, Identity.generate().peer_id, serve, protocol=P.SESSION,
                                open_stream=lambda p: self._open("a", p), max_inflight_in=a_in)
        self.b = PeerConnection(b_stream, Identity.generate().peer_id, b_handler, protocol=P.SESSION,
                                open_stream=lambda p: self._open("b", p))

    async def _open(self, side: str, protocol: str) -> trio.abc.Stream | None:
        await trio.lowlevel.checkpoint()
        if protocol in self.refuse:
            return None  # multistream-select's `na`
        self.opened.append((side, protocol))
        mine, theirs = trio.testing.memory_stream_pair()
        other = self.b if side == "a" else self.a
        self.nursery.start_soon(self._accept, other, theirs, protocol)
        return mine

    @staticmethod
    async def _accept(conn: PeerConnection, stream: trio.abc.Stream, protocol: str) -> None:
        if not await conn.accept_stream(stream, protocol):
            await trio.aclose_forcefully(stream)

    async def start(self) -> None:
        await self.nursery.start(self.a.run)
        await self.nursery.start(self.b.run)
        await self.a.send(HELLO)
        await self.b.send(HELLO)
        await self.a.hello_received.wait()
        await self.b.hello_received.wait()


async def test_each_protocol_opens_its_stream_on_first_use_and_reuses_it() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pair = Pair(nursery)
            await pair.start()
            a, b = pair.a, pair.b
            assert await a.request(lambda rid: Ping(rid, b"p")) == [Pong(1, b"p")]
            assert pair.opened == []  # Ping is the session's: no new stream
            for _ in range(3):
                (have,) = await a.request(lambda rid: WantHave(rid, (CID,)))
                assert isinstance(have, Have)
            assert pair.opened == [("a", P.EXCHANGE)]  # opened once, then reused
            (ack,) = await a.request(lambda rid: NamePublish(rid, b"record"))
            assert isinstance(ack, NameAck)
            # The other side's requests of a family ride the stream already open.
            (have,) = await b.request(lambda rid: WantHave(rid, (CID,)))
            assert isinstance(have, Have)
            assert pair.opened == [("a", P.EXCHANGE), ("a", P.NAMES)]
            assert a.protocols_open() == b.protocols_open() == [P.EXCHANGE, P.NAMES, P.SESSION]
            nursery.cancel_scope.cancel()


async def test_a_protocol_the_peer_refuses_fails_its_requests_and_is_not_asked_again() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pair = Pair(nursery, refuse=frozenset({P.NAMES}))
            await pair.start()
            for _ in range(2):
                with pytest.raises(RequestFailed) as info:
                    await pair.a.request(lambda rid: NamePublish(rid, b"record"))
                assert info.value.code == ErrorCode.UNKNOWN_TYPE
            assert P.NAMES in pair.a.refused_protocols
            assert not pair.a.closed  # the other protocols go on
            assert await pair.a.request(lambda rid: Ping(rid, b"p"))
            nursery.cancel_scope.cancel()


async def _raw_peer(nursery: trio.Nursery) -> tuple[PeerConnection, trio.abc.Stream]:
    """A node-side PeerConnection on a session stream whose other end the test writes."""
    ours, theirs = trio.testing.memory_stream_pair()
    conn = PeerConnection(ours, Identity.generate().peer_id, serve, protocol=P.SESSION,
                          open_stream=lambda p: trio.lowlevel.checkpoint())  # type: ignore[arg-type,return-value]
    await nursery.start(conn.run)
    return conn, theirs


async def _read(stream: trio.abc.Stream, decoder: FrameDecoder) -> list[Message]:
    data = await stream.receive_some(L.MAX_FRAME_BYTES)
    return [codec.decode(p) for p in decoder.feed(data)] if data else []


async def test_a_message_on_another_protocols_stream_is_refused_and_counted() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            conn, raw = await _raw_peer(nursery)
            decoder = FrameDecoder()
            await raw.send_all(encode_frame(codec.encode(HELLO)))
            await conn.hello_received.wait()
            # A WantHave on the session stream: ERROR unexpected, never served.
            await raw.send_all(encode_frame(codec.encode(WantHave(1, (CID,)))))
            (reply,) = await _read(raw, decoder)
            assert isinstance(reply, Error) and reply.request_id == 1 and reply.code == ErrorCode.UNEXPECTED
            assert P.EXCHANGE in reply.message
            # Still a working session for its own messages.
            await raw.send_all(encode_frame(codec.encode(Ping(2, b"ok"))))
            assert await _read(raw, decoder) == [Pong(2, b"ok")]
            # Counted as malformed input: past MAX_MALFORMED the connection closes.
            for rid in range(3, 3 + MAX_MALFORMED):
                await raw.send_all(encode_frame(codec.encode(WantHave(rid, (CID,)))))
            while not conn.closed:
                await _read(raw, decoder)
            nursery.cancel_scope.cancel()


async def test_no_other_protocol_is_served_before_the_sessions_hello(autojump_clock: trio.abc.Clock) -> None:
    served: list[str] = []

    async def recording(conn: PeerConnection, msg: Message) -> Sequence[Message]:
        served.append(type(msg).__name__)
        return await serve(conn, msg)

    async with trio.open_nursery() as nursery:
        ours, raw = trio.testing.memory_stream_pair()
        conn = PeerConnection(ours, Identity.generate().peer_id, recording, protocol=P.SESSION)
        await nursery.start(conn.run)
        # The peer opens the exchange stream and asks at once, without a Hello.
        ex_ours, ex_raw = trio.testing.memory_stream_pair()
        accepted: list[bool] = []

        async def accept() -> None:
            accepted.append(await conn.accept_stream(ex_ours, P.EXCHANGE))

        nursery.start_soon(accept)
        await ex_raw.send_all(encode_frame(codec.encode(WantHave(1, (CID,)))))
        await trio.sleep(L.HELLO_TIMEOUT_S / 2)
        assert served == [] and accepted == []  # held, not served
        # The Hello arrives on the session stream: now the request is served, on its stream.
        await raw.send_all(encode_frame(codec.encode(HELLO)))
        assert await _read(ex_raw, FrameDecoder()) == [Have(1, (CID,))]
        assert served == ["WantHave"]

        # Without a Hello within its timeout, the stream is refused unread.
        conn2 = PeerConnection(trio.testing.memory_stream_pair()[0], Identity.generate().peer_id, recording,
                               protocol=P.SESSION)
        await nursery.start(conn2.run)
        late_ours, late_raw = trio.testing.memory_stream_pair()
        await late_raw.send_all(encode_frame(codec.encode(WantHave(1, (CID,)))))
        assert await conn2.accept_stream(late_ours, P.EXCHANGE) is False
        assert served == ["WantHave"]
        nursery.cancel_scope.cancel()


async def test_one_live_stream_per_protocol_from_the_peer() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pair = Pair(nursery)
            await pair.start()
            await pair.a.request(lambda rid: WantHave(rid, (CID,)))
            extra, _ = trio.testing.memory_stream_pair()
            assert await pair.b.accept_stream(extra, P.EXCHANGE) is False  # a second one
            assert await pair.b.accept_stream(extra, P.SESSION) is False  # the session is not reopened
            nursery.cancel_scope.cancel()


async def test_the_in_flight_cap_counts_requests_on_every_stream() -> None:
    release = trio.Event()

    async def slow(conn: PeerConnection, msg: Message) -> Sequence[Message]:
        if isinstance(msg, Ping):
            await release.wait()
        return await serve(conn, msg)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pair = Pair(nursery, b_handler=slow)
            pair.b._in_slots = trio.Semaphore(1)  # the peer serves one request at a time
            await pair.start()
            nursery.start_soon(lambda: pair.a.request(lambda rid: Ping(rid, b"slow")))
            while pair.b._in_slots.value:
                await trio.sleep(0.01)
            with pytest.raises(RequestFailed) as info:  # on another stream: busy all the same
                await pair.a.request(lambda rid: WantHave(rid, (CID,)))
            assert info.value.code == ErrorCode.BUSY
            release.set()
            nursery.cancel_scope.cancel()


async def test_a_stall_on_one_stream_closes_the_whole_connection(autojump_clock: trio.abc.Clock) -> None:
    unread: list[trio.abc.Stream] = []

    async def open_unread(protocol: str) -> trio.abc.Stream:
        mine, theirs = trio.testing.lockstep_stream_pair()  # `theirs` is never read
        unread.append(theirs)
        return mine

    async with trio.open_nursery() as nursery:
        ours, raw = trio.testing.memory_stream_pair()
        conn = PeerConnection(ours, Identity.generate().peer_id, serve, protocol=P.SESSION,
                              open_stream=open_unread, stall_timeout=7.0)
        await nursery.start(conn.run)
        await raw.send_all(encode_frame(codec.encode(HELLO)))
        await conn.hello_received.wait()
        with pytest.raises(RequestFailed):
            await conn.request(lambda rid: WantHave(rid, (CID,)))
        assert conn.stalled and conn.closed
        with pytest.raises(RequestFailed):  # the session went with it
            await conn.request(lambda rid: Ping(rid, b"p"))
        nursery.cancel_scope.cancel()


async def test_a_reply_goes_back_on_the_stream_its_request_came_on() -> None:
    """The peer's exchange stream carries its request; the answer must come
    back there (the requester only takes answers from that stream)."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            conn, raw = await _raw_peer(nursery)
            await raw.send_all(encode_frame(codec.encode(HELLO)))
            ex_ours, ex_raw = trio.testing.memory_stream_pair()
            nursery.start_soon(conn.accept_stream, ex_ours, P.EXCHANGE)
            await ex_raw.send_all(encode_frame(codec.encode(WantHave(9, (CID,)))))
            assert await _read(ex_raw, FrameDecoder()) == [Have(9, (CID,))]
            nursery.cancel_scope.cancel()


class HalfGated(trio.abc.Stream):
    """`inner` whose writes put half their bytes out, then wait at the gate for the rest."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.open = trio.Event()
        self.open.set()
        self.waiting = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        half = len(data) // 2
        await self.inner.send_all(data[:half])
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        await self.inner.send_all(data[half:])

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_request_cancelled_mid_frame_on_a_protocol_stream_leaves_it_whole() -> None:
    gates: list[HalfGated] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pair = Pair(nursery)
            opener = pair._open

            async def gated_open(protocol: str) -> trio.abc.Stream | None:
                stream = await opener("a", protocol)
                assert stream is not None
                gates.append(HalfGated(stream))
                return gates[-1]

            pair.a._open_stream = gated_open
            await pair.start()
            await pair.a.request(lambda rid: WantHave(rid, (CID,)))  # opens the exchange stream
            (gate,) = gates
            gate.open = trio.Event()  # shut: the next frame stops half-way
            abandoned = trio.CancelScope()

            async def ask() -> None:
                with abandoned:
                    await pair.a.request(lambda rid: WantHave(rid, (CID,)))

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            assert gate.waiting == 1  # half the frame is out
            abandoned.cancel()
            await trio.testing.wait_all_tasks_blocked()
            gate.open.set()
            (have,) = await pair.a.request(lambda rid: WantHave(rid, (CID,)))
            assert isinstance(have, Have)
            assert not pair.a.closed and not pair.b.closed and pair.b._malformed == 0
            nursery.cancel_scope.cancel()


async def test_activity_on_any_stream_counts_for_eviction_and_the_idle_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        pair = Pair(nursery)
        await pair.start()
        for _ in range(4):  # 4 x 0.75 idle timeouts, traffic on the exchange stream only
            await trio.sleep(L.IDLE_TIMEOUT_S * 0.75)
            before = pair.b.last_activity
            await pair.a.request(lambda rid: WantHave(rid, (CID,)))
            assert pair.b.last_activity > before  # admission and eviction see it
        assert not pair.a.closed and not pair.b.closed
        await trio.sleep(L.IDLE_TIMEOUT_S * 2.5)  # then nothing on any stream: idle, closed
        assert pair.a.closed and pair.b.closed
        nursery.cancel_scope.cancel()
