"""Length-prefixed frames over the decrypted Noise byte stream, sans-IO.

A frame is a 4-byte big-endian payload length followed by that many bytes;
each payload is exactly one encoded message (see shoal.p2p.wire.codec). The fixed
4-byte prefix was chosen over an unsigned varint because the length is
known after exactly four bytes, there is no non-minimal encoding to reject,
and the one to three bytes it costs are nothing beside a 1 MiB block.

The decoder checks a declared length against the cap *before* it keeps a
single payload byte, so a hostile length never allocates, and it never
holds more than one partial frame. It does no I/O: the trio driver feeds it
whatever `receive_some` returned and gets complete payloads back.
"""

from __future__ import annotations

from typing import NoReturn

from shoal.p2p.errors import LocalProtocolError, RemoteProtocolError
from shoal.p2p.wire.limits import FRAME_HEADER_BYTES, MAX_FRAME_BYTES

__all__ = ["FrameDecoder", "encode_frame", "encode_frame_parts"]


def encode_frame(payload: bytes, max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Prefix `payload` with its length; LocalProtocolError if empty or too big.

    Refusing here, not at the receiver, turns our own bug into a clear local
    error instead of the remote closing the connection on us.
    """
    size = len(payload)
    if size == 0:
        raise LocalProtocolError("refusing to send an empty frame")
    if size > max_frame_bytes:
        raise LocalProtocolError(f"frame of {size} bytes exceeds the {max_frame_bytes}-byte cap")
    return size.to_bytes(FRAME_HEADER_BYTES, "big") + bytes(payload)


def encode_frame_parts(parts: "list[bytes | memoryview]",
                       max_frame_bytes: int = MAX_FRAME_BYTES) -> "list[bytes | memoryview]":
    """`encode_frame` of the concatenation of `parts`, as parts: nothing is copied.

    Same checks as `encode_frame`; the result's join equals its output.
    """
    size = sum(len(p) if type(p) is bytes else memoryview(p).nbytes for p in parts)
    if size == 0:
        raise LocalProtocolError("refusing to send an empty frame")
    if size > max_frame_bytes:
        raise LocalProtocolError(f"frame of {size} bytes exceeds the {max_frame_bytes}-byte cap")
    return [size.to_bytes(FRAME_HEADER_BYTES, "big"), *parts]


class FrameDecoder:
    """Turn arbitrary chunks of a byte stream into complete frame payloads.

    After the first RemoteProtocolError the decoder is poisoned and every
    later call raises again: after a framing error the stream position is
    unknown, so the only safe thing is to close the connection.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if not 0 < max_frame_bytes < 2 ** (8 * FRAME_HEADER_BYTES):
            raise ValueError("max_frame_bytes out of range")
        self._max = max_frame_bytes
        self._header = bytearray()
        self._body: list[bytes | memoryview] = []  # pieces of the frame in progress
        self._have = 0  # bytes in _body
        self._need: int | None = None  # payload length once the header is complete
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress (never above header + cap)."""
        return len(self._header) + self._have

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is held, so EOF now would be clean."""
        return self.buffered == 0 and self._need is None

    @property
    def wanted(self) -> int:
        """Bytes still missing from the frame in progress (from its header
        while its length is unknown): a reader may wait for that many before
        feeding again, as nothing completes with fewer."""
        if self._need is None:
            return FRAME_HEADER_BYTES - len(self._header)
        return self._need - self._have

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume `data`; return every frame payload it completed, in order.

        On a framing error the payloads completed earlier in the same call are
        dropped with the error: the connection is about to close anyway.
        """
        if self._failed is not None:
            raise RemoteProtocolError(f"frame decoder already failed: {self._failed}")
        view = memoryview(data).cast("B")
        keep = type(data) is bytes  # immutable: pieces of it may be kept as views
        out: list[bytes] = []
        pos, end = 0, len(view)
        while pos < end:
            if self._need is None:
                take = min(FRAME_HEADER_BYTES - len(self._header), end - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) < FRAME_HEADER_BYTES:
                    break
                self._need = self._check_length(int.from_bytes(self._header, "big"))
                self._header.clear()
                continue
            missing = self._need - self._have
            avail = end - pos
            if not self._have and avail >= missing:
                out.append(bytes(view[pos : pos + missing]))  # whole frame here: one copy
                pos += missing
            elif avail < missing:
                self._take(view, pos, end, keep)
                break
            else:
                self._take(view, pos, pos + missing, keep)
                pos += missing
                out.append(b"".join(self._body))
                self._body = []
                self._have = 0
            self._need = None
        return out

    def _take(self, view: memoryview, start: int, stop: int, keep: bool) -> None:
        """Keep view[start:stop] for the frame in progress.

        A piece of a `bytes` chunk is kept as a view, so a frame spread over
        many reads is copied once, when it completes, instead of growing a
        buffer read by read (memory held: the frame plus the parts of
        its first and last chunks outside it). Anything else is copied now: the
        caller may reuse it.
        """
        piece: bytes | memoryview = view[start:stop]
        if not keep:
            piece = bytes(piece)
        self._body.append(piece)
        self._have += stop - start

    def end_of_stream(self) -> None:
        """Call at EOF: RemoteProtocolError if the peer stopped mid-frame."""
        if self._failed is not None:
            raise RemoteProtocolError(f"frame decoder already failed: {self._failed}")
        if not self.at_boundary:
            raise RemoteProtocolError(f"stream ended inside a frame ({self.buffered} bytes held)")

    def _check_length(self, length: int) -> int:
        if length == 0:
            self._fail("empty frame")
        if length > self._max:
            self._fail(f"declared frame length {length} exceeds the {self._max}-byte cap")
        return length

    def _fail(self, reason: str) -> NoReturn:
        self._failed = reason
        self._header.clear()
        self._body = []
        self._have = 0
        raise RemoteProtocolError(reason)
