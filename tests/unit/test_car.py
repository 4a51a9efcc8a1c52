"""CARv1 codec: round trips, strict header, verification, all-or-nothing import, fuzz."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.store.ipld import varint
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.car import (
    MAX_BLOCK_SIZE, CarReader, decode_header, encode_header, import_car, read_car, write_car,
)
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.errors import CarError


def raw_blocks(n: int, size: int = 100) -> list[tuple[CID, bytes]]:
    blocks = []
    for i in range(n):
        data = bytes([i % 256]) * size + i.to_bytes(4, "big")
        blocks.append((make_cid("raw", data), data))
    return blocks


def car_bytes(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> bytes:
    buf = io.BytesIO()
    n = write_car(buf, roots, blocks)
    assert n == len(buf.getvalue())
    return buf.getvalue()


def with_header(body: bytes) -> bytes:
    return varint.encode(len(body)) + body


class Pipe(io.RawIOBase):
    """A non-seekable stream that returns short reads, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int | None = -1) -> bytes:
        return self._buf.read(min(n, 7) if n is not None and n > 0 else n)


# --- header ---

def test_header_bytes_are_canonical_dag_cbor() -> None:
    cid = make_cid("raw", b"x")
    hdr = encode_header([cid])
    assert hdr == (b"\xa2\x65roots\x81\xd8\x2a\x58\x25\x00" + bytes(cid)
                   + b"\x67version\x01")
    assert decode_header(hdr) == [cid]


def test_header_zero_and_many_roots_and_v0() -> None:
    assert decode_header(encode_header([])) == []
    roots = [make_cid("dag-pb", bytes([i]), version=i % 2) for i in range(30)]
    assert decode_header(encode_header(roots)) == roots


@pytest.mark.parametrize("body, why", [
    (b"\xa2\x65roots\x80\x67version\x02", "version"),
    (b"\xa1\x67version\x03", "version"),
    (bytes.fromhex("a16776657273696f6e02"), "CARv2"),
    (b"\xa2\x67version\x01\x65roots\x80", "roots"),               # wrong key order
    (b"\xa3\x65roots\x80\x67version\x01\x61x\x01", "keys"),      # extra key
    (b"\xa2\x65roots\x80\x67version\x01\x00", "trailing"),
    (b"\xa2\x65roots\x80\x67version\x18\x01", "non-minimal"),
    (b"\xa2\x65roots\x9f\xff\x67version\x01", "indefinite"),
    (b"\x82\x01\x02", "map"),
    (b"\xa2\x65roots\x81\x58\x01\x00\x67version\x01", "tag 42"),
    (b"\xa2\x65roots\x81\xd8\x2a\x42\x00\x01\x67version\x01", "CID"),
])
def test_bad_headers_refused(body: bytes, why: str) -> None:
    with pytest.raises(CarError, match=why):
        read_car(io.BytesIO(with_header(body)))


def test_header_length_capped_before_allocating() -> None:
    with pytest.raises(CarError, match="out of range"):
        read_car(io.BytesIO(varint.encode(1 << 40)))
    with pytest.raises(CarError, match="empty"):
        read_car(io.BytesIO(b""))


# --- round trip and reading ---

@pytest.mark.parametrize("version", [0, 1])
def test_round_trip(version: int) -> None:
    blocks = raw_blocks(5) + [(make_cid("dag-pb", b"\x0a\x02\x08\x01", version), b"\x0a\x02\x08\x01")]
    data = car_bytes([blocks[-1][0]], blocks)
    reader = read_car(io.BytesIO(data))
    assert isinstance(reader, CarReader)
    assert reader.roots == [blocks[-1][0]]
    assert list(reader) == blocks


def test_reader_handles_short_reads() -> None:
    blocks = raw_blocks(3, size=1000)
    assert list(read_car(Pipe(car_bytes([blocks[0][0]], blocks)))) == blocks  # type: ignore[arg-type]


def test_corrupted_block_refused() -> None:
    blocks = raw_blocks(3)
    data = bytearray(car_bytes([blocks[0][0]], blocks))
    data[-1] ^= 1
    with pytest.raises(CarError, match="does not match"):
        list(read_car(io.BytesIO(bytes(data))))


def test_truncated_everywhere() -> None:
    blocks = raw_blocks(2)
    data = car_bytes([blocks[0][0]], blocks)
    # CARv1 has no trailer: a cut exactly between sections is a valid, shorter CAR.
    boundaries = {len(car_bytes([blocks[0][0]], blocks[:k])) for k in range(len(blocks))}
    for cut in range(1, len(data)):
        if cut in boundaries:
            continue
        with pytest.raises(CarError):
            list(read_car(io.BytesIO(data[:cut])))


def test_oversized_section_refused_before_reading() -> None:
    data = car_bytes([], []) + varint.encode(1 << 50)
    with pytest.raises(CarError, match="exceeds"):
        list(read_car(io.BytesIO(data)))
    big = b"\0" * (MAX_BLOCK_SIZE + 1)
    with pytest.raises(CarError):
        write_car(io.BytesIO(), [], [(make_cid("raw", big), big)])


def test_unsupported_codec_and_hash_refused() -> None:
    cbor_cid = b"\x01\x71\x12\x20" + bytes(32)          # dag-cbor
    blake = b"\x01\x55\xa0\xe4\x02\x20" + bytes(32)     # blake2b-256
    for raw_cid in (cbor_cid, blake):
        data = car_bytes([], []) + varint.encode(len(raw_cid) + 1) + raw_cid + b"x"
        with pytest.raises(CarError):
            list(read_car(io.BytesIO(data)))


