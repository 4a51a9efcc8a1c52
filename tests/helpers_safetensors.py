"""Synthetic safetensors files for tests and benchmarks (no torch, no safetensors).

Files are deterministic from a seed: tensor data is SHAKE-256 of
(seed, tensor name), with float16 exponents tamed so values are finite and
below 2 in magnitude, like real weights. Give a tensor its own seed in
`tensor_seeds` to model a fine-tune that changed only that tensor.
The layout follows the reference writer: tensors in the given order,
contiguous from offset 0, header padded with spaces to 8-byte alignment.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterator, Mapping, Sequence

Shape = Sequence[int]

_F16_TAME = bytes(b & 0xBF for b in range(256))  # clear the top exponent bit


def tensor_bytes(name: str, nbytes: int, seed: int) -> bytes:
    """Deterministic float16-looking bytes for one tensor."""
    raw = bytearray(hashlib.shake_256(f"{seed}/{name}".encode()).digest(nbytes))
    raw[1::2] = bytes(raw[1::2]).translate(_F16_TAME)  # little-endian high bytes
    return bytes(raw)


def header_json(header: Mapping[str, Any], align: bool = True) -> bytes:
    """Encode a header object, space-padded to 8-byte alignment if `align`."""
    text = json.dumps(header, separators=(",", ":")).encode()
    if align:
        text += b" " * (-len(text) % 8)
    return text


def raw_file(header: Mapping[str, Any] | bytes, data: bytes = b"", align: bool = True) -> bytes:
    """Assemble a file from any header (valid or not) and a data buffer."""
    text = header if isinstance(header, bytes) else header_json(header, align)
    return len(text).to_bytes(8, "little") + text + data


def layout(
    shapes: Mapping[str, Shape], metadata: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The header object for float16 tensors stored in the given order."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    pos = 0
    for name, shape in shapes.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    return header


def iter_file(
    shapes: Mapping[str, Shape],
    seed: int = 0,
    metadata: Mapping[str, str] | None = None,
    tensor_seeds: Mapping[str, int] | None = None,
) -> Iterator[bytes]:
    """The file as pieces (header, then one piece per tensor): bounded memory."""
    header = layout(shapes, metadata)
    yield raw_file(header)
    for name in shapes:
        begin, end = header[name]["data_offsets"]
        yield tensor_bytes(name, end - begin, (tensor_seeds or {}).get(name, seed))


def make_safetensors(
    shapes: Mapping[str, Shape],
    seed: int = 0,
    metadata: Mapping[str, str] | None = None,
    tensor_seeds: Mapping[str, int] | None = None,
) -> bytes:
    """A whole valid file in memory."""
    return b"".join(iter_file(shapes, seed, metadata, tensor_seeds))


def write_safetensors(
    path: str | os.PathLike[str],
    shapes: Mapping[str, Shape],
    seed: int = 0,
    metadata: Mapping[str, str] | None = None,
    tensor_seeds: Mapping[str, int] | None = None,
) -> int:
    """Write a valid file tensor by tensor; returns its size."""
    size = 0
    with open(path, "wb") as f:
        for piece in iter_file(shapes, seed, metadata, tensor_seeds):
            f.write(piece)
            size += len(piece)
    return size


def model_shapes(layers: int, hidden: int, vocab: int = 1000) -> dict[str, tuple[int, ...]]:
    """A transformer-like set of shapes (embedding, per-layer attention/MLP/norms)."""
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"layers.{i}."
        shapes[p + "attn.qkv.weight"] = (3 * hidden, hidden)
        shapes[p + "attn.out.weight"] = (hidden, hidden)
        shapes[p + "norm1.weight"] = (hidden,)
        shapes[p + "mlp.up.weight"] = (4 * hidden, hidden)
        shapes[p + "mlp.down.weight"] = (hidden, 4 * hidden)
        shapes[p + "norm2.weight"] = (hidden,)
    shapes["head.weight"] = (vocab, hidden)
    return shapes
