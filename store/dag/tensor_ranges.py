"""Lazy reads of safetensors objects stored as UnixFS files.

Why: a reader that wants one tensor of a multi-gigabyte checkpoint should
touch the 8-byte length prefix, the JSON header and that tensor's blocks,
nothing else. Everything here goes through `exporter.read_file` ranges,
which use the parents' blocksizes to skip subtrees, so the blocks read are
exactly those covering the header and the requested tensor (plus the DAG
nodes on the path to them). With the `safetensors` chunker each tensor
starts a fresh leaf, so no neighbouring tensor's bytes are read at all.

The header is validated with `shoal.store.chunking.safetensors.parse_header` against the
file's size from the root block, so a stored object that is not a valid
safetensors file raises InvalidInput before any tensor bytes are read.

Not here: network fetches (`shoal.p2p.exchange.range_fetch` makes a range local first),
interpreting tensor values (Shoal moves bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from shoal.store.dag import exporter
from shoal.store.ipld.cid import CID
from shoal.store.errors import InvalidInput
from shoal.store.dag.exporter import Source
from shoal.store.chunking.safetensors import (
    LEN_PREFIX, MAX_HEADER_LEN, SafetensorsHeader, TensorInfo, parse_header,
)

__all__ = ["NotSafetensors", "SafetensorsObject", "read_header", "tensor_window", "header_span"]


def _read_exact(source: Source, cid: CID, offset: int, length: int) -> bytes:
    data = b"".join(exporter.read_file(source, cid, offset, length))
    if len(data) != length:
        raise InvalidInput(f"{cid}: safetensors file ends inside its header")
    return data


def header_span(prefix: bytes) -> int:
    """Bytes of header (length prefix + JSON) announced by the first 8 bytes."""
    if len(prefix) < LEN_PREFIX:
        raise InvalidInput("truncated safetensors file: shorter than the 8-byte header length")
    n = int.from_bytes(prefix[:LEN_PREFIX], "little")
    if n > MAX_HEADER_LEN:
        raise InvalidInput(f"safetensors header length {n} exceeds the {MAX_HEADER_LEN}-byte limit")
    return LEN_PREFIX + n


def read_header(source: Source, cid: CID) -> SafetensorsHeader:
    """Read and validate the header of the safetensors file at `cid`.

    Reads the root block (for the file size), the first 8 bytes, then the
    JSON; InvalidInput if `cid` is not a file or not valid safetensors.
    """
    st = exporter.stat(source, cid)
    if st.kind not in ("file", "raw") or st.size is None:
        raise NotSafetensors(f"{cid} is a {st.kind}, not a safetensors file")
    size = st.size
    try:
        if size < LEN_PREFIX:
            raise InvalidInput("truncated safetensors file: shorter than the 8-byte header length")
        prefix = _read_exact(source, cid, 0, LEN_PREFIX)
        span = header_span(prefix)
        if span > size:
            raise InvalidInput(
                f"safetensors header length {span - LEN_PREFIX} runs past the end of the file ({size} bytes)"
            )
        text = _read_exact(source, cid, LEN_PREFIX, span - LEN_PREFIX)
        return parse_header(prefix + text, file_size=size)
    except NotSafetensors:
        raise
    except InvalidInput as exc:
        # What a user who typed --tensor on the wrong file needs first is that
        # it is not safetensors at all; the parser's detail follows.
        raise NotSafetensors(f"{cid} is not a safetensors file ({exc})") from None


class NotSafetensors(InvalidInput):
    """A stored object asked for a tensor that is not a valid safetensors file."""

    hint = "--tensor reads one tensor of a .safetensors file; without it `shoal cat` prints the bytes"


def window(header: SafetensorsHeader, name: str, offset: int = 0,
           length: int | None = None) -> tuple[int, int]:
    """(absolute offset, length) of bytes [offset, offset+length) *within* tensor `name`.

    The window is clipped to the tensor, so a reader never runs into the
    next tensor's bytes; an offset past the tensor's end gives length 0.
    """
    if offset < 0 or (length is not None and length < 0):
        raise InvalidInput("offset and length must be non-negative")
    info = header.tensor(name)
    start = min(offset, info.nbytes)
    left = info.nbytes - start
    return header.data_start + info.begin + start, left if length is None else min(length, left)


def tensor_window(source: Source, cid: CID, name: str, offset: int = 0,
                  length: int | None = None) -> tuple[int, int]:
    """Where tensor `name` (or a window into it) lies in the file at `cid`.

    Returns (absolute file offset, length) for `exporter.read_file`. Only the
    root block and the blocks holding the header are read.
    """
    return window(read_header(source, cid), name, offset, length)


@dataclass(frozen=True)
class SafetensorsObject:
    """A stored safetensors file opened lazily: header now, tensors on demand."""

    source: Source
    cid: CID
    header: SafetensorsHeader

    @classmethod
    def open(cls, source: Source, cid: CID) -> "SafetensorsObject":
        """Read and validate only the header; InvalidInput if it is not safetensors."""
        return cls(source, cid, read_header(source, cid))

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        """Tensor name -> dtype, shape and offsets, in file order."""
        return {t.name: t for t in self.header.tensors}

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.header.metadata)

    def iter_tensor(self, name: str, offset: int = 0,
                    length: int | None = None) -> Iterator[bytes]:
        """Stream a tensor's bytes (or a window into it), reading only its blocks."""
        start, n = window(self.header, name, offset, length)
        return exporter.read_file(self.source, self.cid, start, n)

    def read_tensor(self, name: str) -> bytes:
        """All bytes of tensor `name`, reading only the blocks that cover it."""
        data = b"".join(self.iter_tensor(name))
        if len(data) != self.header.tensor(name).nbytes:
            raise InvalidInput(f"{self.cid}: file ends inside tensor {name!r}")
        return data
