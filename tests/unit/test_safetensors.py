"""Safetensors header parser and tensor-aligned chunker: layout, strictness, fuzz."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.store.errors import InvalidInput
from shoal.store.chunking.safetensors import (
    MAX_HEADER_LEN, SafetensorsChunker, SafetensorsHeader, parse_header, tensor_byte_range,
)
from tests.helpers_safetensors import (
    layout, make_safetensors, model_shapes, raw_file, tensor_bytes, write_safetensors,
)

SHAPES = {"a": (3, 5), "empty": (0, 4), "b": (700,), "c": (40, 50), "scalar": ()}


def good_file() -> bytes:
    return make_safetensors(SHAPES, seed=1, metadata={"format": "pt"})


def chunk_all(data: bytes, size: int = 1024) -> list[bytes]:
    return list(SafetensorsChunker(size).chunks(io.BytesIO(data)))


# -- parsing valid files ----------------------------------------------------


def test_generator_round_trip() -> None:
    data = good_file()
    header = parse_header(data)
    assert header.metadata == {"format": "pt"}
    assert header.header_len % 8 == 0
    assert header.data_start == 8 + header.header_len
    assert header.file_size == len(data)
    assert [t.name for t in header.tensors] == ["a", "empty", "b", "c", "scalar"]
    c = header.tensor("c")
    assert (c.dtype, c.shape, c.nbytes) == ("F16", (40, 50), 4000)
    offset, length = tensor_byte_range(header, "c")
    assert data[offset : offset + length] == tensor_bytes("c", 4000, 1)
    assert header.tensor("scalar").nbytes == 2


def test_parse_from_stream_leaves_position_at_data() -> None:
    data = good_file()
    stream = io.BytesIO(data)
    header = parse_header(stream)
    assert stream.tell() == header.data_start
    assert parse_header(data[: header.data_start], file_size=len(data)) == header


def test_tensors_sorted_by_offset_whatever_the_json_order() -> None:
    header = layout({"x": (4,), "y": (2,), "z": (0,)})
    reordered = {k: header[k] for k in ("z", "y", "x")}
    data = raw_file(reordered, bytes(12))
    assert [t.name for t in parse_header(data).tensors] == ["x", "y", "z"]


def test_other_dtypes_and_unknown_keys_ignored() -> None:
    header = {
        "f4": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]},
        "i64": {"dtype": "I64", "shape": [1], "data_offsets": [3, 11], "extra": 1},
        "bf": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [11, 13]},
    }
    assert [t.dtype for t in parse_header(raw_file(header, bytes(13))).tensors] == [
        "F4", "I64", "BF16",
    ]


def test_no_tensors_is_valid() -> None:
    header = parse_header(raw_file({}))
    assert header.tensors == () and header.data_len == 0


def test_unknown_tensor_name() -> None:
    with pytest.raises(InvalidInput, match="no tensor named"):
        tensor_byte_range(parse_header(good_file()), "nope")


# -- malformed files --------------------------------------------------------


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


MALFORMED: dict[str, bytes] = {
    "empty file": b"",
    "short length prefix": b"\x10\x00\x00",
    "header length too big": (MAX_HEADER_LEN + 1).to_bytes(8, "little") + b"{}",
    "header length past end": (64).to_bytes(8, "little") + b"{}      ",
    "huge length": (2**64 - 1).to_bytes(8, "little"),
    "bad json": raw_file(b'{"a": ', align=False),
    "not utf-8": raw_file(b'{"\xff": 1}', align=False),
    "not an object": raw_file(b"[1, 2]  ", align=False),
    "object then junk": raw_file(b"{} []", align=False),
    "NaN constant": raw_file(b'{"a": NaN}', align=False),
    "duplicate key": raw_file(
        b'{"a":' + json.dumps(tensor("U8", [1], 0, 1)).encode() + b',"a":'
        + json.dumps(tensor("U8", [1], 0, 1)).encode() + b"}",
        b"x",
    ),
    "deep nesting": raw_file(b"{" + b'"a":[' * 100_000 + b"]" * 100_000 + b"}", align=False),
    "entry not an object": raw_file({"a": [1, 2]}),
    "unknown dtype": raw_file({"a": tensor("F17", [1], 0, 2)}, bytes(2)),
    "dtype not a string": raw_file({"a": {**tensor("U8", [2], 0, 2), "dtype": None}}, bytes(2)),
    "negative dim": raw_file({"a": tensor("U8", [-1], 0, 0)}),
    "float dim": raw_file({"a": tensor("U8", [1.5], 0, 1)}, bytes(1)),  # type: ignore[list-item]
    "bool dim": raw_file({"a": tensor("U8", [True], 0, 1)}, bytes(1)),
    "shape not a list": raw_file({"a": {"dtype": "U8", "shape": 3, "data_offsets": [0, 3]}}),
    "missing offsets": raw_file({"a": {"dtype": "U8", "shape": [1]}}, bytes(1)),
    "three offsets": raw_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}),
    "reversed offsets": raw_file({"a": tensor("U8", [0], 1, 0)}, bytes(1)),
    "wrong size for dtype x shape": raw_file({"a": tensor("F32", [2, 2], 0, 8)}, bytes(8)),
    "huge shape": raw_file({"a": tensor("F32", [2**40] * 50, 0, 8)}, bytes(8)),
    "sub-byte tensor": raw_file({"a": tensor("F4", [3], 0, 1)}, bytes(1)),
    "overlap": raw_file(
        {"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [4], 2, 6)}, bytes(6)
    ),
    "gap": raw_file({"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [4], 5, 9)}, bytes(9)),
    "not starting at zero": raw_file({"a": tensor("U8", [4], 1, 5)}, bytes(5)),
    "bad metadata": raw_file({"__metadata__": {"k": 1}}),
    "metadata not an object": raw_file({"__metadata__": "x"}),
    "truncated data": raw_file({"a": tensor("U8", [4], 0, 4)}, bytes(3)),
    "trailing bytes": raw_file({"a": tensor("U8", [4], 0, 4)}, bytes(5)),
    "padding with NULs": (8).to_bytes(8, "little") + b"{}\0\0\0\0\0\0",
    "leading space": raw_file(b" {}", align=False),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_rejected_by_parser(name: str) -> None:
    with pytest.raises(InvalidInput):
        parse_header(MALFORMED[name])


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_rejected_before_any_chunk(name: str) -> None:
    it = SafetensorsChunker().chunks(io.BytesIO(MALFORMED[name]))
    with pytest.raises(InvalidInput):
        next(it)


def test_truncated_real_file_rejected_before_any_chunk() -> None:
    data = good_file()
    for cut in (len(data) - 1, parse_header(data).data_start + 3, 20, 5):
        with pytest.raises(InvalidInput, match="truncated|past the end"):
            next(SafetensorsChunker().chunks(io.BytesIO(data[:cut])))


def test_error_messages_are_one_line() -> None:
    for data in MALFORMED.values():
        with pytest.raises(InvalidInput) as info:
            parse_header(data)
        assert "\n" not in str(info.value) and str(info.value)


# -- chunking ---------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 64, 1024, 1 << 20])
def test_chunks_concatenate_to_file_and_align_to_tensors(size: int) -> None:
    data = good_file()
    header = parse_header(data)
    chunks = chunk_all(data, size)
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= size for c in chunks)
    boundaries = {0}
    pos = 0
    for c in chunks:
        pos += len(c)
        boundaries.add(pos)
    edges = {header.data_start} | {header.data_start + t.end for t in header.tensors}
    assert edges <= boundaries  # every tensor starts and ends on a chunk boundary
    for t in header.tensors:  # ...and chunks inside a tensor are cut from its start
        start = header.data_start + t.begin
        inside = sorted(b for b in boundaries if start <= b <= start + t.nbytes)
        assert inside == sorted({*range(start, start + t.nbytes, size), start + t.nbytes})


def test_big_header_is_split() -> None:
    shapes = {f"tensor.{i:05d}.with.a.long.name": (1,) for i in range(30_000)}
    data = make_safetensors(shapes)
    header = parse_header(data)
    assert header.data_start > 1 << 20
    chunks = list(SafetensorsChunker().chunks(io.BytesIO(data)))
    assert b"".join(chunks) == data
    mib = 1 << 20
    full, rest = divmod(header.data_start, mib)
    assert [len(c) for c in chunks[: full + 1]] == [mib] * full + [rest]
    assert len(chunks) == full + 1 + len(shapes)


def test_identical_tensors_give_identical_chunks_after_header_change() -> None:
    shapes = model_shapes(layers=2, hidden=64)
    base = make_safetensors(shapes, seed=5)
    tuned = make_safetensors(shapes, seed=5, metadata={"note": "fine-tuned"},
                             tensor_seeds={"layers.1.mlp.up.weight": 6})
    old = set(chunk_all(base, 4096))
    new = chunk_all(tuned, 4096)
    changed = [c for c in new if c not in old]
    up = parse_header(tuned).tensor("layers.1.mlp.up.weight").nbytes
    assert sum(map(len, changed)) <= up + parse_header(tuned).data_start


def test_file_on_disk_and_size_sources(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    size = write_safetensors(path, model_shapes(1, 32), seed=2, metadata={"a": "b"})
    assert size == os.path.getsize(path)
    with open(path, "rb") as f:
        assert b"".join(SafetensorsChunker().chunks(f)) == path.read_bytes()
    with open(path, "rb", buffering=0) as raw:
        assert b"".join(SafetensorsChunker().chunks(raw)) == path.read_bytes()


class Pipe(io.RawIOBase):
    """An unseekable stream with no file descriptor, like a socket reader."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._src.read(min(n, 3) if n >= 0 else 3)


