"""Which chunker a `--chunker` name means, per file ("auto" looks at each file).

Kept apart from chunker.py (the chunker interface and the fixed-size
chunker), which the tensor-aware chunker builds on: choosing needs every
chunker, and the chunkers need none of this.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.store.chunking.chunker import Chunker
from shoal.store.chunking.safetensors import SafetensorsChunker, parse_header
from shoal.store.errors import InvalidInput

if TYPE_CHECKING:
    from shoal.store.chunking.profiles import Profile


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
        return SafetensorsChunker(tensor_chunk_size=self.profile.chunk_size)


def is_safetensors(path: Path) -> bool:
    """True if `path` is a regular file whose safetensors header validates
    (reads the 8-byte length and the header only; never raises).

    Opened without blocking and checked to be a regular file before any
    read: a FIFO or a device would otherwise make the peek wait forever
    (for a writer) or read without end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return False
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
        from shoal.store.chunking.cdc import FastCDCChunker

        return FastCDCChunker()
    auto = PerFileChunker(profile)
    if name == "auto" or is_dir:
        return auto if path is None or is_dir else auto.for_file(path)
    return SafetensorsChunker(tensor_chunk_size=profile.chunk_size)
