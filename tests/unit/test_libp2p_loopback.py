"""Two in-process libp2p hosts over a real TCP socket on 127.0.0.1.

The full upgrade (mss /noise, Noise XX, mss /yamux/1.0.0, yamux) runs both
ways; then many concurrent streams, ping, identify, half-close and reset.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import trio
import trio.testing

from shoal.p2p.errors import HandshakeError, PeerIdMismatch
from shoal.p2p.libp2p import multistream as mss
from shoal.p2p.libp2p.connection import NegotiationFailed, YamuxStream, upgrade_outbound
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.libp2p.identify import (
    IDENTIFY_PROTOCOL, PING_PROTOCOL, agent_version, decode_multiaddr, identify, ping,
)
from shoal.p2p.secure.identity import Identity
from shoal.p2p.libp2p.yamux import DEFAULT_WINDOW as WINDOW
from shoal.p2p.libp2p.yamux import MAX_SEND_FRAME, Flag, FrameType, GoAwayCode, encode_header
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.secure.pnet import SwarmKey

ECHO = "/shoal/test/echo/1.0.0"
SINK = "/shoal/test/sink/1.0.0"


async def echo_handler(stream: YamuxStream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def sink_handler(stream: YamuxStream) -> None:
    """Reads everything, answers with its length and sha256 once the opener half-closes."""
    h, n = hashlib.sha256(), 0
    while data := await stream.receive_some():
        h.update(data)
        n += len(data)
    await stream.send_all(f"{n} {h.hexdigest()}".encode())


async def read_all(stream: YamuxStream) -> bytes:
    out = bytearray()
    while data := await stream.receive_some():
        out += data
    return bytes(out)


async def pair(nursery: trio.Nursery, key_a: SwarmKey | None = None,
               key_b: SwarmKey | None = None) -> tuple[Libp2pHost, Libp2pHost, Multiaddr]:
    a = Libp2pHost(Identity.generate(), nursery, swarm_key=key_a, handshake_timeout=5)
    b = Libp2pHost(Identity.generate(), nursery, swarm_key=key_b, handshake_timeout=5)
    for host in (a, b):
        host.handlers[ECHO] = echo_handler
        host.handlers[SINK] = sink_handler
    addrs = await nursery.start(b.serve)
    return a, b, addrs[0]


async def test_many_streams_ping_identify_half_close() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            conn = await a.dial(addr)
            assert conn.remote_peer == b.peer_id

            payloads = [os.urandom(n) for n in (0, 1, 1000, 300_000, 1_200_000) * 8]
            results: dict[int, bytes] = {}

            async def one(i: int, data: bytes) -> None:
                stream = await conn.open_stream(["/nope/1.0.0", SINK])
                assert stream.protocol == SINK
                await stream.send_all(data)
                await stream.send_eof()  # half-close: the answer still comes back
                results[i] = await read_all(stream)
                await stream.aclose()

            async with trio.open_nursery() as inner:
                for i, data in enumerate(payloads):
                    inner.start_soon(one, i, data)
            for i, data in enumerate(payloads):
                assert results[i] == f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()

            # Inbound streams opened by the listener side use even ids and work the same.
            (back,) = [c for c in b.connections]
            stream = await back.open_stream(ECHO)
            assert stream.stream_id % 2 == 0
            await stream.send_all(b"hello")
            assert await stream.receive_some(5) == b"hello"
            await stream.aclose()

            rtts = await ping(await conn.open_stream(PING_PROTOCOL), count=3)
            assert len(rtts) == 3 and all(r >= 0 for r in rtts)
            assert await conn.ping_session() >= 0

            info = await identify(await conn.open_stream(IDENTIFY_PROTOCOL), conn.remote_peer)
            assert info.peer_id() == b.peer_id
            assert info.agent_version == agent_version()
            assert info.agent_version.startswith("shoal/")
            assert set(info.protocols) >= {PING_PROTOCOL, IDENTIFY_PROTOCOL, ECHO, SINK}
            assert info.listen_addr_texts() == [f"/ip4/127.0.0.1/tcp/{addr.port}"]
            assert info.observed_addr is not None
            observed = decode_multiaddr(info.observed_addr)
            assert observed.startswith("/ip4/127.0.0.1/tcp/")
            nursery.cancel_scope.cancel()


async def test_reset_and_unknown_protocol() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            seen: list[YamuxStream] = []
            got_reset = trio.Event()

            async def hold(stream: YamuxStream) -> None:
                seen.append(stream)
                try:
                    await stream.receive_some()
                    await stream.receive_some()
                except trio.BrokenResourceError:
                    got_reset.set()
                    raise

            b.handlers["/shoal/test/hold/1.0.0"] = hold
            conn = await a.dial(addr)
            with pytest.raises(NegotiationFailed):
                await conn.open_stream("/not/spoken/1.0.0")
            stream = await conn.open_stream("/shoal/test/hold/1.0.0")
            await stream.send_all(b"x")
            stream.reset()
            await got_reset.wait()
            with pytest.raises(trio.ClosedResourceError):  # we reset it: closed, not broken
                await stream.send_all(b"more")
            # The connection itself is unharmed.
            echo = await conn.open_stream(ECHO)
            await echo.send_all(b"still here")
            assert await echo.receive_some() == b"still here"
            nursery.cancel_scope.cancel()


async def test_wrong_peer_and_swarm_keys() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            key = SwarmKey.generate()
            a, b, addr = await pair(nursery, key, key)
            conn = await a.dial(addr)  # same key: works
            stream = await conn.open_stream(ECHO)
            await stream.send_all(b"private")
            assert await stream.receive_some() == b"private"

            with pytest.raises(PeerIdMismatch):
                await a.dial(addr.with_peer(Identity.generate().peer_id))

            stranger = Libp2pHost(Identity.generate(), nursery, swarm_key=SwarmKey.generate(),
                                  handshake_timeout=3)
            # Another key: the pnet keystreams differ, so multistream-select already
            # reads noise and fails, before any Noise message or protocol byte.
            with pytest.raises(HandshakeError, match="same swarm key"):
                await stranger.dial(addr)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("window", [WINDOW, 4 * WINDOW])
async def test_backpressure_bounds_what_a_slow_reader_buffers(window: int) -> None:
    """A reader that stops reading holds at most one window; the sender waits, then resumes."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            b.receive_window = window
            arrived: list[YamuxStream] = []
            release = trio.Event()

            async def slow(stream: YamuxStream) -> None:
                arrived.append(stream)
                await release.wait()
                await sink_handler(stream)

            b.handlers["/shoal/test/slow/1.0.0"] = slow
            conn = await a.dial(addr)
            stream = await conn.open_stream("/shoal/test/slow/1.0.0")
            data = os.urandom(4 * 1024 * 1024)
            sent = trio.Event()

            async def send() -> None:
                await stream.send_all(data)
                await stream.send_eof()
                sent.set()

            nursery.start_soon(send)
            # The window (less the few negotiation bytes already counted) fills up...
            while not arrived or arrived[0]._buffered < window - 1024:
                await trio.sleep(0.01)
            await trio.sleep(0.2)  # ...and nothing more arrives while nobody reads
            (server_stream,) = arrived
            assert server_stream._buffered <= window
            assert not sent.is_set()  # the sender waits on the window
            release.set()
            answer = await read_all(stream)
            assert answer == f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()
            assert sent.is_set()
            nursery.cancel_scope.cancel()