def test_unseekable_stream_needs_explicit_size() -> None:
    data = good_file()
    with pytest.raises(InvalidInput, match="file_size"):
        next(SafetensorsChunker().chunks(Pipe(data)))  # type: ignore[arg-type]
    chunks = list(SafetensorsChunker(100, file_size=len(data)).chunks(Pipe(data)))  # type: ignore[arg-type]
    assert b"".join(chunks) == data


def test_stream_shorter_or_longer_than_declared_size() -> None:
    data = good_file()
    with pytest.raises(InvalidInput):
        next(SafetensorsChunker(file_size=len(data) + 1).chunks(Pipe(data)))  # type: ignore[arg-type]
    # The size matches the header but the stream then delivers less: detected late.
    short = SafetensorsChunker(file_size=len(data)).chunks(Pipe(data[:-10]))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="ended inside"):
        list(short)
    longer = SafetensorsChunker(file_size=len(data)).chunks(Pipe(data + b"x"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="longer"):
        list(longer)


def test_bad_chunk_size() -> None:
    for size in (0, (1 << 20) + 1):
        with pytest.raises(ValueError):
            SafetensorsChunker(size)


# -- fuzz -------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_raise_invalid_input(data: bytes) -> None:
    try:
        header = parse_header(data)
    except InvalidInput:
        return
    assert isinstance(header, SafetensorsHeader)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**65) | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["U8", "F16", "F4", "I64", "XX"]) | json_values,
        "shape": st.lists(st.integers(-1, 5), max_size=3) | json_values,
        "data_offsets": st.lists(st.integers(-1, 40), min_size=2, max_size=2) | json_values,
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "__metadata__"]), entry | json_values, max_size=4),
    st.integers(0, 64),
    st.booleans(),
)
def test_fuzz_structured_headers(header: dict[str, Any], data_len: int, align: bool) -> None:
    data = raw_file(header, bytes(data_len), align=align)
    try:
        parsed = parse_header(data)
    except InvalidInput:
        return
    assert parsed.file_size == len(data)
    assert b"".join(chunk_all(data, 5)) == data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(st.integers(0, 40), max_size=3), min_size=0, max_size=6),
    st.integers(1, 300),
    st.integers(0, 2**32),
)
def test_fuzz_valid_files_chunk_on_tensor_boundaries(
    shapes: list[list[int]], size: int, seed: int
) -> None:
    named = {f"t{i}": tuple(s) for i, s in enumerate(shapes)}
    data = make_safetensors(named, seed=seed, metadata={"seed": str(seed)})
    header = parse_header(data)
    chunks = chunk_all(data, size)
    assert b"".join(chunks) == data
    ends, pos = set(), 0
    for c in chunks:
        pos += len(c)
        ends.add(pos)
    assert {header.data_start + t.end for t in header.tensors if t.nbytes} <= ends


def test_auto_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    """`--chunker auto` (the default) peeks at a file's header to choose. A
    FIFO given to `shoal put` made that open() wait forever for a writer
    (offline the command hung; through a node, the call site runs on the
    event loop). Only regular files are peeked at, and never with a blocking open."""
    import threading

    from shoal.store.chunking.choice import chunker_for, is_safetensors
    from shoal.store.chunking.profiles import DEFAULT_PROFILE

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.extend([is_safetensors(fifo),
                                                     chunker_for("auto", DEFAULT_PROFILE, fifo)]),
                         daemon=True)
    t.start()
    t.join(5)
    try:
        assert not t.is_alive(), "is_safetensors blocked opening a FIFO"
        assert seen == [False, None]
    finally:
        if t.is_alive():  # release the blocked open() so the thread ends
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
            t.join(5)
