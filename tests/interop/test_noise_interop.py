"""Noise XX interop with the real JS `@chainsafe/libp2p-noise` (noise_peer.mjs).

Over loopback TCP, in both roles: the handshake completes, each side proves
its PeerId to the other, and data flows both ways, including payloads larger
than one Noise message (65535 bytes) that must be split into several frames.
A dialler that expects the wrong PeerId refuses, on either side.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.errors import HandshakeError, PeerIdMismatch
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.noise import MAX_MESSAGE, MAX_PLAINTEXT, TAG_LEN
from shoal.p2p.secure.secure_stream import FrameDecoder, SecureStream, secure_accept, secure_dial
from tests.interop.js_process import JsProcess, run_js

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

HERE = Path(__file__).parent
NODE = shutil.which("node")
if NODE is None or not (HERE / "node_modules" / "@chainsafe" / "libp2p-noise").is_dir():
    pytest.skip("node or tests/interop/node_modules missing", allow_module_level=True)

TEST_TIMEOUT = 30.0  # whole scenario, seconds
JS_TIMEOUT_MS = 25_000  # noise_peer.mjs gives up on its own a little earlier

# A short message (one frame) then one over 65535 bytes (several frames).
SIZES = (11, 3 * MAX_PLAINTEXT + 12_345)
TOTAL = sum(SIZES)


class FrameTap(trio.abc.Stream):
    """Pass-through transport recording the size of every frame it receives."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.frames_in: list[int] = []
        self._decoder = FrameDecoder()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self._decoder.feed(data)
        while (frame := self._decoder.next_frame()) is not None:
            self.frames_in.append(len(frame))
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class JsPeer(JsProcess):
    """A running noise_peer.mjs and its line-delimited JSON reports."""


@asynccontextmanager
async def js_peer(tmp_path: Path, *args: str) -> AsyncIterator[JsPeer]:
    assert NODE is not None
    # it ends by itself once its scenario is done: give it a moment to report its exit code
    async with run_js(NODE, "noise_peer.mjs", [*args, "--timeout", str(JS_TIMEOUT_MS)],
                      tmp_path / f"noise_peer_{args[0]}.stderr", JsPeer, grace_s=5) as peer:
        yield peer


def js_args(mode: str, *extra: str) -> tuple[str, ...]:
    return (mode, "--send", ",".join(map(str, SIZES)), "--recv", str(TOTAL), *extra)


async def exchange(stream: SecureStream) -> tuple[bytes, bytes]:
    """Send SIZES as separate writes while reading TOTAL bytes; (sent, received)."""
    chunks = [os.urandom(n) for n in SIZES]
    received = bytearray()

    async def send() -> None:
        for chunk in chunks:
            await stream.send_all(chunk)

    async def receive() -> None:
        while len(received) < TOTAL:
            data = await stream.receive_some()
            assert data, f"EOF after {len(received)} of {TOTAL} bytes"
            received.extend(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
    return b"".join(chunks), bytes(received)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_transport_frames(frames_in: list[int], handshake_frames: int) -> None:
    """The frames after the handshake carry TOTAL plaintext bytes, the big
    payload split into several frames of at most 65535 bytes, full ones first."""
    transport = frames_in[handshake_frames:]
    assert all(TAG_LEN < size <= MAX_MESSAGE for size in transport), transport
    assert sum(size - TAG_LEN for size in transport) == TOTAL, transport
    assert len(transport) >= math.ceil(TOTAL / MAX_PLAINTEXT) > 1, transport
    assert transport.count(MAX_MESSAGE) >= SIZES[-1] // MAX_PLAINTEXT, transport


def check_report(report: dict[str, Any], me: Identity, sent: bytes, received: bytes,
                 handshake_frames: int) -> None:
    assert report["remote"] == str(me.peer_id)
    assert (report["received_len"], report["received_sha256"]) == (len(sent), sha(sent))
    assert (report["sent_len"], report["sent_sha256"]) == (len(received), sha(received))
    # libp2p-noise's frames, as counted on the JS socket: ours, split as the spec says.
    check_transport_frames(report["frames_in"], handshake_frames)


async def test_shoal_dials_js(tmp_path: Path) -> None:
    me = Identity.generate()
    with trio.fail_after(TEST_TIMEOUT):
        async with js_peer(tmp_path, *js_args("listen")) as js:
            ready = await js.expect("ready")
            js_id = PeerId.from_string(ready["peer"])
            tap = FrameTap(await trio.open_tcp_stream("127.0.0.1", ready["port"]))
            stream = await secure_dial(tap, me, js_id)
            try:
                assert stream.remote_peer == js_id
                sent, received = await exchange(stream)
                report = await js.expect("done")
            finally:
                await stream.aclose()
            assert await js.exit_code() == 0, js.stderr()
    check_report(report, me, sent, received, handshake_frames=2)  # JS got messages 1 and 3
    check_transport_frames(tap.frames_in, handshake_frames=1)  # we got message 2


async def test_js_dials_shoal(tmp_path: Path) -> None:
    me = Identity.generate()
    with trio.fail_after(TEST_TIMEOUT):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        async with listener, js_peer(tmp_path, *js_args("dial", "--port", str(port),
                                                        "--expect", str(me.peer_id))) as js:
            js_id = PeerId.from_string((await js.expect("ready"))["peer"])
            tap = FrameTap(await listener.accept())
            stream = await secure_accept(tap, me)
            try:
                assert stream.remote_peer == js_id
                sent, received = await exchange(stream)
                report = await js.expect("done")
            finally:
                await stream.aclose()
            assert await js.exit_code() == 0, js.stderr()
    check_report(report, me, sent, received, handshake_frames=1)  # JS got message 2
    check_transport_frames(tap.frames_in, handshake_frames=2)  # we got messages 1 and 3


async def test_js_dialler_refuses_wrong_peer_id(tmp_path: Path) -> None:
    me = Identity.generate()
    someone_else = Identity.generate().peer_id
    with trio.fail_after(TEST_TIMEOUT):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        async with listener, js_peer(tmp_path, *js_args("dial", "--port", str(port),
                                                        "--expect", str(someone_else))) as js:
            await js.expect("ready")
            transport = await listener.accept()
            # JS aborts after our message 2, so it never sends message 3.
            with pytest.raises(HandshakeError) as caught:
                await secure_accept(transport, me, timeout=10)
            assert not isinstance(caught.value, PeerIdMismatch)
            error = await js.expect("error")
            assert await js.exit_code() == 1, js.stderr()
    assert error["name"] == "UnexpectedPeerError", error
    assert "does not match expected remote identity key" in error["message"], error


async def test_shoal_dialler_refuses_wrong_peer_id(tmp_path: Path) -> None:
    me = Identity.generate()
    someone_else = Identity.generate().peer_id
    with trio.fail_after(TEST_TIMEOUT):
        async with js_peer(tmp_path, *js_args("listen")) as js:
            ready = await js.expect("ready")
            transport = await trio.open_tcp_stream("127.0.0.1", ready["port"])
            with pytest.raises(PeerIdMismatch) as caught:
                await secure_dial(transport, me, someone_else, timeout=10)
            # The listener never gets message 3, so it fails too.
            await js.expect("error")
            assert await js.exit_code() == 1, js.stderr()
    assert str(someone_else) in str(caught.value) and ready["peer"] in str(caught.value)
