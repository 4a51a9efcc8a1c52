"""UnixFS Data codec: byte-identical to ipfs-unixfs marshal(), strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.ipld import unixfs
from shoal.store.errors import MalformedBlock
from shoal.store.ipld.unixfs import DataType, UnixFSData, UnixTime

# Vectors printed by ipfs-unixfs 13.1.1 `new UnixFS({...}).marshal()`.
VECTORS = [
    (UnixFSData(DataType.FILE), "08021800"),
    (UnixFSData(DataType.DIRECTORY), "0801"),
    (UnixFSData(DataType.FILE, data=b"\x01\x02\x03"), "080212030102031803"),
    (UnixFSData(DataType.FILE, blocksizes=(262144, 5)), "080218858010208080102005"),
    (UnixFSData(DataType.RAW, data=b"\x09"), "08001201091801"),
    (UnixFSData(DataType.FILE, mode=0o600, mtime=UnixTime(1700000000, 5)),
     "08021800388003420b0880e2cfaa061505000000"),
    (UnixFSData(DataType.DIRECTORY, mode=0o755, mtime=UnixTime(-1)), "0801420b08ffffffffffffffffff01"),
    (UnixFSData(DataType.HAMT_SHARD, data=b"\x01", hash_type=34, fanout=256), "08051201012822308002"),
    (UnixFSData(DataType.SYMLINK, data=b"../x"), "080412042e2e2f78"),
]


@pytest.mark.parametrize("msg,hexed", VECTORS)
def test_matches_js_marshal(msg: UnixFSData, hexed: str) -> None:
    assert unixfs.encode(msg).hex() == hexed


@pytest.mark.parametrize("msg,hexed", VECTORS)
def test_decodes_js_vectors(msg: UnixFSData, hexed: str) -> None:
    got = unixfs.decode(bytes.fromhex(hexed))
    assert got.type == msg.type
    assert (got.data or b"") == (msg.data or b"")
    assert got.blocksizes == msg.blocksizes
    assert got.mtime == msg.mtime
    assert unixfs.encode(got) == bytes.fromhex(hexed)


def test_content_size() -> None:
    assert UnixFSData(DataType.FILE, data=b"ab", blocksizes=(3, 4)).content_size() == 9


BAD = {
    "missing type": "1800",
    "unknown type": "0806",
    "unknown field": "08024800",
    "wrong wire type": "0a00",
    "repeated type": "08020802",
    "repeated filesize": "080218001800",
    "truncated data": "08021205aa",
    "truncated varint": "0802188080",
    "mode too big": "0802388080808010",
    "bad mtime field": "0802420218 00".replace(" ", ""),
    "nanos out of range": "0802420515ffffffff",
    "truncated nanos": "080242031501",
    "varint over 64 bits": "0802420b08ffffffffffffffffff7f",
    "packed blocksizes": "08022200",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_rejects(name: str) -> None:
    with pytest.raises(MalformedBlock):
        unixfs.decode(bytes.fromhex(BAD[name]))


u64 = st.integers(0, 2**63 - 1)
messages = st.builds(
    lambda t, data, bs, ht, fo, mode, mt: UnixFSData(
        t, data or None, (len(data or b"") + sum(bs)) if t in (DataType.FILE, DataType.RAW) else None,
        tuple(bs), ht, 1 << (3 + (fo or 0) % 8) if t == DataType.HAMT_SHARD else fo, mode, mt),  # 8..1024
    st.sampled_from(list(DataType)),
    st.none() | st.binary(max_size=40),
    st.lists(st.integers(0, 2**40), max_size=5),
    st.none() | u64,
    st.none() | u64,
    st.none() | st.integers(0, 0xFFF).filter(lambda m: m not in (0o644, 0o755)),
    st.none() | st.builds(UnixTime, st.integers(-(2**63), 2**63 - 1),
                          st.none() | st.integers(0, 999_999_999)),
)


@given(messages)
def test_round_trip(msg: UnixFSData) -> None:
    enc = unixfs.encode(msg)
    assert unixfs.decode(enc) == msg
    assert unixfs.encode(unixfs.decode(enc)) == enc


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        unixfs.decode(data)
    except MalformedBlock:
        pass


@settings(max_examples=300)
@given(messages, st.data())
def test_fuzz_mutations(msg: UnixFSData, data: st.DataObject) -> None:
    enc = bytearray(unixfs.encode(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(enc) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            enc[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del enc[i:]
        else:
            enc[i:i] = data.draw(st.binary(min_size=1, max_size=3))
        if not enc:
            break
    try:
        unixfs.decode(bytes(enc))
    except MalformedBlock:
        pass