async def test_listener_takes_pipelined_protocol_bytes() -> None:
    """A dialer that sends header, proposal and its first data at once (as lazy
    js-libp2p dialers do) loses no byte: the listener hands them to the handler."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            conn = await a.dial(addr)
            sid = conn.session.open_stream()
            stream = YamuxStream(conn, sid, inbound=False)
            conn._streams[sid] = stream
            await stream.send_all(mss.encode_message(mss.HEADER) + mss.encode_message(ECHO)
                                  + b"early bytes")
            await stream.send_eof()
            got = await read_all(stream)
            assert got == mss.encode_message(mss.HEADER) + mss.encode_message(ECHO) + b"early bytes"
            nursery.cancel_scope.cancel()


async def test_a_peer_breaking_yamux_gets_go_away_and_is_hung_up_on() -> None:
    """Data past the window: the driver sends GoAway(protocol error) and closes."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            _, b, addr = await pair(nursery)
            tcp = await trio.open_tcp_stream(addr.host, addr.port)
            # Only the upgrade: we drive the yamux bytes by hand, below the session.
            conn = await upgrade_outbound(tcp, Identity.generate(), {}, expected_peer=b.peer_id)
            secure = conn.secure
            await secure.send_all(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
                                  + encode_header(FrameType.DATA, 0, 1, WINDOW + 1))
            received = bytearray()
            while data := await secure.receive_some():
                received += data
            # The ACK of stream 1, then GoAway(1); then the connection ends.
            assert received.endswith(encode_header(FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR))
            assert not b.connections or all(c.closed for c in b.connections)
            await secure.aclose()
            nursery.cancel_scope.cancel()


