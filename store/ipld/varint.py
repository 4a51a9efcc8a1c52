"""Unsigned LEB128 varints (multiformats unsigned-varint), bounded.

Decoding refuses non-minimal encodings and anything longer than 9 bytes
(the multiformats limit, 2**63 - 1), so a hostile input can never make us
loop long or build huge integers.
"""

from __future__ import annotations

from typing import Protocol

from shoal.store.errors import MalformedBlock

MAX_VARINT_BYTES = 9


def encode(value: int) -> bytes:
    """Encode a non-negative int as an unsigned varint."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a varint at `pos`; return (value, position after it).

    Raises MalformedBlock on truncation, overlong or non-minimal input.
    """
    value = 0
    shift = 0
    end = len(buf)
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= end:
            raise MalformedBlock("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise MalformedBlock("non-minimal varint")
            return value, pos + i + 1
        shift += 7
    raise MalformedBlock("varint longer than 9 bytes")


class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


def read_from(stream: _Readable, max_bytes: int = MAX_VARINT_BYTES) -> int | None:
    """Read one varint from a binary stream; None at a clean EOF before it."""
    value = 0
    shift = 0
    for i in range(max_bytes):
        b = stream.read(1)
        if not b:
            if i == 0:
                return None
            raise MalformedBlock("truncated varint")
        byte = b[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise MalformedBlock("non-minimal varint")
            return value
        shift += 7
    raise MalformedBlock("varint longer than 9 bytes")