# --- import ---

@pytest.mark.parametrize("pipe", [False, True])
def test_import_stores_everything(pipe: bool) -> None:
    blocks = raw_blocks(4)
    data = car_bytes([blocks[0][0]], blocks + blocks[:1])  # a duplicate section is legal
    bs = MemoryBlockstore()
    bs.put(*blocks[1])
    stream = Pipe(data) if pipe else io.BytesIO(data)
    result = import_car(stream, bs)  # type: ignore[arg-type]
    assert result.roots == [blocks[0][0]]
    assert (result.blocks, result.new_blocks) == (5, 3)
    assert result.complete
    assert all(bs.get(c) == d for c, d in blocks)


@pytest.mark.parametrize("pipe", [False, True])
def test_import_all_or_nothing(pipe: bool) -> None:
    blocks = raw_blocks(4)
    data = bytearray(car_bytes([blocks[0][0]], blocks))
    data[-1] ^= 0xFF  # the last block is bad: the first three must not be stored either
    bs = MemoryBlockstore()
    bs.put(*raw_blocks(9)[8])
    before = sorted(bs.keys())
    stream = Pipe(bytes(data)) if pipe else io.BytesIO(bytes(data))
    with pytest.raises(CarError):
        import_car(stream, bs)  # type: ignore[arg-type]
    assert sorted(bs.keys()) == before


def test_import_rolls_back_if_store_fails_midway() -> None:
    blocks = raw_blocks(4)
    data = car_bytes([blocks[0][0]], blocks)

    class FailingStore(MemoryBlockstore):
        def put_trusted(self, cid: CID, data: bytes) -> bool:
            if cid == blocks[2][0]:
                raise OSError("disk full")
            return super().put_trusted(cid, data)

    bs = FailingStore()
    with pytest.raises(OSError):
        import_car(io.BytesIO(data), bs)
    assert list(bs.keys()) == []


def test_import_reports_missing_root() -> None:
    blocks = raw_blocks(2)
    absent = make_cid("raw", b"not in the car")
    bs = MemoryBlockstore()
    result = import_car(io.BytesIO(car_bytes([absent, blocks[0][0]], blocks)), bs)
    assert result.missing == [absent] and not result.complete
    with pytest.raises(CarError, match="incomplete"):
        import_car(io.BytesIO(car_bytes([absent], blocks)), MemoryBlockstore(), require_complete=True)


# --- fuzz: any bytes give blocks or CarError, quickly, with bounded reads ---

VALID = car_bytes([raw_blocks(1)[0][0]], raw_blocks(3, size=50))


class BoundedReads(io.BytesIO):
    """Fails the test if the parser ever asks for a read bigger than the caps allow."""

    def read(self, n: int | None = -1) -> bytes:
        assert n is not None and 0 <= n <= MAX_BLOCK_SIZE + 64, n
        return super().read(n)


def _consume(data: bytes) -> None:
    try:
        reader = read_car(BoundedReads(data))
        for _ in reader:
            pass
    except CarError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _consume(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
       st.integers(0, len(VALID)))
def test_fuzz_mutated_car(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(VALID)
    for pos, val in edits:
        data[pos] = val
    _consume(bytes(data[:cut]))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_import_never_partial(data: bytes) -> None:
    bs = MemoryBlockstore()
    try:
        import_car(io.BytesIO(VALID[:40] + data), bs)
    except CarError:
        assert list(bs.keys()) == []


def test_random_round_trip_many_sizes() -> None:
    blocks = [(make_cid("raw", d), d) for d in (os.urandom(n) for n in (0, 1, 127, 128, 70000))]
    assert list(read_car(io.BytesIO(car_bytes([blocks[1][0]], blocks)))) == blocks


# --- dag-pb structure: missing blocks are found through links ---

def _tree() -> tuple[tuple[CID, bytes], list[tuple[CID, bytes]]]:
    from shoal.store.ipld import dagpb

    leaves = raw_blocks(3)
    node = dagpb.encode(dagpb.PBNode(
        links=tuple(dagpb.PBLink(hash=bytes(c), name="", tsize=len(d)) for c, d in leaves),
        data=b"\x08\x02"))
    return (make_cid("dag-pb", node), node), leaves


def test_missing_leaf_reported_then_satisfied_by_store() -> None:
    root, leaves = _tree()
    data = car_bytes([root[0]], [root, leaves[0], leaves[2]])
    bs = MemoryBlockstore()
    result = import_car(io.BytesIO(data), bs)
    assert result.missing == [leaves[1][0]]
    assert str(result.missing[0]).startswith("bafk")  # printed the way Shoal prints CIDs
    bs2 = MemoryBlockstore()
    bs2.put(*leaves[1])
    assert import_car(io.BytesIO(data), bs2, require_complete=True).complete


def test_missing_below_a_stored_node_is_found() -> None:
    root, leaves = _tree()
    bs = MemoryBlockstore()
    bs.put(*root)  # the store has the node but not its leaves
    result = import_car(io.BytesIO(car_bytes([root[0]], leaves[:1])), bs)
    assert result.missing == [c for c, _ in leaves[1:]]


def test_hash_valid_but_malformed_dagpb_refused() -> None:
    junk = b"\xff\xff\xff"
    bs = MemoryBlockstore()
    with pytest.raises(CarError, match="cannot be followed"):
        import_car(io.BytesIO(car_bytes([], raw_blocks(2) + [(make_cid("dag-pb", junk), junk)])), bs)
    assert list(bs.keys()) == []