async def test_inbound_stream_limit_refuses_with_reset() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            b.handlers["/shoal/test/hold/1.0.0"] = lambda stream: trio.sleep_forever()
            conn = await a.dial(addr)
            (server,) = b.connections
            server.session.max_inbound_streams = 4
            held = [await conn.open_stream("/shoal/test/hold/1.0.0") for _ in range(4)]
            with pytest.raises(trio.BrokenResourceError):  # the 5th gets RST
                await conn.open_stream("/shoal/test/hold/1.0.0")
            held[0].reset()
            for _ in range(100):  # the RST frees a slot on the other side
                if server.session.open_streams < 4:
                    break
                await trio.sleep(0.01)
            extra = await conn.open_stream(ECHO)
            await extra.send_all(b"ok")
            assert await extra.receive_some() == b"ok"
            nursery.cancel_scope.cancel()


async def test_send_all_returns_only_when_the_buffer_may_be_reused() -> None:
    """Stream sends queue views, not copies: send_all must not return before they
    are written, so a caller reusing its buffer at once cannot change sent bytes."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            conn = await a.dial(addr)
            stream = await conn.open_stream(SINK)
            buf = bytearray(os.urandom(100_000))
            expected = hashlib.sha256()
            for _ in range(20):
                expected.update(buf)
                await stream.send_all(buf)
                buf[:] = os.urandom(len(buf))  # reuse the buffer right away
            await stream.send_eof()
            answer = await read_all(stream)
            assert answer == f"{20 * len(buf)} {expected.hexdigest()}".encode()
            nursery.cancel_scope.cancel()


async def test_closing_a_stream_wakes_its_reader_even_when_the_close_is_cancelled() -> None:
    """As with a trio socket: a task waiting in `receive_some` gets
    ClosedResourceError when another task closes the stream, and
    `trio.aclose_forcefully` (a cancelled close) still closes it. The node's
    Shoal connection relies on it: a send that stalls closes the /shoal
    stream, and its read loop must end instead of waiting for data forever."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, _b, addr = await pair(nursery)
            conn = await a.dial(addr)
            for close in (lambda s: s.aclose(), trio.aclose_forcefully):
                stream = await conn.open_stream(ECHO)
                outcome: list[str] = []

                async def reader(stream: YamuxStream = stream, outcome: list[str] = outcome) -> None:
                    try:
                        await stream.receive_some()
                    except trio.ClosedResourceError:
                        outcome.append("closed")

                async with trio.open_nursery() as inner:
                    inner.start_soon(reader)
                    await trio.sleep(0.2)  # the reader waits: the echo peer sends nothing
                    await close(stream)
                assert outcome == ["closed"]
            nursery.cancel_scope.cancel()


