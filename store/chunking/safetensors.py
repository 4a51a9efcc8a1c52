"""Safetensors: strict header parsing and a tensor-aligned chunker.

Why: a model checkpoint and its fine-tune often share most tensors
byte-for-byte, but a change in the JSON header's length shifts every tensor
and defeats fixed-size chunking. Chunking each tensor on its own (the header
as separate chunks, each tensor cut at fixed offsets from its own start)
lets identical tensors become identical blocks whatever changed around them,
and lets a reader fetch one tensor by touching only its blocks.

Format (huggingface/safetensors): 8-byte little-endian header length N, N
bytes of UTF-8 JSON ``{name: {dtype, shape, data_offsets: [begin, end]},
"__metadata__": {str: str}}`` (possibly padded with spaces), then the data
buffer. Offsets are relative to the buffer; tensors must be contiguous,
non-overlapping and cover the buffer exactly.

Everything wrong with a file is `InvalidInput` with a one-line message; the
chunker validates the whole layout against the file size before yielding
anything, so a bad file leaves no blocks behind. Unknown keys inside a
tensor entry are ignored, as the reference implementation does. Not here:
reading tensor values (Shoal moves bytes, never interprets them).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, BinaryIO, Iterator

from shoal.store.chunking.chunker import read_exactly
from shoal.store.errors import InvalidInput

MAX_HEADER_LEN = 100_000_000  # the reference implementation's limit
MAX_CHUNK = 1024 * 1024  # IPFS bitswap block limit
LEN_PREFIX = 8

# Bits per element (sub-byte dtypes pack; a tensor must fill whole bytes).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: `begin`/`end` are offsets into the data buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header; `tensors` are sorted by `begin`."""

    header_len: int
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str] = field(hash=False)
    data_start: int  # absolute file offset of the data buffer (8 + header_len)

    @property
    def data_len(self) -> int:
        return self.tensors[-1].end if self.tensors else 0

    @property
    def file_size(self) -> int:
        return self.data_start + self.data_len

    @cached_property
    def _by_name(self) -> dict[str, TensorInfo]:
        return {info.name: info for info in self.tensors}

    def tensor(self, name: str) -> TensorInfo:
        """The tensor called `name`; InvalidInput if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownTensor(name, [t.name for t in self.tensors]) from None


class UnknownTensor(InvalidInput):
    """A tensor name the file does not have; the message lists the names it does
    (a user who mistyped one needs the right spelling, not a second command)."""

    SHOWN = 12

    def __init__(self, name: str, names: list[str]) -> None:
        shown = ", ".join(names[: self.SHOWN])
        more = f" and {len(names) - self.SHOWN} more" if len(names) > self.SHOWN else ""
        listing = f"it has {len(names)}: {shown}{more}" if names else "it has none"
        super().__init__(f"safetensors file has no tensor named {name!r}; {listing}")
        self.name = name
        self.names = names


def tensor_byte_range(header: SafetensorsHeader, name: str) -> tuple[int, int]:
    """(absolute file offset, length) of a tensor's bytes, for ranged reads."""
    info = header.tensor(name)
    return header.data_start + info.begin, info.nbytes


def parse_header(
    source: BinaryIO | bytes | bytearray | memoryview, file_size: int | None = None
) -> SafetensorsHeader:
    """Parse and fully validate a safetensors header against the file size.

    `source` is a binary stream positioned at the start of the file (left
    positioned at the data buffer), or the file's bytes. For bytes,
    `file_size` defaults to their length (the whole file); pass it to parse
    from a prefix that holds at least the header. For a stream it defaults
    to what seek/tell or fstat report; InvalidInput if neither works.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else bytes(source)
        size = len(data) if file_size is None else file_size
        return _read_header(_BytesSource(data), size)[0]
    return _read_header(source, _require_size(source, file_size))[0]


class SafetensorsChunker:
    """Chunker "safetensors": header chunk(s), then each tensor cut on its own.

    Every chunk is at most `tensor_chunk_size` bytes and never straddles two
    tensors or the header and a tensor. `file_size` is needed to validate
    before the first chunk; by default it comes from the stream.
    """

    name = "safetensors"

    def __init__(self, tensor_chunk_size: int = MAX_CHUNK, file_size: int | None = None) -> None:
        if not 0 < tensor_chunk_size <= MAX_CHUNK:
            raise ValueError(f"tensor_chunk_size must be in 1..{MAX_CHUNK}")
        self.tensor_chunk_size = tensor_chunk_size
        self.file_size = file_size

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield the header region, then every tensor's bytes in fixed pieces.

        Raises InvalidInput on the first `next()` if the file is malformed;
        later only if the stream delivers other bytes than its size promised.
        """
        size = _require_size(stream, self.file_size)
        header, raw = _read_header(stream, size)
        step = self.tensor_chunk_size
        for i in range(0, len(raw), step):
            yield raw[i : i + step]
        for info in header.tensors:
            left = info.nbytes
            while left:
                want = min(step, left)
                piece = read_exactly(stream, want)
                if len(piece) < want:
                    raise InvalidInput(
                        f"safetensors stream ended inside tensor {info.name!r} "
                        f"(file changed while reading?)"
                    )
                left -= len(piece)
                yield piece
        if stream.read(1):
            raise InvalidInput("safetensors stream is longer than its header says")


