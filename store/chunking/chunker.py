"""Chunkers: split a byte stream into the leaf payloads of a UnixFS file DAG.

A chunker only decides *where* to cut; the importer decides how leaves and
parents are encoded. Every chunker streams: it holds at most one chunk (plus
a bounded look-ahead) in memory, whatever the file size. Which chunker a
`--chunker` name means is decided in `choice.py`.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator, Protocol

DEFAULT_CHUNK_SIZE = 1024 * 1024


class Chunker(Protocol):
    """Anything that turns a binary stream into successive chunks.

    The concatenation of the yielded chunks must equal the stream's bytes.
    An empty stream yields nothing.
    """

    name: str

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]: ...


class FixedChunker:
    """Cut every `size` bytes (the last chunk may be shorter), like `size-N`."""

    name = "fixed"

    def __init__(self, size: int = DEFAULT_CHUNK_SIZE) -> None:
        if size <= 0:
            raise ValueError("chunk size must be positive")
        self.size = size

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        size = self.size
        while True:
            buf = read_exactly(stream, size)
            if not buf:
                return
            yield buf
            if len(buf) < size:
                return


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    """Read up to `size` bytes, looping over short reads (pipes, sockets)."""
    first = stream.read(size)
    if not first or len(first) == size:
        return first or b""
    parts = [first]
    got = len(first)
    while got < size:
        more = stream.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
