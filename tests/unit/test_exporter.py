"""Exporter: whole and ranged reads, listings, export, walks, hostile DAGs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.ipld import dagpb, unixfs
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.errors import BlockNotFound, InvalidInput, MalformedBlock
from shoal.store.dag.disk_export import export_to_path
from shoal.store.dag.exporter import DirEntry, iter_links, list_dir, read_file, stat, walk_dag
from shoal.store.dag.importer import import_bytes, import_path
from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025, Profile
from shoal.store.ipld.unixfs import DataType, UnixFSData

CHUNK = 16


def data_of(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d/%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:n])


def small(profile: Profile) -> Profile:
    return profile.with_overrides(chunk_size=CHUNK, max_links=3)


class CountingStore(MemoryBlockstore):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[CID] = []

    def get(self, cid: CID) -> bytes:
        self.gets.append(cid)
        return super().get(cid)


def store_pb(bs: MemoryBlockstore, links: tuple[dagpb.PBLink, ...], fs: UnixFSData) -> CID:
    block = dagpb.encode(dagpb.PBNode(links, unixfs.encode(fs)))
    cid = make_cid("dag-pb", block)
    bs.put(cid, block)
    return cid


@pytest.mark.parametrize("profile", [UNIXFS_V1_2025, KUBO_LEGACY], ids=lambda p: p.name)
@pytest.mark.parametrize("n", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK * 3, CHUNK * 9, CHUNK * 9 + 1, 500])
def test_read_whole_file(profile: Profile, n: int) -> None:
    bs = MemoryBlockstore()
    data = data_of(n)
    r = import_bytes(data, bs, small(profile))
    assert b"".join(read_file(bs, r.cid)) == data
    st_ = stat(bs, r.cid)
    assert st_.size == n
    assert st_.kind == ("raw" if profile.raw_leaves and n <= CHUNK else "file")


N = CHUNK * 30 + 7
DATA = data_of(N, seed=7)
STORES: dict[str, tuple[CountingStore, CID]] = {}
for _p in (UNIXFS_V1_2025, KUBO_LEGACY):
    _bs = CountingStore()
    STORES[_p.name] = (_bs, import_bytes(DATA, _bs, small(_p)).cid)
LEAF_INDEX = {make_cid("raw", DATA[i:i + CHUNK]): i // CHUNK for i in range(0, N, CHUNK)}


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(sorted(STORES)), st.integers(0, N + 20), st.none() | st.integers(0, N + 20))
def test_range_reads(profile: str, offset: int, length: int | None) -> None:
    bs, root = STORES[profile]
    bs.gets.clear()
    got = b"".join(read_file(bs, root, offset, length))
    end = N if length is None else offset + length
    assert got == DATA[offset:end]
    if profile == UNIXFS_V1_2025.name:
        fetched = sorted(LEAF_INDEX[c] for c in bs.gets if c.codec.name == "raw")
        first, last = offset // CHUNK, (min(end, N) - 1) // CHUNK
        expected = list(range(first, last + 1)) if min(end, N) > offset else []
        assert fetched == expected
    # Parents fetched: at most one root-to-leaf path per side plus the covering ones.
    assert len(bs.gets) == len(set(map(str, bs.gets)))


def test_negative_range_refused() -> None:
    bs, root = STORES[UNIXFS_V1_2025.name]
    with pytest.raises(InvalidInput):
        list(read_file(bs, root, -1))


def test_directory_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "empty").mkdir(parents=True)
    (src / "sub" / "big").write_bytes(data_of(200))
    (src / "e").write_bytes(b"")
    (src / "one").write_bytes(b"1")
    bs = MemoryBlockstore()
    r = import_path(src, bs, small(UNIXFS_V1_2025))
    entries = list_dir(bs, r.cid)
    assert [(e.name, e.kind, e.size) for e in entries] == [("e", "file", 0), ("one", "file", 1),
                                                          ("sub", "dir", None)]
    assert [e.kind for e in list_dir(bs, r.cid, resolve=False)] == ["file", "file", "unknown"]
    assert stat(bs, r.cid).kind == "dir"
    out = tmp_path / "out"
    export_to_path(bs, r.cid, out)
    assert (out / "sub" / "big").read_bytes() == data_of(200)
    assert (out / "sub" / "empty").is_dir() and not any((out / "sub" / "empty").iterdir())
    assert (out / "e").read_bytes() == b"" and (out / "one").read_bytes() == b"1"
    assert not [p for p in out.rglob(".shoal-*")]
    with pytest.raises(InvalidInput):
        list_dir(bs, entries[0].cid)
    with pytest.raises(InvalidInput):
        list(read_file(bs, r.cid))


def test_export_file_replaces(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    r = import_bytes(data_of(100), bs, small(KUBO_LEGACY))
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    export_to_path(bs, r.cid, dest)
    assert dest.read_bytes() == data_of(100)


def test_walk_dag_preorder_once() -> None:
    bs = MemoryBlockstore()
    r = import_bytes(b"\x00" * (CHUNK * 7), bs, small(UNIXFS_V1_2025))
    walked = list(walk_dag(bs, r.cid))
    assert walked[0][0] == r.cid
    assert len(walked) == len(list(bs.keys())) == 4  # root, 2 distinct parents... and the leaf
    assert len({str(c) for c, _ in walked}) == len(walked)
    for cid, block in walked:
        assert make_cid(cid.codec.name, block, cid.version) == cid


def test_walk_dag_order() -> None:
    bs = MemoryBlockstore()
    r = import_bytes(data_of(CHUNK * 4), bs, small(UNIXFS_V1_2025))
    walked = [c for c, _ in walk_dag(bs, r.cid)]
    root_links = iter_links(r.cid, bs.get(r.cid))
    first_parent = root_links[0]
    assert walked[1] == first_parent
    assert walked[2:5] == iter_links(first_parent, bs.get(first_parent))
    assert walked[5] == root_links[1]


def test_iter_links_raw() -> None:
    assert iter_links(make_cid("raw", b"x"), b"x") == []


def test_getter_callable_and_missing_block() -> None:
    bs = MemoryBlockstore()
    r = import_bytes(data_of(100), bs, small(UNIXFS_V1_2025))
    assert b"".join(read_file(bs.get, r.cid)) == data_of(100)
    leaf = iter_links(r.cid, bs.get(r.cid))[0]
    bs.delete(leaf)
    with pytest.raises(BlockNotFound):
        b"".join(read_file(bs, r.cid))
    with pytest.raises(BlockNotFound):
        list(walk_dag(bs, r.cid))
    with pytest.raises(BlockNotFound):
        stat(bs, make_cid("raw", b"absent"))


def _hostile() -> dict[str, tuple[MemoryBlockstore, CID]]:
    cases: dict[str, tuple[MemoryBlockstore, CID]] = {}
    leaf = make_cid("raw", b"abcd")

    def new() -> MemoryBlockstore:
        bs = MemoryBlockstore()
        bs.put(leaf, b"abcd")
        return bs

    link = dagpb.PBLink(bytes(leaf), "", 4)
    bs = new()
    cases["blocksizes lie"] = bs, store_pb(bs, (link,), UnixFSData(DataType.FILE, blocksizes=(5,)))
    bs = new()
    cases["filesize lie"] = bs, store_pb(bs, (link,), UnixFSData(DataType.FILE, filesize=9, blocksizes=(4,)))
    bs = new()
    cases["blocksizes count"] = bs, store_pb(bs, (link, link), UnixFSData(DataType.FILE, blocksizes=(4,)))
    bs = new()
    cases["no data"] = bs, make_cid("dag-pb", b"")
    bs.put(cases["no data"][1], b"")
    bs = new()
    cases["garbage"] = bs, make_cid("dag-pb", b"\xff\xff")
    bs.put(cases["garbage"][1], b"\xff\xff")
    bs = new()
    inner = store_pb(bs, (link,), UnixFSData(DataType.FILE, blocksizes=(4,)))
    cases["child lies"] = bs, store_pb(bs, (dagpb.PBLink(bytes(inner), "", 9),),
                                       UnixFSData(DataType.FILE, blocksizes=(3,)))
    bs = new()
    cases["unsupported link cid"] = bs, store_pb(
        bs, (dagpb.PBLink(b"\x01\x55\x13\x02ab", "", 4),), UnixFSData(DataType.FILE, blocksizes=(4,)))
    return cases


HOSTILE = _hostile()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files(name: str) -> None:
    bs, cid = HOSTILE[name]
    with pytest.raises(MalformedBlock):
        b"".join(read_file(bs, cid))


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "nul\x00"])
def test_unsafe_names(bad: str, tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    leaf = make_cid("raw", b"x")
    bs.put(leaf, b"x")
    d = store_pb(bs, (dagpb.PBLink(bytes(leaf), bad, 1),), UnixFSData(DataType.DIRECTORY))
    with pytest.raises(MalformedBlock):
        list_dir(bs, d)
    with pytest.raises(MalformedBlock):
        export_to_path(bs, d, tmp_path / "out")


def test_hamt_directory_listing() -> None:
    bs = MemoryBlockstore()
    a, b = make_cid("raw", b"A"), make_cid("raw", b"BB")
    bs.put(a, b"A")
    bs.put(b, b"BB")
    shard = UnixFSData(DataType.HAMT_SHARD, data=b"\x00", hash_type=0x22, fanout=256)
    sub = store_pb(bs, (dagpb.PBLink(bytes(b), "FFbee", 2),), shard)
    root = store_pb(bs, (dagpb.PBLink(bytes(a), "00ant", 1), dagpb.PBLink(bytes(sub), "3C", 50)), shard)
    assert list_dir(bs, root) == [DirEntry("ant", a, 1, "file"), DirEntry("bee", b, 2, "file")]
    assert stat(bs, root).kind == "dir"
