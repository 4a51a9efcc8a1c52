"""Importer: the streaming builder against a batch model of the JS layout."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO, Iterator

import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.ipld import dagpb, unixfs
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.chunking.chunker import FixedChunker
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.errors import InvalidInput
from shoal.store.dag.exporter import walk_dag
from shoal.store.persist.flatfs import cid_for_key
from shoal.store.dag.dag_writer import file_leaf_block
from shoal.store.dag.importer import ImportResult, import_bytes, import_file, import_path
from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025, Profile

EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def small(profile: Profile, chunk: int, links: int) -> Profile:
    return profile.with_overrides(chunk_size=chunk, max_links=links)


def model_root(data: bytes, profile: Profile) -> tuple[str, int]:
    """Batch re-statement of ipfs-unixfs-importer's balanced layout (not streaming)."""
    size = profile.chunk_size
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]

    def leaf(c: bytes) -> tuple[CID, int, int]:
        if profile.raw_leaves:
            return make_cid("raw", c), len(c), len(c)
        block = dagpb.encode(dagpb.PBNode((), unixfs.encode(unixfs.UnixFSData(unixfs.DataType.FILE, data=c))))
        return make_cid("dag-pb", block, profile.cid_version), len(block), len(c)

    def parent(kids: list[tuple[CID, int, int]]) -> tuple[CID, int, int]:
        kids = [k for k in kids if k[2] > 0]
        fs = unixfs.UnixFSData(unixfs.DataType.FILE, blocksizes=tuple(k[2] for k in kids))
        node = dagpb.PBNode(tuple(dagpb.PBLink(bytes(k[0]), "", k[1]) for k in kids), unixfs.encode(fs))
        block = dagpb.encode(node)
        return (make_cid("dag-pb", block, profile.cid_version),
                len(block) + sum(k[1] for k in kids), sum(k[2] for k in kids))

    level = [leaf(c) for c in chunks]
    if len(level) == 1:
        return str(level[0][0]), level[0][1]
    while True:
        level = [parent(level[i:i + profile.max_links]) for i in range(0, len(level), profile.max_links)]
        if len(level) == 1:
            return str(level[0][0]), level[0][1]


def data_of(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:n])


def test_empty_file() -> None:
    bs = MemoryBlockstore()
    r = import_bytes(b"", bs)
    assert str(r.cid) == EMPTY_RAW and (r.size, r.tsize, r.blocks) == (0, 0, 1)
    assert str(import_bytes(b"", bs, KUBO_LEGACY).cid) == EMPTY_V0


def test_file_leaf_block_matches_codecs() -> None:
    for n in (0, 1, 127, 128, 300, 70000):
        c = data_of(n)
        expected = dagpb.encode(dagpb.PBNode((), unixfs.encode(unixfs.UnixFSData(unixfs.DataType.FILE, data=c))))
        assert file_leaf_block(c) == expected


SIZES = [0, 1, 15, 16, 17, 32, 33, 16 * 4, 16 * 4 + 1, 16 * 16, 16 * 16 + 1, 16 * 17, 16 * 64, 16 * 64 + 5]


@pytest.mark.parametrize("base", [UNIXFS_V1_2025, KUBO_LEGACY], ids=lambda p: p.name)
@pytest.mark.parametrize("n", SIZES)
def test_size_classes_match_model(base: Profile, n: int) -> None:
    profile = small(base, 16, 4)
    bs = MemoryBlockstore()
    data = data_of(n)
    r = import_bytes(data, bs, profile)
    cid, tsize = model_root(data, profile)
    assert str(r.cid) == cid
    assert r.size == n and r.tsize == tsize
    # Random data: no duplicate blocks, so the store holds exactly the DAG.
    assert r.blocks == len(list(bs.keys()))
    assert r.tsize == sum(len(block) for _, block in walk_dag(bs, r.cid))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 700), st.integers(1, 48), st.integers(2, 6), st.booleans(), st.integers(0, 1))
def test_layout_property(n: int, chunk: int, links: int, raw: bool, version: int) -> None:
    profile = UNIXFS_V1_2025.with_overrides(chunk_size=chunk, max_links=links, raw_leaves=raw,
                                            cid_version=version)
    data = data_of(n, seed=chunk)
    r = import_bytes(data, MemoryBlockstore(), profile)
    assert (str(r.cid), r.tsize) == model_root(data, profile)