class _BytesSource:
    """Minimal reader over bytes, so both inputs share one parsing path."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int) -> bytes:
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


def _require_size(stream: Any, file_size: int | None) -> int:
    if file_size is not None:
        if file_size < 0:
            raise ValueError("file_size must not be negative")
        return file_size
    size = _stream_size(stream)
    if size is None:
        raise InvalidInput(
            "cannot tell the size of this safetensors stream (not a regular file); "
            "pass file_size"
        )
    return size


def _stream_size(stream: Any) -> int | None:
    """Bytes from the stream's position to its end, or None if unknowable."""
    try:
        if stream.seekable():
            pos = stream.tell()
            end = stream.seek(0, os.SEEK_END)
            stream.seek(pos)
            return int(end - pos)
    except (AttributeError, OSError, ValueError):
        pass
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    # Without seek we cannot know the position: assume the file's start.
    # A wrong guess cannot pass silently, the chunker checks every byte count.
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _read_header(stream: Any, file_size: int) -> tuple[SafetensorsHeader, bytes]:
    """Read, parse and validate; returns the header and its raw bytes (prefix + JSON)."""
    prefix = read_exactly(stream, LEN_PREFIX) if file_size >= LEN_PREFIX else b""
    if len(prefix) < LEN_PREFIX:
        raise InvalidInput("truncated safetensors file: shorter than the 8-byte header length")
    n = int.from_bytes(prefix, "little")
    if n > MAX_HEADER_LEN:
        raise InvalidInput(f"safetensors header length {n} exceeds the {MAX_HEADER_LEN}-byte limit")
    if LEN_PREFIX + n > file_size:
        raise InvalidInput(
            f"safetensors header length {n} runs past the end of the file ({file_size} bytes)"
        )
    text = read_exactly(stream, n)
    if len(text) < n:
        raise InvalidInput("truncated safetensors file: header cut short")
    obj = _decode_json(text)
    metadata, tensors = _validate_entries(obj)
    data_start = LEN_PREFIX + n
    header = SafetensorsHeader(n, tuple(tensors), metadata, data_start)
    if header.file_size != file_size:
        if file_size < header.file_size:
            raise InvalidInput(
                f"truncated safetensors file: {file_size} bytes, header needs {header.file_size}"
            )
        raise InvalidInput(
            f"safetensors file has {file_size - header.file_size} bytes after the last tensor"
        )
    return header, prefix + text


def _decode_json(text: bytes) -> dict[str, Any]:
    if not text.startswith(b"{"):
        raise InvalidInput("safetensors header is not a JSON object (must start with '{')")
    try:
        obj = json.loads(
            text.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError:
        raise InvalidInput("safetensors header is not valid UTF-8") from None
    except RecursionError:
        raise InvalidInput("safetensors header JSON is nested too deeply") from None
    except ValueError as exc:
        raise InvalidInput(f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidInput("safetensors header is not a JSON object")
    return obj


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _validate_entries(obj: dict[str, Any]) -> tuple[dict[str, str], list[TensorInfo]]:
    metadata: dict[str, str] = {}
    tensors: list[TensorInfo] = []
    for name, entry in obj.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                isinstance(v, str) for v in entry.values()
            ):
                raise InvalidInput("safetensors __metadata__ must map strings to strings")
            metadata = entry
        else:
            tensors.append(_tensor_info(name, entry))
    tensors.sort(key=lambda t: (t.begin, t.end, t.name))
    pos = 0
    for info in tensors:
        if info.begin != pos:
            what = "overlaps the previous tensor" if info.begin < pos else "leaves a gap"
            raise InvalidInput(
                f"safetensors tensor {info.name!r} at offset {info.begin} {what} "
                f"(expected offset {pos})"
            )
        pos = info.end
    return metadata, tensors


def _tensor_info(name: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict):
        raise InvalidInput(f"safetensors entry {name!r} is not an object")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise InvalidInput(f"safetensors tensor {name!r} has unknown dtype {dtype!r}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise InvalidInput(f"safetensors tensor {name!r} shape is not a list of non-negative ints")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_uint(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise InvalidInput(f"safetensors tensor {name!r} data_offsets is not [begin, end]")
    begin, end = offsets
    _check_size(name, dtype, shape, end - begin)
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _check_size(name: str, dtype: str, shape: list[int], span: int) -> None:
    """dtype x shape must need exactly `span` bytes.

    The product stops as soon as it passes `span`, so a hostile shape
    (thousands of huge dimensions) cannot build a gigantic integer.
    """
    bits = 0 if 0 in shape else DTYPE_BITS[dtype]
    for dim in shape:
        bits *= dim
        if bits > span * 8:
            break
    if bits <= span * 8 and bits % 8:
        raise InvalidInput(f"safetensors tensor {name!r} does not fill a whole number of bytes")
    if bits != span * 8:
        need = f"{bits // 8}" if bits < span * 8 else f"more than {span}"
        raise InvalidInput(
            f"safetensors tensor {name!r} spans {span} bytes but {dtype} x {shape} needs {need}"
        )


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
