"""HAMT sharding: slot paths, bitfields, trie shape, and round trips through the exporter.

CID parity with the npm importer is in tests/interop/test_hamt_parity.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shoal.store.ipld import dagpb, hamt, unixfs
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import DAG_PB, cid_from_bytes, make_cid
from shoal.store.dag.disk_export import export_to_path
from shoal.store.dag.exporter import list_dir, read_file, walk_dag
from shoal.store.dag.importer import import_path
from shoal.store.ipld.murmur3 import murmur3_x64_64
from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025


def test_slot_path_is_hash_bytes_then_rehash() -> None:
    name = b"weights-00017.bin"
    path = hamt.slot_path(name)
    first = [next(path) for _ in range(9)]
    assert first[:8] == list(murmur3_x64_64(name))
    assert first[8] == murmur3_x64_64(name + b"\x01")[0]


def test_slot_path_small_fanouts_read_bits_msb_first() -> None:
    h = int.from_bytes(murmur3_x64_64(b"abc"), "big")
    nibbles = hamt.slot_path(b"abc", 16)
    assert [next(nibbles) for _ in range(16)] == [(h >> (60 - 4 * i)) & 0xF for i in range(16)]
    with pytest.raises(ValueError):
        next(hamt.slot_path(b"abc", 24))


@pytest.mark.parametrize("slots,expected", [
    ({0}, "01"), ({7}, "80"), ({8}, "0100"), ({0, 9}, "0201"), ({255}, "80" + "00" * 31),
])
def test_bitfield_big_endian_minimal(slots: set[int], expected: str) -> None:
    assert hamt.bitfield(slots).hex() == expected


def _entries(n: int) -> list[hamt.HamtEntry]:
    out = []
    for i in range(n):
        data = f"payload {i}".encode()
        cid = make_cid("raw", data)
        out.append(hamt.HamtEntry(f"n{i}".encode(), bytes(cid), len(data)))
    return out


def _store_into(bs: MemoryBlockstore):  # type: ignore[no-untyped-def]
    def store(block: bytes) -> bytes:
        cid = make_cid(DAG_PB, block)
        bs.put(cid, block)
        return bytes(cid)
    return store


def test_shape_does_not_depend_on_order_and_lists_back() -> None:
    entries = _entries(300)
    roots = set()
    for seed in range(3):
        shuffled = entries[:]
        random.Random(seed).shuffle(shuffled)
        bs = MemoryBlockstore()
        store = _store_into(bs)
        written: list[int] = []

        def counting(block: bytes) -> bytes:
            written.append(len(block))
            return store(block)

        built = hamt.build(shuffled, counting, fanout=16)
        roots.add(built.cid_bytes)
    assert len(roots) == 1
    root = cid_from_bytes(built.cid_bytes)
    listing = list_dir(bs, root, resolve=False)
    assert sorted(e.name for e in listing) == sorted(e.name.decode() for e in entries)
    assert built.nodes > 1  # 300 names in 16 slots must nest
    # Tsize of the root = every shard block + every entry's tsize.
    assert built.nodes == len(written)
    assert built.tsize == sum(written) + sum(e.tsize for e in entries)


def test_node_layout() -> None:
    bs = MemoryBlockstore()
    built = hamt.build(_entries(40), _store_into(bs), fanout=16)
    node = dagpb.decode(bs.get(cid_from_bytes(built.cid_bytes)))
    fs = unixfs.decode(node.data or b"")
    assert (fs.type, fs.fanout, fs.hash_type) == (unixfs.DataType.HAMT_SHARD, 16, 0x22)
    slots = [int((link.name or "")[:1], 16) for link in node.links]
    assert slots == sorted(slots) and len(set(slots)) == len(slots)
    assert hamt.bitfield(slots) == fs.data
    for link in node.links:
        name = link.name or ""
        assert name[:1] == name[:1].upper()
        if len(name) == 1:  # a sub-shard
            sub = unixfs.decode(dagpb.decode(bs.get(cid_from_bytes(link.hash))).data or b"")
            assert sub.type == unixfs.DataType.HAMT_SHARD


@pytest.mark.parametrize("profile", [UNIXFS_V1_2025, KUBO_LEGACY])
def test_importer_shards_and_exporter_reads_back(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "data"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "sub" / "deeper" / "x.bin").write_bytes(b"x" * 5000)
    (src / "empty-dir").mkdir()
    for i in range(200):
        (src / f"sample-{i:04d}.txt").write_bytes(f"row {i}\n".encode() * (i % 7))
    bs = MemoryBlockstore()
    small = profile.with_overrides(hamt_threshold_bytes=1000, chunk_size=1024, max_links=4)
    result = import_path(src, bs, small)
    root = unixfs.decode(dagpb.decode(bs.get(result.cid)).data or b"")
    assert root.type == unixfs.DataType.HAMT_SHARD
    assert result.size == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    out = tmp_path / "out"
    export_to_path(bs, result.cid, out)
    for p in src.rglob("*"):
        q = out / p.relative_to(src)
        assert q.is_dir() if p.is_dir() else q.read_bytes() == p.read_bytes(), p
    names = {e.name: e for e in list_dir(bs, result.cid)}
    assert b"".join(read_file(bs, names["sample-0013.txt"].cid)) == b"row 13\n" * 6
    # Every stored block is reachable from the root: no orphan shard nodes.
    assert {str(c) for c, _ in walk_dag(bs, result.cid)} >= {str(c) for c, _ in walk_dag(bs, names["sub"].cid)}
    assert len(list(walk_dag(bs, result.cid))) == len(list(bs.keys()))


def test_slots_straddling_two_hashes_take_bits_from_both() -> None:
    """Fanout 8 (3 bits): slot 21 is the last bit of hash(name) and two of hash(name+[1])."""
    name = b"straddle"
    h0 = int.from_bytes(murmur3_x64_64(name), "big")
    h1 = int.from_bytes(murmur3_x64_64(name + b"\x01"), "big")
    stream = (h0 << 64) | h1  # 128 bits, MSB first
    path = hamt.slot_path(name, 8)
    got = [next(path) for _ in range(42)]
    assert got == [(stream >> (125 - 3 * i)) & 7 for i in range(42)]