async def test_a_frame_and_its_block_reach_the_transport_in_one_write() -> None:
    """A Shoal frame (4-byte header, then a 1 MiB block) sent with
    `send_all_parts` goes to the secure stream in one write, as yamux Data
    frames that span the parts: not a frame for the header and a last
    write of its own for the final bytes (each one more Noise frame, send
    and wake-up per block on both sides)."""
    window = 16 * 1024 * 1024
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = Libp2pHost(Identity.generate(), nursery, receive_window=window)
            b = Libp2pHost(Identity.generate(), nursery, receive_window=window)
            b.handlers[SINK] = sink_handler
            (addr,) = await nursery.start(b.serve)
            conn = await a.dial(addr)
            stream = await conn.open_stream(SINK)
            writes: list[bytes] = []
            send_parts = conn.secure.send_all_parts

            async def recording(parts: list[bytes | bytearray | memoryview]) -> None:
                writes.append(b"".join(parts))
                await send_parts(parts)

            conn.secure.send_all_parts = recording  # type: ignore[method-assign]
            block = os.urandom(1 << 20)
            header = len(block).to_bytes(4, "big")
            await stream.send_all_parts([header, block])
            assert len(writes) == 1
            (wire,) = writes
            pos, sizes = 0, []
            while pos < len(wire):
                ftype, length = wire[pos + 1], int.from_bytes(wire[pos + 8 : pos + 12], "big")
                assert ftype == FrameType.DATA
                sizes.append(length)
                pos += 12 + length
            assert sum(sizes) == 4 + len(block) and wire[12:16] == header
            assert len(sizes) == -(-(4 + len(block)) // MAX_SEND_FRAME)
            await stream.send_eof()
            answer = await read_all(stream)
            assert answer == f"{4 + len(block)} {hashlib.sha256(header + block).hexdigest()}".encode()
            nursery.cancel_scope.cancel()


class _StepCounter(trio.abc.Instrument):
    """Counts the scheduler steps of one task."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_traffic_on_one_stream_does_not_wake_the_reader_of_another() -> None:
    """Each stream's reader has its own wake-up: a node's idle session stream
    (and the Bitswap service's watcher) used to run once per read of the
    connection while blocks streamed in on another stream, a task switch each."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, _b, addr = await pair(nursery)
            conn = await a.dial(addr)
            idle = await conn.open_stream(ECHO)
            busy = await conn.open_stream(ECHO)
            tasks: dict[str, trio.lowlevel.Task] = {}
            got: list[bytes] = []
            closed = trio.Event()

            async def read_idle() -> None:
                tasks["idle"] = trio.lowlevel.current_task()
                got.append(await idle.receive_some())

            async def watch() -> None:
                tasks["watch"] = trio.lowlevel.current_task()
                await conn.wait_closed()
                closed.set()

            nursery.start_soon(read_idle)
            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            counters = [_StepCounter(tasks["idle"]), _StepCounter(tasks["watch"])]
            for counter in counters:
                trio.lowlevel.add_instrument(counter)
            data = os.urandom(4 << 20)
            received = bytearray()

            async def echo_back() -> None:
                while len(received) < len(data):
                    received.extend(await busy.receive_some())

            async with trio.open_nursery() as inner:
                inner.start_soon(echo_back)
                for pos in range(0, len(data), 64 * 1024):
                    await busy.send_all(data[pos : pos + 64 * 1024])
            assert bytes(received) == data
            for counter in counters:
                trio.lowlevel.remove_instrument(counter)
            assert [c.steps for c in counters] == [0, 0]
            # ...and each is still woken by what concerns it.
            await idle.send_all(b"ping")
            while not got:
                await trio.sleep(0.01)
            assert got == [b"ping"]
            assert not closed.is_set()
            await conn.aclose()
            await closed.wait()
            nursery.cancel_scope.cancel()


async def test_a_reader_asking_for_at_least_n_bytes_is_woken_once_they_are_there() -> None:
    """`receive_some_parts(at_least)`: one wake-up for a frame's bytes however many
    pieces they come in; EOF still wakes it with fewer; never a wait beyond what
    half the window lets the peer send (the rest needs the reader's credit)."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            streams: list[YamuxStream] = []
            arrived = trio.Event()

            async def keep(stream: YamuxStream) -> None:
                streams.append(stream)
                arrived.set()
                await trio.sleep_forever()

            b.handlers[SINK] = keep
            conn = await a.dial(addr)
            out = await conn.open_stream(SINK)
            await out.send_all(b"x")
            await arrived.wait()
            (inbound,) = streams
            assert await inbound.receive_some() == b"x"
            results: list[list[bytes]] = []
            done = trio.Event()
            tasks: list[trio.lowlevel.Task] = []

            async def read(at_least: int) -> None:
                tasks.append(trio.lowlevel.current_task())
                results.append(await inbound.receive_some_parts(at_least))
                done.set()

            # 96 KiB in 24 pieces, each read by the connection on its own.
            nursery.start_soon(read, 96 * 1024)
            await trio.testing.wait_all_tasks_blocked()
            counter = _StepCounter(tasks[0])
            trio.lowlevel.add_instrument(counter)
            data = os.urandom(96 * 1024)
            for pos in range(0, len(data), 4096):
                await out.send_all(data[pos : pos + 4096])
                await trio.sleep(0.002)
            await done.wait()
            trio.lowlevel.remove_instrument(counter)
            assert b"".join(results[0]) == data
            assert counter.steps <= 2  # started once (plus, at most, one cancelled wait)

            # More than half the 256 KiB window: capped, so 200 KiB wakes it.
            done = trio.Event()
            nursery.start_soon(read, 1 << 20)
            big = os.urandom(200 * 1024)
            await out.send_all(big)
            await done.wait()
            assert sum(map(len, results[1])) >= WINDOW // 2
            rest = b"".join(results[1])
            while len(rest) < len(big):
                rest += b"".join(await inbound.receive_some_parts())
            assert rest == big

            # EOF with fewer bytes than asked: they come back, then [].
            done = trio.Event()
            nursery.start_soon(read, 64 * 1024)
            await out.send_all(b"tail")
            await out.send_eof()
            await done.wait()
            assert b"".join(results[2]) == b"tail"
            assert await inbound.receive_some_parts(1000) == []
            nursery.cancel_scope.cancel()


async def test_a_peer_connection_on_a_yamux_stream_wakes_once_per_frame_not_per_piece() -> None:
    """PeerConnection asks its yamux stream for the rest of the frame in progress:
    a 200 KiB Block sent in 50 pieces (each its own read of the connection)
    costs its reader a few steps, not one per piece as it did."""
    from shoal.p2p.net.connection import PeerConnection
    from shoal.p2p.wire import codec
    from shoal.p2p.wire.framing import FrameDecoder, encode_frame
    from shoal.p2p.wire.messages import Block, Error, Message, Ping

    async def no_requests(conn: PeerConnection, msg: Message) -> list[Message]:
        return []

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            readers: list[trio.lowlevel.Task] = []
            proto = "/shoal/test/pc/1.0.0"

            async def serve(stream: YamuxStream) -> None:
                readers.append(trio.lowlevel.current_task())
                await PeerConnection(stream, a.peer_id, no_requests).run()

            b.handlers[proto] = serve
            conn = await a.dial(addr)
            out = await conn.open_stream(proto)
            await out.send_all(encode_frame(codec.encode(Ping(1, b"p"))))
            decoder = FrameDecoder()
            answers: list[bytes] = []
            while not answers:  # an Error (request before Hello): it reads
                answers += decoder.feed(await out.receive_some())
            await trio.testing.wait_all_tasks_blocked()
            counter = _StepCounter(readers[0])
            trio.lowlevel.add_instrument(counter)
            frame = encode_frame(codec.encode(Block(7, b"\x01\x55\x12\x20" + bytes(32), os.urandom(200 * 1024))))
            for pos in range(0, len(frame), 4096):
                await out.send_all(frame[pos : pos + 4096])
                await trio.sleep(0.002)
            await out.send_all(encode_frame(codec.encode(Ping(2, b"q"))))
            while len(answers) < 2:  # the Block (answers nothing asked: dropped) was read whole
                answers += decoder.feed(await out.receive_some())
            trio.lowlevel.remove_instrument(counter)
            assert [type(codec.decode(m)) for m in answers] == [Error, Error]
            assert counter.steps <= 12, counter.steps
            nursery.cancel_scope.cancel()


async def test_stream_data_alone_does_not_wake_wait_change() -> None:
    """`wait_change` is for windows, opens, ends, pings, the connection's end:
    data that only fills a stream's buffer wakes that stream's reader and no
    one else (it used to wake every `wait_change` task once per read)."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, addr = await pair(nursery)
            streams: list[YamuxStream] = []
            arrived = trio.Event()

            async def keep(stream: YamuxStream) -> None:
                stream.grow_window(16 << 20)  # no window update for the 2 MiB below
                streams.append(stream)
                arrived.set()
                await trio.sleep_forever()

            b.handlers[SINK] = keep
            conn = await a.dial(addr)
            out = await conn.open_stream(SINK)
            await out.send_all(b"x")
            await arrived.wait()
            (inbound,) = streams
            assert await inbound.receive_some() == b"x"
            (b_conn,) = b.connections
            changes = 0

            async def watch() -> None:
                nonlocal changes
                while not b_conn.closed:
                    await b_conn.wait_change()
                    changes += 1

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            data = os.urandom(2 << 20)
            for pos in range(0, len(data), 64 * 1024):
                await out.send_all(data[pos : pos + 64 * 1024])
                await trio.sleep(0.002)
            got = bytearray()
            while len(got) < len(data):
                got += await inbound.receive_some()
            assert got == data
            assert changes == 0
            await conn.aclose()
            with trio.fail_after(5):
                while not changes:
                    await trio.sleep(0.01)  # ...and the connection's end does wake it
            nursery.cancel_scope.cancel()
