"""A misbehaving Shoal peer, for tests: it speaks the real protocol, then lies.

It connects for real (the libp2p upgrade of `shoal.p2p.libp2p.connection`:
multistream-select, Noise XX with its own Ed25519 identity, yamux, then the
`/shoal/session/1.0.0` stream and, on first use, each other Shoal protocol's
stream: shoal.p2p.wire.protocols), frames with `shoal.p2p.wire.framing` and
encodes with `shoal.p2p.wire.codec`, so the node under test gets past every
outer check and meets the bad input where a buggy or hostile peer would put it:

- `run_attacks(...)`: one fresh connection per attack — random frame
  payloads, malformed msgpack, wrong arity, unknown message types and
  protocol versions, unsolicited responses, an oversize length prefix,
  bytes that fail Noise decryption, plain garbage before the handshake — and
  a report of how the node reacted (ERROR codes received, connection closed).
- `serve_corrupt_holder(...)` (also `python -m tests.integration.evil_client
  holder`): listens like a node, answers WantHave with Have for anything and
  WantBlock with bytes that do not match the CID; optionally it poisons
  peer exchange with made-up peers at an address that never answers; and
  it serves one hash-correct but undecodable dag-pb node (`malformed_root_cid`).

Test code only; nothing in p2p/ imports it.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Awaitable, Callable, cast

import msgpack
import trio

from shoal.p2p.wire import codec
from shoal.p2p.wire import limits as L
from shoal.p2p.errors import P2PError
from shoal.p2p.wire.framing import FrameDecoder, encode_frame
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.wire.messages import (
    Block, Error, GetPeers, Have, Hello, Message, PeerInfo, Peers, Ping, Pong, WantBlock, WantHave,
)
from shoal.p2p.libp2p.connection import Libp2pConnection, StreamHandler, YamuxStream, upgrade_outbound
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.wire import protocols
from shoal.p2p.wire.protocols import SESSION
from shoal.p2p.secure.secure_stream import SecureStream

AGENT = "evil/0.1"
REACTION_TIMEOUT_S = 5.0


def _hello(listen: tuple[str, ...] = ()) -> Hello:
    return Hello(0, (L.PROTOCOL_VERSION,), listen, AGENT, 1 << 40, 1 << 39)


def _raw_frame(payload: bytes) -> bytes:
    """A 4-byte length prefix and the payload, unchecked (encode_frame refuses bad sizes)."""
    return len(payload).to_bytes(L.FRAME_HEADER_BYTES, "big") + payload


# -- the client side: attacks on a node ---------------------------------------------


@dataclass
class Reaction:
    """What the node did after one attack."""

    name: str
    error_codes: list[int] = field(default_factory=list)
    closed: bool = False
    answered: list[str] = field(default_factory=list)  # other messages it sent

    def __str__(self) -> str:
        return f"{self.name}: errors={self.error_codes} closed={self.closed} other={self.answered}"


class ShoalChannel:
    """The session stream as the old harness saw its secure channel: bytes to and
    from the node's Shoal protocol, the proven `remote_peer`, and `transport`
    (the bytes under Noise, for attacks below the encryption)."""

    def __init__(self, stream: YamuxStream) -> None:
        self.stream = stream
        self.remote_peer: PeerId = stream.conn.remote_peer
        self.noise: SecureStream = stream.conn.secure
        self.transport = self.noise.transport

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)


async def _run_quietly(conn: Libp2pConnection) -> None:
    """A harness connection's tasks, for callers without a nursery: it ends
    with the connection or the run, and never takes the run down."""
    try:
        await conn.run()
    except Exception:  # a test-only connection: whatever broke, it is over
        pass


class EvilConnection:
    """One authenticated connection's Shoal streams, on which we may send anything at all.

    `stream` (with `decoder`) is the session stream; `send` puts a message
    on the stream of its protocol (opened on first use, like a node), or on
    the one given. The node's own streams to us are accepted for every
    Shoal protocol. `next_message`/`observe` read every stream at once; a
    stream is read only once one of them was called (so a test can also
    never read at all).
    """

    def __init__(self, stream: YamuxStream, handlers: dict[str, StreamHandler] | None = None,
                 spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None) -> None:
        self.stream = stream
        self.conn = stream.conn
        self.secure = ShoalChannel(stream)
        self.decoder = FrameDecoder()
        self.streams: dict[str, YamuxStream] = {SESSION: stream}  # ours, per protocol
        self.accepted: list[YamuxStream] = []  # the node's streams to us
        self._decoders: dict[YamuxStream, FrameDecoder] = {stream: self.decoder}
        send, receive = trio.open_memory_channel[tuple[YamuxStream, Message | None]](math.inf)
        self._inbox_send, self._inbox = send, receive
        self._reading = False
        self._closed = False
        self._spawn = spawn or (lambda fn: trio.lowlevel.spawn_system_task(fn))
        self._opening = trio.Lock()
        if handlers is not None:
            for protocol in protocols.ALL:
                if protocol != SESSION:
                    handlers[protocol] = self._accept

    @classmethod
    async def open(cls, host: str, port: int, peer: PeerId | None, identity: Identity,
                   local: str | None = None, *, nursery: trio.Nursery | None = None) -> "EvilConnection":
        """Dial, upgrade and open the session stream; the connection runs in `nursery`
        (or, without one, in a system task that ends with it)."""
        tcp = await trio.open_tcp_stream(host, port, local_address=local)
        handlers: dict[str, StreamHandler] = {}
        conn = await upgrade_outbound(tcp, identity, handlers, expected_peer=peer, timeout=REACTION_TIMEOUT_S)
        spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None
        if nursery is not None:
            await nursery.start(conn.run)
            spawn = nursery.start_soon
        else:
            trio.lowlevel.spawn_system_task(_run_quietly, conn)
        try:
            return cls(await conn.open_stream(SESSION), handlers, spawn)
        except BaseException:
            await trio.aclose_forcefully(conn.secure)
            raise

    async def stream_for(self, protocol: str) -> YamuxStream:
        """Our stream of `protocol`, opened on first use."""
        async with self._opening:
            stream = self.streams.get(protocol)
            if stream is None:
                stream = self.streams[protocol] = await self.conn.open_stream(protocol, timeout=REACTION_TIMEOUT_S)
                self._decoders[stream] = FrameDecoder()
                if self._reading:
                    self._spawn(lambda: self._read(stream))
            return stream

    async def send(self, msg: Message, stream: YamuxStream | None = None) -> None:
        if stream is None:
            stream = await self.stream_for(protocols.protocol_of(type(msg)) or SESSION)
        await stream.send_all(encode_frame(codec.encode(msg)))

    async def send_raw(self, data: bytes, protocol: str = SESSION) -> None:
        await (await self.stream_for(protocol)).send_all(data)

    async def _accept(self, stream: YamuxStream) -> None:
        """The node opened a stream of one of its protocols to us: read it while we read."""
        self.accepted.append(stream)
        self._decoders[stream] = FrameDecoder()
        while not self._reading:
            if self._closed:
                return
            await self.conn.wait_change()
        await self._read(stream)

    async def _read(self, stream: YamuxStream) -> None:
        decoder = self._decoders[stream]
        try:
            while True:
                data = await stream.receive_some(L.MAX_FRAME_BYTES)
                if not data:
                    break
                for payload in decoder.feed(data):
                    self._inbox_send.send_nowait((stream, codec.decode(payload)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError):
            pass
        self._inbox_send.send_nowait((stream, None))  # this stream ended

    def _start_reading(self) -> None:
        if not self._reading:
            self._reading = True
            for stream in self.streams.values():
                self._spawn(lambda s=stream: self._read(s))  # type: ignore[misc]
            self.conn._notify()  # wakes the accepted streams' handlers

    async def next_message(self) -> tuple[YamuxStream, Message] | None:
        """The next message from any stream and the stream it came on; None
        once the session stream (the connection) has ended."""
        self._start_reading()
        while True:
            stream, msg = await self._inbox.receive()
            if msg is not None:
                return stream, msg
            if stream is self.stream:
                return None

    async def observe(self, reaction: Reaction, seconds: float, until_errors: int = 0) -> Reaction:
        """Read what the node sends on any stream for up to `seconds` (or until it closes)."""
        with trio.move_on_after(seconds):
            while True:
                got = await self.next_message()
                if got is None:
                    reaction.closed = True
                    return reaction
                msg = got[1]
                if isinstance(msg, Error):
                    reaction.error_codes.append(msg.code)
                else:
                    reaction.answered.append(type(msg).__name__)
                if until_errors and len(reaction.error_codes) >= until_errors:
                    return reaction
        return reaction

    async def aclose(self) -> None:
        self._closed = True
        await self.stream.conn.aclose()


def malformed_payloads(rng: random.Random) -> list[bytes]:
    """Frame payloads that are each wrong in a different way."""
    v = L.PROTOCOL_VERSION
    return [
        bytes(rng.getrandbits(8) for _ in range(100)),                   # not msgpack at all
        msgpack.packb({"version": v, "type": 3}),                        # a map: never on the wire
        msgpack.packb([v, 0x03, 7]),                                     # Ping without its payload
        msgpack.packb([v, 0x03, 7, b"x", b"extra"]),                     # too many fields
        msgpack.packb([v, 0x23, 8, "not-a-list"]),                       # WantBlock with a string
        msgpack.packb([v, 0x23, 9, [b"short"]]),                         # a CID far too short
        msgpack.packb([v, 0x20, 10, [[[[[b"x" * 40]]]]]]),               # nesting too deep
        msgpack.packb([v, 0x10, 11, -5]),                                # negative count
        msgpack.packb([v, 0x03, 2**40, b"x"]),                           # request id out of range
        b"\xdd\xff\xff\xff\xff",                                         # array32 header claiming 4G items
        msgpack.packb([v, 0x03, 12, b"x"]) + b"\x00",                    # trailing bytes
        msgpack.packb([v, 0x10, 13, 1], use_bin_type=True)[:-1],         # truncated
    ]


async def run_attacks(host: str, port: int, peer: PeerId, seed: int = 1) -> list[Reaction]:
    """Every attack on its own connection; returns the node's reaction to each."""
    rng = random.Random(seed)
    identity = Identity.generate()
    reactions: list[Reaction] = []

    async def on_connection(name: str, attack: Callable[[EvilConnection, Reaction], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            await attack_on(nursery, name, attack)
            nursery.cancel_scope.cancel()

    async def attack_on(nursery: trio.Nursery, name: str,
                        attack: Callable[[EvilConnection, Reaction], Awaitable[None]]) -> None:
        conn = await EvilConnection.open(host, port, peer, identity, nursery=nursery)
        reaction = Reaction(name)
        try:
            await conn.send(_hello())
            await attack(conn, reaction)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reaction.closed = True  # it hung up on us while we were still sending
        finally:
            await conn.aclose()
        reactions.append(reaction)

    async def random_frames(conn: EvilConnection, r: Reaction) -> None:
        for _ in range(5):
            await conn.send_raw(_raw_frame(rng.randbytes(rng.randint(1, 4000))))
        await conn.observe(r, REACTION_TIMEOUT_S, until_errors=5)

    async def malformed(conn: EvilConnection, r: Reaction) -> None:
        payloads = malformed_payloads(rng)
        for p in payloads:
            await conn.send_raw(_raw_frame(p))
        await conn.observe(r, REACTION_TIMEOUT_S, until_errors=len(payloads))

    async def unknown_type_and_version(conn: EvilConnection, r: Reaction) -> None:
        await conn.send_raw(_raw_frame(msgpack.packb([L.PROTOCOL_VERSION, 0x7F, 5, b"?"])))
        await conn.send_raw(_raw_frame(msgpack.packb([L.PROTOCOL_VERSION + 98, 0x03, 6, b"x"])))
        await conn.observe(r, REACTION_TIMEOUT_S, until_errors=2)
        # Still usable afterwards: a real Ping gets a real Pong.
        await conn.send(Ping(7, b"still-there"))
        await _wait_for(conn, r, "Pong")

    async def unsolicited(conn: EvilConnection, r: Reaction) -> None:
        fake_cid = b"\x01\x55\x12\x20" + rng.randbytes(32)
        await conn.send(Block(4242, fake_cid, rng.randbytes(1000)))   # a response to nothing
        await conn.send(Pong(4243, b"x"))
        await conn.send(_hello())                                      # a second hello
        await conn.send(Ping(1, b"alive?"))
        await _wait_for(conn, r, "Pong")

    async def flood_of_malformed(conn: EvilConnection, r: Reaction) -> None:
        for _ in range(40):  # more than the node tolerates: it must hang up
            await conn.send_raw(_raw_frame(b"\xc1" * 10))  # 0xc1 is never valid msgpack
        await conn.observe(r, REACTION_TIMEOUT_S)

    async def oversize_length(conn: EvilConnection, r: Reaction) -> None:
        await conn.send_raw(b"\xff\xff\xff\xff" + rng.randbytes(1000))
        await conn.observe(r, REACTION_TIMEOUT_S)

    async def just_over_cap(conn: EvilConnection, r: Reaction) -> None:
        await conn.send_raw((L.MAX_FRAME_BYTES + 1).to_bytes(4, "big") + rng.randbytes(64 * 1024))
        await conn.observe(r, REACTION_TIMEOUT_S)

    async def zero_length(conn: EvilConnection, r: Reaction) -> None:
        await conn.send_raw(b"\x00\x00\x00\x00")
        await conn.observe(r, REACTION_TIMEOUT_S)

    async def undecryptable(conn: EvilConnection, r: Reaction) -> None:
        # Under the encryption: a Noise frame whose tag cannot verify.
        await conn.secure.transport.send_all(b"\x00\x40" + rng.randbytes(64))  # under Noise
        await conn.observe(r, REACTION_TIMEOUT_S)

    async def huge_want_block(conn: EvilConnection, r: Reaction) -> None:
        # Legal-looking requests for blocks the node does not have, 300 at once:
        # the node must answer (BlockMissing) or say BUSY, never pile them up.
        for i in range(1, 301):
            await conn.send(WantBlock(i, (b"\x01\x55\x12\x20" + rng.randbytes(32),)))
        await conn.observe(r, 2.0)

    for name, attack in [
        ("random frames", random_frames),
        ("malformed messages", malformed),
        ("unknown type and version", unknown_type_and_version),
        ("unsolicited responses", unsolicited),
        ("flood of malformed", flood_of_malformed),
        ("oversize length prefix", oversize_length),
        ("length one over the cap", just_over_cap),
        ("zero length frame", zero_length),
        ("undecryptable noise frame", undecryptable),
        ("many block requests", huge_want_block),
    ]:
        await on_connection(name, attack)

    reactions.append(await _garbage_before_handshake(host, port, rng))
    return reactions


async def _wait_for(conn: EvilConnection, r: Reaction, kind: str) -> None:
    with trio.move_on_after(REACTION_TIMEOUT_S):
        while kind not in r.answered and not r.closed:
            await conn.observe(r, 0.2)


async def _garbage_before_handshake(host: str, port: int, rng: random.Random) -> Reaction:
    """Plain bytes where the Noise handshake should be: the node must hang up."""
    r = Reaction("garbage before the handshake")
    stream = await trio.open_tcp_stream(host, port)
    try:
        # A 5-byte first message where Noise XX needs a 32-byte ephemeral key.
        await stream.send_all(b"\x00\x05" + rng.randbytes(5) + rng.randbytes(5000))
        with trio.move_on_after(L.HANDSHAKE_TIMEOUT_S + REACTION_TIMEOUT_S):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    r.closed = True
                    break
    finally:
        await trio.aclose_forcefully(stream)
    return r


async def garbage_connections(host: str, port: int, count: int, hold_s: float, seed: int = 2) -> int:
    """Open `count` plain TCP connections that send random bytes or nothing.

    They are opened concurrently and held for `hold_s` seconds, then closed.
    Returns how many the node let us open (refused ones are fine).
    """
    rng = random.Random(seed)
    opened = 0

    async def one(i: int) -> None:
        nonlocal opened
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return
        opened += 1
        try:
            if i % 3 == 1:
                await stream.send_all(rng.randbytes(rng.randint(1, 2000)))
            elif i % 3 == 2:
                await stream.send_all(b"\xff\xff" + rng.randbytes(100))  # a huge Noise length
            await trio.sleep(hold_s)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
            if i % 50 == 49:
                await trio.sleep(0.05)  # concurrently-ish: bursts of 50
    return opened


# -- resource attacks: slots, memory, time ---------------------------------------------------


@dataclass
class Held:
    """What happened to a batch of connections an attack opened and held."""

    opened: int = 0  # TCP connections established
    authenticated: int = 0  # ... that also completed the handshake and got the node's Hello
    closed_by_node: int = 0  # ... that the node closed while we held them
    failed: int = 0  # refused, reset or closed during the handshake


async def _open_from(host: str, port: int, local: str | None) -> trio.SocketStream:
    """A TCP connection from source address `local` (any 127.x.y.z is loopback)."""
    return await trio.open_tcp_stream(host, port, local_address=local)


async def half_open_handshakes(host: str, port: int, count: int, hold: trio.Event,
                               sources: list[str] | None = None, held: Held | None = None,
                               ready: trio.Event | None = None) -> Held:
    """Open `count` TCP connections that never say a word, held until `hold` is set.

    Each stays in the node's handshake queue until its timeout: the
    half-open handshake flood. `sources` spreads them over source addresses;
    `ready` is set once every one is open (or failed).
    """
    held = held or Held()

    def settle() -> None:
        if held.opened + held.failed == count and ready is not None:
            ready.set()

    async def one(i: int) -> None:
        local = sources[i % len(sources)] if sources else None
        try:
            stream = await _open_from(host, port, local)
        except OSError:
            held.failed += 1
            settle()
            return
        held.opened += 1
        settle()
        try:
            await hold.wait()
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
            await trio.sleep(0)  # in order, so "the oldest" is well defined
    return held


async def idle_peers(host: str, port: int, peer: PeerId, count: int, hold: trio.Event,
                     sources: list[str] | None = None, held: Held | None = None,
                     ready: trio.Event | None = None) -> Held:
    """`count` authenticated connections, each from a fresh throwaway key, that say
    Hello and then nothing, reading (and ignoring) whatever the node sends —
    including its GetPeers requests, which they never answer. Held until
    `hold` is set; `ready` is set once every attempt has ended up open or failed.
    """
    held = held or Held()
    settled = 0

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == count and ready is not None:
            ready.set()

    async def one(i: int) -> None:
        local = sources[i % len(sources)] if sources else None
        async with trio.open_nursery() as nursery:
            await idle_one(nursery, local)
            nursery.cancel_scope.cancel()

    async def idle_one(nursery: trio.Nursery, local: str | None) -> None:
        conn: EvilConnection | None = None
        try:
            tcp = await _open_from(host, port, local)
            held.opened += 1
            upgraded = await upgrade_outbound(tcp, Identity.generate(), {}, expected_peer=peer,
                                              timeout=REACTION_TIMEOUT_S * 3)
            await nursery.start(upgraded.run)
            with trio.fail_after(REACTION_TIMEOUT_S * 3):
                conn = EvilConnection(await upgraded.open_stream(SESSION))
            await conn.send(_hello())
            got_hello = False
            with trio.move_on_after(REACTION_TIMEOUT_S * 3):
                while not got_hello:
                    data = await conn.stream.receive_some(L.MAX_FRAME_BYTES)
                    if not data:
                        break
                    got_hello = any(isinstance(codec.decode(p), Hello) for p in conn.decoder.feed(data))
        except (OSError, P2PError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            held.failed += 1
            settle()
            return
        if not got_hello:
            held.failed += 1
            settle()
            await conn.aclose()
            return
        held.authenticated += 1
        settle()
        stream = conn.stream
        try:
            async with trio.open_nursery() as inner:
                async def read_all() -> None:
                    try:
                        while await stream.receive_some(L.MAX_FRAME_BYTES):
                            pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError):
                        pass
                    if not hold.is_set():
                        held.closed_by_node += 1
                    inner.cancel_scope.cancel()

                inner.start_soon(read_all)
                await hold.wait()
                inner.cancel_scope.cancel()
        finally:
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
            if i % 16 == 15:
                await trio.sleep(0.05)  # paced: a handshake pool holds them, not a burst
    return held


async def honest_dial(host: str, port: int, peer: PeerId, timeout: float = 15.0) -> bool:
    """Dial like a real peer: handshake, Hello both ways, Ping answered by Pong."""
    async with trio.open_nursery() as nursery:
        ok = await _honest_dial(nursery, host, port, peer, timeout)
        nursery.cancel_scope.cancel()
    return ok


async def _honest_dial(nursery: trio.Nursery, host: str, port: int, peer: PeerId, timeout: float) -> bool:
    conn: EvilConnection | None = None
    try:
        with trio.fail_after(timeout):
            conn = await EvilConnection.open(host, port, peer, Identity.generate(), nursery=nursery)
            await conn.send(_hello())
            await conn.send(Ping(1, b"honest"))
            r = Reaction("honest dial")
            while "Pong" not in r.answered and not r.closed:
                await conn.observe(r, 0.5)
            return "Pong" in r.answered and "Hello" in r.answered
    except (OSError, P2PError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        return False
    finally:
        if conn is not None:
            await conn.aclose()


async def stop_reading(host: str, port: int, peer: PeerId, cids: list[bytes], requests: int,
                       hold: trio.Event) -> None:
    """Ask for `requests` x len(cids) blocks, then never read a byte, until `hold` is set.

    The node's replies pile up on its side of the socket: the slow-reader attack.
    """
    async with trio.open_nursery() as nursery:
        conn = await EvilConnection.open(host, port, peer, Identity.generate(), nursery=nursery)
        try:
            await conn.send(_hello())
            for rid in range(1, requests + 1):
                await conn.send(WantBlock(rid, tuple(cids)))
            await hold.wait()
        finally:
            await conn.aclose()
        nursery.cancel_scope.cancel()


# -- the server side: a holder that serves corrupt blocks ----------------------------------


MALFORMED_NODE = b"\x12\xff\xff\xff\xff\x0f not a dag-pb node"
"""Bytes that are no valid dag-pb node (a Links field whose length overruns).
Served under their own correct CID, they pass the hash check, so the
receiver meets them at the decoder: the honest-hash, malformed-DAG attack."""


def malformed_root_cid() -> str:
    """The CIDv1 (dag-pb) of MALFORMED_NODE, which the holder serves truthfully."""
    from shoal.store.ipld.cid import DAG_PB, make_cid

    return str(make_cid(DAG_PB, MALFORMED_NODE))


async def serve_corrupt_holder(port: int = 0, *, fake_peers: int = 0,
                               task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
                               log: Callable[[str], None] = lambda line: None) -> None:
    """Listen like a node; claim to have everything; serve garbage for every block.

    With `fake_peers`, Peers replies also advertise that many made-up peer ids,
    all at one "tarpit" address that accepts TCP connections and never says a
    word, so every dial to them hangs until the dialer's handshake timeout.
    Reports its multiaddr (with /p2p/) through `task_status`; every request it
    answers is passed to `log` (e.g. "want-block <hex>", "tarpit-max 12").
    """
    identity = Identity.generate()
    fake: tuple[PeerInfo, ...] = ()
    tarpit_listeners: list[trio.SocketListener] = []
    if fake_peers:
        tarpit_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        tarpit = f"/ip4/127.0.0.1/tcp/{tarpit_listeners[0].socket.getsockname()[1]}"
        fake = tuple(PeerInfo(Identity.generate().peer_id.to_bytes(), (tarpit,))
                     for _ in range(min(fake_peers, L.MAX_PEERS_PER_REPLY)))
    held = {"now": 0, "max": 0}

    async def hold_silently(stream: trio.SocketStream) -> None:
        held["now"] += 1
        if held["now"] > held["max"]:
            held["max"] = held["now"]
            log(f"tarpit-max {held['max']}")
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            held["now"] -= 1
            await trio.aclose_forcefully(stream)

    addr = ""

    async def handle(stream: YamuxStream) -> None:
        """One of the node's Shoal streams (it dialled us): Hello on the session, then lies."""
        decoder = FrameDecoder()

        async def send(msg: Message) -> None:
            await stream.send_all(encode_frame(codec.encode(msg)))

        try:
            if stream.protocol == SESSION:
                await send(_hello((addr,)))
            while True:
                data = await stream.receive_some(L.MAX_FRAME_BYTES)
                if not data:
                    return
                for payload in decoder.feed(data):
                    await _answer_badly(send, codec.decode(payload), fake, log)
        except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError):
            return

    async with trio.open_nursery() as nursery:
        host = Libp2pHost(identity, nursery, handshake_timeout=REACTION_TIMEOUT_S)
        for protocol in (SESSION, protocols.EXCHANGE):
            host.handlers[protocol] = handle
        (bound,) = cast(list[object], await nursery.start(host.serve, "127.0.0.1", port))
        addr = f"/ip4/127.0.0.1/tcp/{str(bound).split('/')[4]}"
        if tarpit_listeners:
            nursery.start_soon(trio.serve_listeners, hold_silently, tarpit_listeners)
        task_status.started(f"{addr}/p2p/{identity.peer_id}")


async def _answer_badly(send: Callable[[Message], Awaitable[None]], msg: Message, fake: tuple[PeerInfo, ...],
                        log: Callable[[str], None]) -> None:
    rid = msg.request_id
    if isinstance(msg, Ping):
        await send(Pong(rid, msg.payload))
    elif isinstance(msg, GetPeers):
        await send(Peers(rid, fake[: msg.max_peers]))
    elif isinstance(msg, WantHave):
        log(f"want-have {len(msg.cids)}")
        await send(Have(rid, msg.cids))  # a lie for anything it is asked about
    elif isinstance(msg, WantBlock):
        for cid in msg.cids:
            log(f"want-block {cid.hex()}")
            if cid == _malformed_root_bytes():
                await send(Block(rid, cid, MALFORMED_NODE))  # hash-correct, undecodable
            else:
                await send(Block(rid, cid, os.urandom(1024 * 1024)))


def _malformed_root_bytes() -> bytes:
    from shoal.store.ipld.cid import parse_cid

    return bytes(parse_cid(malformed_root_cid()))


def main(argv: list[str] | None = None) -> int:
    """`holder`: run the corrupt holder until killed, printing its address first."""
    parser = argparse.ArgumentParser(prog="evil_client")
    parser.add_argument("mode", choices=["holder"])
    parser.add_argument("--fake-peers", type=int, default=0,
                        help="advertise this many made-up peers at a silent tarpit address")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(lambda task_status: serve_corrupt_holder(
                fake_peers=args.fake_peers, task_status=task_status, log=log))
            print(f"listening on {addr}", flush=True)

    assert args.mode == "holder"
    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
