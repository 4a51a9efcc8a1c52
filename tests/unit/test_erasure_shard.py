"""Shard header: round trip, strict and bounded decoding, fuzz."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.store.erasure import codec
from shoal.store.erasure.layout import BlockRef
from shoal.store.erasure.shard import (
    FOOTER_LEN, MAX_BLOCKS, MalformedShard, ShardHeader, ShardReader, header_size,
)
from shoal.store.ipld.cid import make_cid


def _shards(k: int = 3, m: int = 2) -> list[bytes]:
    blocks = [(make_cid("raw", b"root" * 50), b"root" * 50)] + [
        (make_cid("raw", bytes([i]) * 300), bytes([i]) * 300) for i in range(5)]
    layout = codec.plan([BlockRef(c, len(d)) for c, d in blocks], k, m, 64)
    sinks = [io.BytesIO() for _ in range(k + m)]
    codec.encode(layout, blocks, sinks)
    return [s.getvalue() for s in sinks]


def _header(shard: bytes) -> bytes:
    (hlen,) = struct.unpack(">Q", shard[-FOOTER_LEN:-8])
    return shard[-FOOTER_LEN - hlen:-FOOTER_LEN]


def test_header_round_trip_and_fields() -> None:
    shards = _shards()
    headers = [ShardHeader.decode(_header(s)) for s in shards]
    for i, h in enumerate(headers):
        assert h.index == i and h.layout.k == 3 and h.layout.m == 2 and h.layout.piece_size == 64
        assert h.encode() == _header(shards[i])
        assert len(h.encode()) == header_size(h.layout)
    assert len({h.layout_id for h in headers}) == 1  # the layout part is shared by every shard
    assert len({h.encode() for h in headers}) == 5


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_fuzz_random_bytes(data: bytes) -> None:
    try:
        h = ShardHeader.decode(data)
    except MalformedShard:
        return
    assert h.encode() == data


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_decoder_fuzz_mutated_headers(data: st.DataObject) -> None:
    """Flip, cut, insert: a mutated header decodes to exactly itself or is refused."""
    raw = bytearray(_header(_shards()[data.draw(st.integers(0, 4))]))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[at:at + data.draw(st.integers(1, 40))]
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif raw:
            raw[at] = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]))
    try:
        h = ShardHeader.decode(bytes(raw))
    except MalformedShard:
        return
    assert h.encode() == bytes(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, (1 << 64) - 1))
def test_reader_fuzz_footer(body: bytes, header_len: int) -> None:
    blob = body + struct.pack(">Q8s", header_len, b"shoal-ec")
    try:
        r = ShardReader(io.BytesIO(blob))
    except MalformedShard:
        return
    assert r.header.encode() == blob[-FOOTER_LEN - len(r.header.encode()):-FOOTER_LEN]


def test_counts_are_checked_before_anything_is_allocated() -> None:
    good = _header(_shards()[0])
    cid_len = good[7]
    params_at = 7 + 1 + cid_len
    k, m, piece, _ = struct.unpack_from(">HHII", good, params_at)
    for count in (MAX_BLOCKS, MAX_BLOCKS + 1, 0xFFFFFFFF):
        forged = good[:params_at] + struct.pack(">HHII", k, m, piece, count) + good[params_at + 12:]
        with pytest.raises(MalformedShard, match="block count"):  # from the count, before any entry
            ShardHeader.decode(forged)
    for bad_k, bad_m, bad_piece in ((0, 1, 64), (129, 0, 64), (100, 200, 64), (3, 2, 65), (3, 2, 1 << 30)):
        forged = good[:params_at] + struct.pack(">HHII", bad_k, bad_m, bad_piece, 6) + good[params_at + 12:]
        with pytest.raises(MalformedShard):
            ShardHeader.decode(forged)


def test_reader_refuses_wrong_body_length_and_foreign_bytes() -> None:
    shard = _shards()[0]
    with pytest.raises(MalformedShard, match="body length"):
        ShardReader(io.BytesIO(b"\0" + shard))
    with pytest.raises(MalformedShard):
        ShardReader(io.BytesIO(b"hello"))
    with pytest.raises(MalformedShard, match="footer"):
        ShardReader(io.BytesIO(shard[:-1] + b"X"))
    r = ShardReader(io.BytesIO(shard))
    assert r.size == len(shard)
