"""Chunkers: split a byte stream into the leaf payloads of a UnixFS file DAG.

A chunker only decides *where* to cut; the importer decides how leaves and
parents are encoded. Every chunker streams: it holds at most one chunk (plus
a bounded look-ahead) in memory, whatever the file size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator, Protocol

from .errors import InvalidInput

if TYPE_CHECKING:
    from .profiles import Profile

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


CHUNKER_NAMES = ("fixed", "cdc", "safetensors")


def chunker_for(name: str, profile: "Profile", path: Path | None = None) -> Chunker | None:
    """The chunker for a `--chunker` name; None means the profile's fixed size.

    Content-aware chunkers work on single files: a directory is refused.
    """
    if name == "fixed":
        return None
    if name not in CHUNKER_NAMES:
        raise InvalidInput(f"unknown chunker {name!r} (choose from {', '.join(CHUNKER_NAMES)})")
    if path is not None and path.is_dir():
        raise InvalidInput(f"--chunker {name} works on single files, not directories")
    if name == "cdc":
        from .cdc import FastCDCChunker

        return FastCDCChunker()
    from .safetensors import SafetensorsChunker

    return SafetensorsChunker(tensor_chunk_size=profile.chunk_size)
