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


CHUNKER_NAMES = ("auto", "fixed", "cdc", "safetensors")
DEFAULT_CHUNKER = "auto"


class PerFileChunker:
    """Chooses the chunker of each file of a directory import ("auto").

    A file that parses as safetensors (its header validates against its
    size) gets the tensor-aware chunker; any other file the profile's fixed
    chunker, so its CID is the one `ipfs add` (and the JS importer) gives.
    `for_file` returns None for "the profile's fixed size", as chunker_for.
    """

    name = "auto"

    def __init__(self, profile: "Profile") -> None:
        self.profile = profile

    def for_file(self, path: Path) -> Chunker | None:
        if not is_safetensors(path):
            return None
        from .safetensors import SafetensorsChunker

        return SafetensorsChunker(tensor_chunk_size=self.profile.chunk_size)


def is_safetensors(path: Path) -> bool:
    """True if `path` is a regular file whose safetensors header validates
    (reads the 8-byte length and the header only; never raises)."""
    from .safetensors import parse_header

    try:
        with open(path, "rb") as f:
            parse_header(f)
    except (OSError, InvalidInput, ValueError):
        return False
    return True


def chunker_for(name: str, profile: "Profile", path: Path | None = None) -> "Chunker | PerFileChunker | None":
    """The chunker for a `--chunker` name; None means the profile's fixed size.

    "auto" (the default) on a file is "safetensors" if the file parses as
    safetensors, else "fixed"; on a directory it is decided per file
    (PerFileChunker). "safetensors" on a directory is the same as "auto"
    (a model folder always holds config files too); on a single file it
    refuses one that does not parse. "cdc" applies to every file.
    """
    if name not in CHUNKER_NAMES:
        raise InvalidInput(f"unknown chunker {name!r} (choose from {', '.join(CHUNKER_NAMES)})")
    if name == "fixed":
        return None
    is_dir = path is not None and path.is_dir()
    if name == "cdc":
        from .cdc import FastCDCChunker

        return FastCDCChunker()
    auto = PerFileChunker(profile)
    if name == "auto" or is_dir:
        return auto if path is None or is_dir else auto.for_file(path)
    from .safetensors import SafetensorsChunker

    return SafetensorsChunker(tensor_chunk_size=profile.chunk_size)
