"""Thin trio driver: run `NoiseHandshake` over a stream, then encrypt frames.

Wire format as libp2p-noise: every Noise message (handshake or transport)
is sent as a 2-byte big-endian length followed by that many bytes, so no
frame can exceed 65535 bytes and a reader never buffers more than one frame.
All protocol decisions live in `p2p.noise` and `FrameDecoder`; this module
only moves bytes and enforces the handshake timeout.

Not here: multistream-select negotiation, stream multiplexing, half-close.
"""

from __future__ import annotations

import trio

from p2p.errors import HandshakeError, P2PError, RemoteProtocolError
from p2p.identity import Identity, PeerId
from p2p.noise import MAX_MESSAGE, MAX_PLAINTEXT, NoiseHandshake, Role, SecureSession

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "FrameDecoder",
    "SecureStream",
    "encode_frame",
    "secure_accept",
    "secure_dial",
]

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
_RECEIVE_CHUNK = 65536 + 2


def encode_frame(message: bytes) -> bytes:
    """Length-prefix one Noise message."""
    if len(message) > MAX_MESSAGE:
        raise ValueError("a Noise message is at most 65535 bytes")
    return len(message).to_bytes(2, "big") + message


class FrameDecoder:
    """Sans-IO splitter of length-prefixed frames from a byte stream.

    Buffers at most one partial frame plus whatever one `feed` delivered.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete frame, or None until more bytes arrive."""
        if len(self._buf) < 2:
            return None
        size = int.from_bytes(self._buf[:2], "big")
        if len(self._buf) < 2 + size:
            return None
        frame = bytes(self._buf[2 : 2 + size])
        del self._buf[: 2 + size]
        return frame

    @property
    def pending(self) -> int:
        """Bytes buffered but not yet returned as a frame."""
        return len(self._buf)


class _FrameReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._decoder = FrameDecoder()

    async def read_frame(self) -> bytes | None:
        """The next frame; None on a clean EOF between frames."""
        while (frame := self._decoder.next_frame()) is None:
            data = await self._stream.receive_some(_RECEIVE_CHUNK)
            if not data:
                if self._decoder.pending:
                    raise RemoteProtocolError("connection closed in the middle of a frame")
                return None
            self._decoder.feed(data)
        return frame


class SecureStream(trio.abc.Stream):
    """An encrypted, authenticated `trio.abc.Stream` to a known peer.

    `send_all` splits data into Noise messages of at most 65535 bytes;
    `receive_some` returns decrypted bytes, b"" at the remote's clean EOF.
    A frame that fails authentication raises DecryptError; the stream is
    then broken and later calls raise `trio.BrokenResourceError`. As with
    every trio stream, two tasks may not send (or receive) at once.
    """

    def __init__(
        self, transport: trio.abc.Stream, session: SecureSession, reader: _FrameReader
    ) -> None:
        self.transport = transport
        self._session = session
        self._reader = reader
        self._plain = bytearray()
        self._sending = False
        self._receiving = False
        self._closed = False
        self._broken = False

    @property
    def remote_peer(self) -> PeerId:
        """The PeerId the remote proved during the handshake."""
        return self._session.remote_peer

    def _check(self, busy: bool, what: str) -> None:
        if self._closed:
            raise trio.ClosedResourceError("secure stream was closed")
        if self._broken:
            raise trio.BrokenResourceError("secure stream failed earlier")
        if busy:
            raise trio.BusyResourceError(f"another task is already in {what}")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check(self._sending, "send_all")
        self._sending = True
        try:
            view = memoryview(data)
            if not view.nbytes:
                await trio.lowlevel.checkpoint()
                return
            for start in range(0, view.nbytes, MAX_PLAINTEXT):
                chunk = bytes(view[start : start + MAX_PLAINTEXT])
                await self.transport.send_all(encode_frame(self._session.encrypt(chunk)))
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check(self._sending, "send_all")
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self._check(self._receiving, "receive_some")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._receiving = True
        try:
            while not self._plain:
                frame = await self._reader.read_frame()
                if frame is None:
                    return b""
                try:
                    self._plain += self._session.decrypt(frame)
                except P2PError:
                    self._broken = True
                    raise
            if max_bytes is None:
                max_bytes = len(self._plain)
            out = bytes(self._plain[:max_bytes])
            del self._plain[:max_bytes]
            return out
        except RemoteProtocolError:
            self._broken = True
            raise
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        self._closed = True
        await self.transport.aclose()


async def _handshake(
    stream: trio.abc.Stream, hs: NoiseHandshake, timeout: float
) -> SecureStream:
    reader = _FrameReader(stream)
    try:
        with trio.fail_after(timeout):
            while not hs.complete:
                if hs.my_turn:
                    await stream.send_all(encode_frame(hs.write_message()))
                else:
                    frame = await reader.read_frame()
                    if frame is None:
                        raise HandshakeError("connection closed during the handshake")
                    hs.read_message(frame)
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(f"handshake took longer than {timeout} s") from None
    except RemoteProtocolError as exc:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(str(exc)) from None
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(f"connection broke during the handshake: {exc}") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return SecureStream(stream, hs.session(), reader)


async def secure_dial(
    stream: trio.abc.Stream,
    identity: Identity,
    expected_peer: PeerId | None = None,
    *,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> SecureStream:
    """Secure an outgoing connection as the Noise initiator.

    With `expected_peer`, fails with PeerIdMismatch (before revealing our
    identity) unless the remote proves that id. On any failure the
    transport stream is closed and a HandshakeError subclass is raised.
    """
    handshake = NoiseHandshake(Role.INITIATOR, identity, expected_peer)
    return await _handshake(stream, handshake, timeout)


async def secure_accept(
    stream: trio.abc.Stream,
    identity: Identity,
    *,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> SecureStream:
    """Secure an incoming connection as the Noise responder.

    The caller learns who connected from `.remote_peer`. On any failure the
    transport stream is closed and a HandshakeError subclass is raised.
    """
    return await _handshake(stream, NoiseHandshake(Role.RESPONDER, identity), timeout)
