"""A request cancelled while its frame is being written (a fetch whose HTTP
client left, a Ctrl-C'd `shoal get`) must not break the connection.

Over Noise, each frame takes the next nonce when it is encrypted, before the
transport write. A write cut short by the caller's cancellation spent a
nonce on a frame that never left (or left half of one): the peer failed to
authenticate the next frame and hung up, every other request on the
connection failed, and the next fetch found "no connected peer". Driver
tests over trio's in-memory streams with the real secure stream; a gate in
the dialler's transport holds a write in flight for as long as the test
wants, which makes the race deterministic.
"""

from __future__ import annotations

from typing import Sequence

import pytest
import trio
import trio.testing

from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.secure_stream import SecureStream, secure_accept, secure_dial
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import Hello, Message, Ping, Pong

ALICE = Identity.from_seed(b"c" * 32)
BOB = Identity.from_seed(b"d" * 32)


class GatedStream(trio.abc.Stream):
    """`inner` whose writes wait while the gate is shut (a socket buffer that is full)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.open = trio.Event()
        self.open.set()
        self.waiting = 0  # writes held at the gate

    def shut(self) -> None:
        self.open = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def echo(conn: PeerConnection, msg: Message) -> Sequence[Message]:
    assert isinstance(msg, Ping)
    return [Pong(msg.request_id, msg.payload)]


async def secure_pair() -> tuple[GatedStream, SecureStream, SecureStream]:
    left, right = trio.testing.memory_stream_pair()
    gate = GatedStream(left)
    out: dict[str, SecureStream] = {}

    async def accept() -> None:
        out["b"] = await secure_accept(right, BOB)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        out["a"] = await secure_dial(gate, ALICE, BOB.peer_id)
    return gate, out["a"], out["b"]


async def connected(nursery: trio.Nursery) -> tuple[GatedStream, PeerConnection, PeerConnection]:
    gate, a_stream, b_stream = await secure_pair()
    a = PeerConnection(a_stream, BOB.peer_id, echo)
    b = PeerConnection(b_stream, ALICE.peer_id, echo)
    await nursery.start(a.run)
    await nursery.start(b.run)
    hello = Hello(0, (L.PROTOCOL_VERSION,), (), "test", 0, 0)
    await a.send(hello)
    await b.send(hello)
    await a.hello_received.wait()
    await b.hello_received.wait()
    return gate, a, b


async def test_a_request_cancelled_mid_write_leaves_the_connection_usable() -> None:
    async with trio.open_nursery() as nursery:
        gate, a, b = await connected(nursery)
        gate.shut()
        abandoned = trio.CancelScope()

        async def ask() -> None:
            with abandoned:
                await a.request(lambda rid: Ping(rid, b"abandoned"))

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert gate.waiting == 1  # the frame is encrypted and being written
        abandoned.cancel()  # e.g. the HTTP client of the fetch went away
        await trio.testing.wait_all_tasks_blocked()
        gate.open.set()
        with trio.fail_after(5):
            replies = await a.request(lambda rid: Ping(rid, b"next"))
        assert replies == [Pong(replies[0].request_id, b"next")]
        assert not a.closed and not b.closed
        nursery.cancel_scope.cancel()


async def test_a_sender_handed_the_lock_while_cancelled_sends_nothing() -> None:
    """The send lock handed to a task whose cancellation is pending (the
    fetch's other requests were queued behind it when it was cancelled):
    it must not encrypt, and so spend a nonce on, a frame it will not write."""
    async with trio.open_nursery() as nursery:
        gate, a, b = await connected(nursery)
        gate.shut()
        second_scope = trio.CancelScope()
        outcome: list[str] = []

        async def first() -> None:
            await a.send(Ping(1, b"first"))
            # The lock went to `second` as `send` returned; it has not run yet.
            second_scope.cancel()

        async def second() -> None:
            with second_scope:
                await a.send(Ping(2, b"second"))
                outcome.append("sent")
            outcome.append("cancelled" if second_scope.cancelled_caught else "done")

        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()  # `second` waits for the lock
        gate.open.set()
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == ["cancelled"]
        with trio.fail_after(5):
            replies = await a.request(lambda rid: Ping(rid, b"next"))
        assert [type(r) for r in replies] == [Pong]
        assert not a.closed and not b.closed
        nursery.cancel_scope.cancel()


async def test_closing_the_connection_ends_a_write_stuck_behind_a_full_socket() -> None:
    """The write is shielded from its caller, not from the connection's end:
    closing it (eviction) does not wait for the stall timeout (60 s)."""
    async with trio.open_nursery() as nursery:
        gate, a, b = await connected(nursery)
        gate.shut()
        failed: list[BaseException] = []

        async def ask() -> None:
            try:
                await a.request(lambda rid: Ping(rid, b"stuck"))
            except RequestFailed as exc:
                failed.append(exc)

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert gate.waiting == 1
        with trio.fail_after(5):
            await a.aclose()
            await trio.testing.wait_all_tasks_blocked()
        assert a.closed and failed
        nursery.cancel_scope.cancel()


async def ask_ignoring_the_end(conn: PeerConnection) -> None:
    with pytest.raises(RequestFailed):
        await conn.request(lambda rid: Ping(rid, b"answer me"))


async def test_a_cancelled_connection_ends_a_reply_stuck_behind_a_full_socket() -> None:
    """Node shutdown cancels the connection's task: a reply being written
    (shielded from the cancel of its own task) ends too, at once."""
    async with trio.open_nursery() as outer:
        gate, a_stream, b_stream = await secure_pair()
        a = PeerConnection(a_stream, BOB.peer_id, echo)
        b = PeerConnection(b_stream, ALICE.peer_id, echo)
        await outer.start(b.run)
        hello = Hello(0, (L.PROTOCOL_VERSION,), (), "test", 0, 0)
        with trio.CancelScope() as a_scope:
            async with trio.open_nursery() as inner:
                await inner.start(a.run)
                await a.send(hello)
                await b.send(hello)
                await a.hello_received.wait()
                await b.hello_received.wait()
                gate.shut()
                outer.start_soon(ask_ignoring_the_end, b)
                await trio.testing.wait_all_tasks_blocked()
                assert gate.waiting == 1  # a's Pong is stuck at the gate
                a_scope.cancel()  # the node stops
                with trio.fail_after(5):
                    await trio.sleep_forever()
        assert a_scope.cancelled_caught and a.closed
        outer.cancel_scope.cancel()


async def test_a_secure_stream_refuses_to_send_after_a_cut_short_send() -> None:
    """Defence in depth: after a send that did not complete, the peer's next
    nonce is unknown; further sends fail here instead of on the peer."""
    gate, a, b = await secure_pair()
    gate.shut()
    with trio.move_on_after(0.1):  # real clock, short: the gate never opens
        await a.send_all(b"lost")
    gate.open.set()
    with pytest.raises(trio.BrokenResourceError):
        await a.send_all(b"after")