def test_real_profiles_multi_chunk() -> None:
    for profile in (UNIXFS_V1_2025, KUBO_LEGACY):
        data = data_of(profile.chunk_size * 2 + 7)
        r = import_bytes(data, MemoryBlockstore(), profile)
        assert (str(r.cid), r.tsize) == model_root(data, profile)


def test_exact_chunk_is_its_leaf() -> None:
    data = data_of(1024 * 1024)
    r = import_bytes(data, MemoryBlockstore())
    assert r.cid == make_cid("raw", data) and r.blocks == 1


def test_duplicate_chunks_counted_like_tsize() -> None:
    profile = small(UNIXFS_V1_2025, 8, 4)
    bs = MemoryBlockstore()
    r = import_bytes(b"\x00" * 64, bs, profile)
    assert r.blocks == 8 + 2 + 1
    assert len(list(bs.keys())) == 1 + 1 + 1


class CountingStream(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        b[:n] = b"\x01" * n
        self.left -= n
        self.reads += 1
        return n


class TrackingChunker:
    name = "tracking"

    def __init__(self, size: int, bs: "TrackingStore") -> None:
        self.inner = FixedChunker(size)
        self.bs = bs
        self.max_ahead = 0
        self.yielded = 0

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        for c in self.inner.chunks(stream):
            self.yielded += 1
            self.max_ahead = max(self.max_ahead, self.yielded - self.bs.puts)
            yield c


class TrackingStore(MemoryBlockstore):
    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put_trusted(self, cid: CID, data: bytes) -> bool:
        self.puts += 1
        return super().put_trusted(cid, data)


def test_streaming_bounds_chunks_in_flight() -> None:
    bs = TrackingStore()
    chunker = TrackingChunker(64 * 1024, bs)
    stream = io.BufferedReader(CountingStream(64 * 1024 * 200))
    seen: list[int] = []
    r = import_file(stream, bs, UNIXFS_V1_2025, chunker, progress=seen.append)
    assert r.size == 64 * 1024 * 200 and sum(seen) == r.size
    assert chunker.max_ahead <= 2 * (os.cpu_count() or 1) + 2


def test_chunker_overrides_profile_chunk_size() -> None:
    data = data_of(100)
    a = import_bytes(data, MemoryBlockstore(), small(UNIXFS_V1_2025, 10, 4))
    b = import_bytes(data, MemoryBlockstore(), UNIXFS_V1_2025.with_overrides(max_links=4), FixedChunker(10))
    assert a.cid == b.cid


def make_tree(root: Path) -> None:
    (root / "b").mkdir(parents=True)
    (root / "b" / "empty-dir").mkdir()
    (root / "b" / "f").write_bytes(data_of(100))
    (root / "a").write_bytes(b"")
    (root / "C").write_bytes(b"upper case sorts first")


def test_import_directory(tmp_path: Path) -> None:
    make_tree(tmp_path / "t")
    bs = MemoryBlockstore()
    r = import_path(tmp_path / "t", bs, small(UNIXFS_V1_2025, 16, 4))
    assert r.size == 100 + 22
    root = dagpb.decode(bs.get(r.cid))
    assert [link.name for link in root.links] == ["C", "a", "b"]
    assert unixfs.decode(root.data or b"").type == unixfs.DataType.DIRECTORY
    assert r.tsize == len(bs.get(r.cid)) + sum(link.tsize or 0 for link in root.links)


def test_import_path_file(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"hello")
    r = import_path(tmp_path / "x", MemoryBlockstore())
    assert r.cid == make_cid("raw", b"hello")


def test_symlinks_followed_or_refused(tmp_path: Path) -> None:
    """Followed by default (a link to a file is that file); refused with follow_symlinks=False."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "target").write_bytes(b"x")
    (tmp_path / "d" / "link").symlink_to("target")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "target").write_bytes(b"x")
    (tmp_path / "e" / "link").write_bytes(b"x")
    assert import_path(tmp_path / "d", MemoryBlockstore()).cid == import_path(tmp_path / "e", MemoryBlockstore()).cid
    with pytest.raises(InvalidInput, match="symlink"):
        import_path(tmp_path / "d", MemoryBlockstore(), follow_symlinks=False)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        import_path(tmp_path / "nope", MemoryBlockstore())


def test_non_utf8_name_round_trips(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    raw_name = b"caf\xe9"
    with open(os.path.join(os.fsencode(d), raw_name), "wb") as f:
        f.write(b"x")
    bs = MemoryBlockstore()
    r = import_path(d, bs)
    assert raw_name in bs.get(r.cid)


def test_directory_above_threshold_is_sharded(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    for i in range(20):
        (d / f"file-{i:03d}").write_bytes(b"")
    bs = MemoryBlockstore()
    sharded = import_path(d, bs, UNIXFS_V1_2025.with_overrides(hamt_threshold_bytes=500))
    root = unixfs.decode(dagpb.decode(bs.get(sharded.cid)).data or b"")
    assert root.type == unixfs.DataType.HAMT_SHARD and root.fanout == 256
    flat = import_path(d, MemoryBlockstore())
    assert isinstance(flat, ImportResult) and flat.cid != sharded.cid


# -- the storage commitment in the same pass -------------------------------------------


class _OddChunker:
    """Chunks that start and end off the 2 KiB segment grid (like CDC cuts)."""

    name = "odd"

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        i = 0
        while piece := stream.read(self.sizes[i % len(self.sizes)]):
            i += 1
            yield piece


@pytest.mark.parametrize("n", [0, 1, 2047, 2048, 2049, 65536 * 3 + 5, (1 << 20) + 777])
@pytest.mark.parametrize("chunker", [FixedChunker(65536), FixedChunker(1 << 20), FixedChunker(70001),
                                     _OddChunker([65536 + 3, 200_000, 5, 131072 - 3])],
                         ids=["64k", "1m", "70001", "odd"])
def test_builder_gets_the_file_bytes_in_order(n: int, chunker: object) -> None:
    from shoal.store.proofs.commitment import MerkleBuilder, commit

    data = data_of(n, 7)
    builder = MerkleBuilder()
    plain = import_file(io.BytesIO(data), MemoryBlockstore(), chunker=chunker)  # type: ignore[arg-type]
    result = import_file(io.BytesIO(data), MemoryBlockstore(), chunker=chunker,  # type: ignore[arg-type]
                         builder=builder)
    assert result.cid == plain.cid  # the commitment does not change the DAG
    assert builder.finish() == commit(data)


def test_builder_refused_for_a_directory(tmp_path: Path) -> None:
    from shoal.store.proofs.commitment import MerkleBuilder

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"a")
    with pytest.raises(InvalidInput):
        import_path(tmp_path / "d", MemoryBlockstore(), builder=MerkleBuilder())


# -- the block set the importer reports ------------------------------------------------


def _walked_keys(bs: MemoryBlockstore, root: CID) -> frozenset[str]:
    from shoal.store.ipld.cid import block_key

    return frozenset(block_key(cid) for cid, _ in walk_dag(bs, root))


@settings(max_examples=60, deadline=None)
@given(tree=st.recursive(st.binary(max_size=90),
                         lambda kids: st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), kids, max_size=4),
                         max_leaves=10),
       chunk=st.integers(1, 40), links=st.integers(2, 4), legacy=st.booleans(), shard=st.booleans())
def test_reported_keys_are_exactly_the_dag(tmp_path_factory: pytest.TempPathFactory, tree: object, chunk: int,
                                           links: int, legacy: bool, shard: bool) -> None:
    """Repo.add records `keys` as the pin's block set without walking the DAG:
    it must be the DAG's blocks, no more (a stray block would stay pinned) and
    no fewer (gc would delete a live one) — files, nested and empty dirs, empty
    files, repeated chunks and HAMT shards included."""
    base = tmp_path_factory.mktemp("tree")

    def build(path: Path, node: object) -> None:
        if isinstance(node, bytes):
            path.write_bytes(node)
        else:
            assert isinstance(node, dict)
            path.mkdir()
            for name, child in node.items():
                build(path / name, child)

    build(base / "root", tree)
    profile = (KUBO_LEGACY if legacy else UNIXFS_V1_2025).with_overrides(
        chunk_size=chunk, max_links=links, **({"hamt_threshold_bytes": 40} if shard else {}))
    bs = MemoryBlockstore()
    result = import_path(base / "root", bs, profile)
    assert result.keys == _walked_keys(bs, result.cid)


def test_reported_keys_with_repeated_chunks_and_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "same").write_bytes(b"z" * 400)  # 40 identical 10-byte leaves
    (tmp_path / "d" / "empty").write_bytes(b"")
    bs = MemoryBlockstore()
    result = import_path(tmp_path / "d", bs, UNIXFS_V1_2025.with_overrides(chunk_size=10, max_links=3))
    assert result.keys == _walked_keys(bs, result.cid)
    assert len(result.keys) < result.blocks  # the repeats are one block


# -- fixed-size chunks read into reused aligned buffers ---------------------------------


class _PlainFixed(FixedChunker):
    """The same cuts as FixedChunker, but not its exact type: the importer
    then takes the chunker's own `bytes` chunks instead of its read slots."""


class _SlowCheckingStore(MemoryBlockstore):
    """Holds each block a little while and checks its bytes did not change
    meanwhile: a read slot reused too early would show up here."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: set[type] = set()
        self.overwritten = 0

    def put_trusted(self, cid: CID, data: bytes | memoryview) -> bool:
        self.kinds.add(type(data))
        before = hashlib.sha256(data).digest()
        # vary how long each block is held, so later chunks overtake earlier ones
        for _ in range(int.from_bytes(before[:1], "big") * 20):
            pass
        if hashlib.sha256(data).digest() != before:
            self.overwritten += 1
        return super().put_trusted(cid, data)


@settings(max_examples=25, deadline=None)
@given(chunk=st.sampled_from([4096, 8192, 65536]),
       n_chunks=st.integers(0, 40),
       delta=st.integers(-1, 1),
       links=st.sampled_from([2, 3, 174]))
def test_pooled_reads_build_the_same_dag(tmp_path_factory: pytest.TempPathFactory, chunk: int, n_chunks: int,
                                         delta: int, links: int) -> None:
    size = max(0, n_chunks * chunk + delta)
    data = data_of(size, seed=size)
    path = tmp_path_factory.mktemp("pooled") / "f"
    path.write_bytes(data)
    profile = small(UNIXFS_V1_2025, chunk, links)
    pooled_store, plain_store = _SlowCheckingStore(), MemoryBlockstore()
    pooled = import_path(path, pooled_store, profile)
    plain = import_path(path, plain_store, profile, _PlainFixed(chunk))
    assert pooled.cid == plain.cid and pooled.keys == plain.keys
    assert str(pooled.cid) == model_root(data, profile)[0]
    assert pooled_store.overwritten == 0
    assert sorted(pooled_store.keys()) == sorted(plain_store.keys())
    for key in pooled_store.keys():  # get re-hashes: every stored block matches its CID
        pooled_store.get(cid_for_key(key))


def test_pooled_reads_are_used_for_the_plain_fixed_chunker_only(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(data_of(10 * 65536))
    profile = small(UNIXFS_V1_2025, 65536, 174)
    pooled, plain = _SlowCheckingStore(), _SlowCheckingStore()
    import_path(path, pooled, profile)
    import_path(path, plain, profile, _PlainFixed(65536))
    assert memoryview in pooled.kinds  # the leaves came straight from the read slots
    assert plain.kinds == {bytes}


def test_a_commitment_builder_gets_chunks_it_may_keep(tmp_path: Path) -> None:
    """A builder may hold chunks (the helper process queues them): never read slots."""
    path = tmp_path / "f"
    data = data_of(12 * 65536)
    path.write_bytes(data)
    kept: list[object] = []

    class Keeper:
        def update(self, chunk: object) -> None:
            kept.append(chunk)

    import_path(path, MemoryBlockstore(), small(UNIXFS_V1_2025, 65536, 174), builder=Keeper())
    assert all(isinstance(c, bytes) for c in kept)
    assert b"".join(kept) == data  # type: ignore[arg-type]


def test_full_gc_is_deferred_during_a_directory_import_and_restored_after(tmp_path: Path) -> None:
    """Full collections walk every live object with the GIL held; during a big
    directory import they only stall other threads (a node's event loop)."""
    import gc

    from shoal.store.dag.tree_import import deferred_full_gc

    before = gc.get_threshold()
    with deferred_full_gc():
        assert gc.get_threshold()[2] > 1_000_000
        with deferred_full_gc():
            pass
        assert gc.get_threshold()[2] > 1_000_000  # the outer import still runs
    assert gc.get_threshold() == before
    tree = tmp_path / "t"
    tree.mkdir()
    for i in range(5):
        (tree / f"f{i}").write_bytes(b"%d" % i)
    import_path(tree, MemoryBlockstore())
    assert gc.get_threshold() == before
