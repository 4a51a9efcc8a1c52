"""Erasure codec: any K of K + M shards give back the exact blocks; lies are caught; repair is exact."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025
from shoal.store.dag.importer import import_bytes
from shoal.store.erasure import codec
from shoal.store.erasure.codec import LayoutMismatch, NotEnoughShards
from shoal.store.erasure.layout import BlockRef, ErasureError, Layout, dag_block_refs, dag_blocks
from shoal.store.erasure.shard import FOOTER_LEN, MalformedShard, ShardReader
from shoal.store.errors import StoreError
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.persist.blockstore import MemoryBlockstore


def _object(data: bytes, legacy: bool, chunk: int, links: int) -> tuple[CID, MemoryBlockstore]:
    store = MemoryBlockstore()
    profile = (KUBO_LEGACY if legacy else UNIXFS_V1_2025).with_overrides(chunk_size=chunk, max_links=links)
    return import_bytes(data, store, profile).cid, store


def _encode(root: CID, store: MemoryBlockstore, k: int, m: int, piece: int) -> tuple[Layout, list[bytes]]:
    sinks = [io.BytesIO() for _ in range(k + m)]
    layout, infos = codec.encode_object(root, store.get, store.size, sinks, k, m, piece)
    shards = [s.getvalue() for s in sinks]
    for info, raw in zip(infos, shards):
        assert info.length == len(raw)
        assert info.cid == make_cid("raw", raw)  # each shard is content-addressed as a raw block
    return layout, shards


def _readers(shards: list[bytes], which: list[int]) -> list[ShardReader]:
    return [ShardReader(io.BytesIO(shards[i])) for i in which]


def _expected(root: CID, store: MemoryBlockstore) -> list[tuple[bytes, bytes]]:
    return [(bytes(c), d) for c, d in dag_blocks(root, store.get)]


objects = st.tuples(
    st.one_of(st.binary(max_size=6000),
              st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=40), st.integers(1, 400))),
    st.booleans(),                      # legacy profile: CIDv0, dag-pb leaves
    st.sampled_from([64, 300, 1024]),   # chunk size
    st.integers(2, 5),                  # links per node: several levels
)
schemes = st.tuples(st.integers(1, 10), st.integers(0, 6))
pieces = st.sampled_from([64, 128, 1024, 256 * 1024])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects, schemes, pieces, st.randoms(use_true_random=False))
def test_any_k_shards_reconstruct_exact_blocks(obj: tuple[bytes, bool, int, int], scheme: tuple[int, int],
                                               piece: int, rnd: random.Random) -> None:
    root, store = _object(*obj)
    k, m = scheme
    layout, shards = _encode(root, store, k, m, piece)
    assert [bytes(b.cid) for b in layout.blocks] == [c for c, _ in _expected(root, store)]
    # few stripes, little padding: under 64 bytes per piece
    assert layout.stripes == -(-layout.data_length // (k * piece))  # 0 for an empty stream
    assert 0 <= layout.stripes * layout.stripe_bytes - layout.data_length < max(1, 64 * k * layout.stripes)
    which = rnd.sample(range(k + m), k)
    got = [(bytes(c), d) for c, d in codec.reconstruct(_readers(shards, which), root)]
    assert got == _expected(root, store)
    # systematic: data shard j is plain stream bytes
    stream = b"".join(d for _, d in got)
    for j in range(k):
        for s in range(layout.stripes):
            start = s * layout.stripe_bytes + j * layout.piece_size
            want = stream[start:start + layout.piece_size]
            have = shards[j][s * layout.piece_size:(s + 1) * layout.piece_size]
            assert have == want + bytes(layout.piece_size - len(want))


@settings(max_examples=40, deadline=None)
@given(objects, schemes, st.randoms(use_true_random=False))
def test_rebuild_gives_the_lost_shards_byte_for_byte(obj: tuple[bytes, bool, int, int], scheme: tuple[int, int],
                                                     rnd: random.Random) -> None:
    root, store = _object(*obj)
    k, m = scheme
    _, shards = _encode(root, store, k, m, 128)
    lost = rnd.sample(range(k + m), rnd.randint(0, m))
    healthy = rnd.sample([i for i in range(k + m) if i not in lost], k)
    sinks = [io.BytesIO() for _ in lost]
    infos = codec.rebuild(lost, _readers(shards, healthy), sinks)
    for i, sink, info in zip(lost, sinks, infos):
        assert sink.getvalue() == shards[i]
        assert info.index == i and info.cid == make_cid("raw", shards[i])


@settings(max_examples=60, deadline=None)
@given(objects, schemes, st.randoms(use_true_random=False), st.data())
def test_a_corrupted_shard_never_yields_wrong_blocks(obj: tuple[bytes, bool, int, int], scheme: tuple[int, int],
                                                    rnd: random.Random, data: st.DataObject) -> None:
    """Flip one byte anywhere in one of the K shards used: reconstruct fails or is still exact."""
    root, store = _object(*obj)
    k, m = scheme
    _, shards = _encode(root, store, k, m, 64)
    which = rnd.sample(range(k + m), k)
    victim = rnd.choice(which)
    raw = bytearray(shards[victim])
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    raw[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    shards[victim] = bytes(raw)
    try:
        got = [(bytes(c), d) for c, d in codec.reconstruct(_readers(shards, which), root)]
    except StoreError:
        return
    assert got == _expected(root, store)


def test_a_corrupted_piece_names_the_shard_and_a_spare_replaces_it() -> None:
    root, store = _object(random.Random(7).randbytes(20_000), False, 1024, 4)
    layout, shards = _encode(root, store, 4, 2, 1024)
    assert layout.stripes >= 3
    clean = list(shards)
    raw = bytearray(shards[1])
    raw[2 * layout.piece_size + 5] ^= 0x40  # shard 1, stripe 2
    shards[1] = bytes(raw)
    with pytest.raises(NotEnoughShards, match="shard 1 is corrupt at stripe 2"):
        list(codec.reconstruct(_readers(shards, [0, 1, 2, 3]), root))
    # with a spare, the liar is dropped and parity shard 4 takes its place
    got = [(bytes(c), d) for c, d in codec.reconstruct(_readers(shards, [0, 1, 2, 3, 4]), root)]
    assert got == _expected(root, store)
    # a second copy of shard 1 (another holder's) is a spare for the first
    got = [(bytes(c), d) for c, d in codec.reconstruct(
        _readers(shards, [1, 0, 2, 3]) + [ShardReader(io.BytesIO(clean[1]))], root)]
    assert got == _expected(root, store)
    # a repair from it notices too, and never writes a shard from the lie
    with pytest.raises(NotEnoughShards):
        codec.rebuild([5], _readers(shards, [0, 1, 2, 3]), [io.BytesIO()])


def test_shards_that_disagree_on_the_layout_are_refused() -> None:
    root, store = _object(random.Random(1).randbytes(5000), False, 1024, 4)
    _, shards = _encode(root, store, 2, 2, 64)
    raw = bytearray(shards[3])
    raw[-FOOTER_LEN - 1] ^= 1  # last byte of the piece hash table
    shards[3] = bytes(raw)
    with pytest.raises(LayoutMismatch, match="disagree"):
        list(codec.reconstruct(_readers(shards, [0, 3]), root))
    good = _readers(shards, [0])[0].header.layout_id
    got = [(bytes(c), d) for c, d in codec.reconstruct(_readers(shards, [0, 3, 1]), root, layout_id=good)]
    assert got == _expected(root, store)


def test_a_self_consistent_forgery_is_caught_by_the_dag_walk() -> None:
    """All shards forged together (same table, right piece hashes, every block
    matching its own CID) but the blocks are not the object's DAG."""
    root, store = _object(random.Random(2).randbytes(5000), False, 1024, 4)
    root_block = store.get(root)
    bogus = b"not a block of this object"
    blocks = [(root, root_block), (make_cid("raw", bogus), bogus)]
    layout = codec.plan([BlockRef(c, len(d)) for c, d in blocks], 2, 1, 64)
    sinks = [io.BytesIO() for _ in range(3)]
    codec.encode(layout, blocks, sinks)
    forged = [s.getvalue() for s in sinks]
    with pytest.raises(LayoutMismatch, match="not the next block"):
        list(codec.reconstruct(_readers(forged, [0, 1]), root))
    # and a layout that stops early (only the root) is not the whole DAG either
    layout = codec.plan([BlockRef(root, len(root_block))], 1, 1, 64)
    sinks = [io.BytesIO() for _ in range(2)]
    codec.encode(layout, [(root, root_block)], sinks)
    with pytest.raises(LayoutMismatch, match="whole DAG"):
        list(codec.reconstruct(_readers([s.getvalue() for s in sinks], [1]), root))


def test_shards_of_another_object_are_refused() -> None:
    root, store = _object(b"one object" * 300, False, 1024, 4)
    other, _ = _object(b"another one" * 300, False, 1024, 4)
    _, shards = _encode(root, store, 2, 1, 64)
    with pytest.raises(LayoutMismatch, match="not"):
        list(codec.reconstruct(_readers(shards, [0, 1]), other))


def test_encode_checks_the_blocks_against_the_layout() -> None:
    root, store = _object(random.Random(3).randbytes(3000), False, 1024, 4)
    refs = dag_block_refs(root, store.get)
    layout = codec.plan(refs, 2, 1)
    blocks = list(dag_blocks(root, store.get))
    with pytest.raises(LayoutMismatch):
        codec.encode(layout, blocks[:-1], [io.BytesIO() for _ in range(3)])
    cid, data = blocks[-1]
    tampered = blocks[:-1] + [(cid, bytes([data[0] ^ 1]) + data[1:])]
    with pytest.raises(StoreError):
        codec.encode(layout, tampered, [io.BytesIO() for _ in range(3)])


def test_too_few_shards_and_bad_parameters() -> None:
    root, store = _object(b"x" * 5000, False, 1024, 4)
    _, shards = _encode(root, store, 3, 2, 64)
    with pytest.raises(NotEnoughShards):
        list(codec.reconstruct(_readers(shards, [0, 4]), root))
    with pytest.raises(NotEnoughShards):  # the same shard twice counts once
        list(codec.reconstruct(_readers(shards, [4, 4, 1]), root))
    with pytest.raises(ErasureError):
        codec.plan(dag_block_refs(root, store.get), 0, 2)
    with pytest.raises(ErasureError):
        codec.plan(dag_block_refs(root, store.get), 200, 100)
    with pytest.raises(MalformedShard):
        ShardReader(io.BytesIO(shards[0][:-1]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=30), st.integers(1, 10), st.sampled_from([64, 128, 1024]))
def test_blocks_in_stripe_cover_exactly_the_stripe(lengths: list[int], k: int, piece: int) -> None:
    refs = [BlockRef(make_cid("raw", i.to_bytes(4, "big")), n) for i, n in enumerate(lengths)]
    layout = Layout.plan(refs, k, 1, piece)
    stripes_of: dict[int, list[int]] = {}
    for s in range(layout.stripes):
        lo, hi = s * layout.stripe_bytes, (s + 1) * layout.stripe_bytes
        for i in layout.blocks_in_stripe(s):
            start, end = layout.block_offset(i), layout.block_offset(i) + refs[i].length
            assert (start < hi and end > lo) or (refs[i].length == 0 and lo <= start < hi)
            stripes_of.setdefault(i, []).append(s)
    for i, ref in enumerate(refs):
        start = layout.block_offset(i)
        if ref.length:
            end = start + ref.length
            assert stripes_of[i] == list(range(start // layout.stripe_bytes, (end - 1) // layout.stripe_bytes + 1))
        elif start < layout.data_length:
            assert stripes_of[i] == [start // layout.stripe_bytes]


def test_a_shard_is_committed_and_audited_like_a_replica() -> None:
    """The commitment is built in the encode pass; a holder of the shard answers an
    audit with the replica code path; a rebuilt shard has the same commitment."""
    from shoal.store.proofs.commitment import MerkleTree, commit
    from shoal.store.proofs.proof import make_proof, verify_proof

    root, store = _object(random.Random(5).randbytes(300_000), False, 65536, 8)
    sinks = [io.BytesIO() for _ in range(6)]
    _, infos = codec.encode_object(root, store.get, store.size, sinks, 4, 2, 1024, commit_segment_size=64)
    shards = [s.getvalue() for s in sinks]
    holder = b"holder-peer-id"
    for info, raw in zip(infos, shards):
        assert info.commitment == commit(raw, 64)
        c = info.commitment
        tree = MerkleTree.from_segments(lambda i: raw[i * 64:(i + 1) * 64], c)
        nonce = bytes([info.index]) * 32
        proof = make_proof(lambda i: raw[i * 64:(i + 1) * 64], tree, nonce, holder, 16)
        assert verify_proof(c, nonce, holder, 16, proof)
    # a holder that kept another shard's bytes fails shard 5's audit
    c5 = infos[5].commitment
    assert c5 is not None
    other = shards[4]
    assert len(other) == c5.length  # same size, other bytes
    with pytest.raises(StoreError):  # they do not reproduce the committed root
        MerkleTree.from_segments(lambda i: other[i * 64:(i + 1) * 64], c5)
    out = [io.BytesIO()]
    rebuilt = codec.rebuild([5], _readers(shards, [0, 1, 2, 3]), out, commit_segment_size=64)
    assert rebuilt[0].commitment == infos[5].commitment and out[0].getvalue() == shards[5]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects, schemes, st.randoms(use_true_random=False))
def test_rebuild_from_blocks_gives_the_lost_shards_byte_for_byte(
        obj: tuple[bytes, bool, int, int], scheme: tuple[int, int], rnd: random.Random) -> None:
    """An owner that still holds the object re-encodes only what was lost: same bytes, same CIDs,
    same commitment as the shards placed at first."""
    root, store = _object(*obj)
    k, m = scheme
    layout, shards = _encode(root, store, k, m, 128)
    layout_id = ShardReader(io.BytesIO(shards[0])).header.layout_id
    lost = rnd.sample(range(k + m), rnd.randint(1, max(1, m)))
    sinks = [io.BytesIO() for _ in lost]
    infos = codec.rebuild_from_blocks(layout, dag_blocks(root, store.get), lost, sinks, layout_id=layout_id,
                                      commit_segment_size=1024)
    whole = [io.BytesIO() for _ in range(k + m)]
    first = codec.encode(layout, dag_blocks(root, store.get), whole, commit_segment_size=1024)
    for i, sink, info in zip(lost, sinks, infos):
        assert sink.getvalue() == shards[i]
        assert info.index == i and info.cid == make_cid("raw", shards[i])
        assert info.commitment == first[i].commitment and info.commitment is not None


def test_rebuild_from_blocks_refuses_another_encoding() -> None:
    """Blocks that encode to another layout (another piece size here) never pass for the lost shard."""
    root, store = _object(random.Random(3).randbytes(5000), False, 700, 4)
    _, shards = _encode(root, store, 2, 1, 128)
    layout_id = ShardReader(io.BytesIO(shards[0])).header.layout_id
    other = codec.plan_object(root, store.get, store.size, 2, 1, 256)
    with pytest.raises(LayoutMismatch):
        codec.rebuild_from_blocks(other, dag_blocks(root, store.get), [2], [io.BytesIO()], layout_id=layout_id)
    with pytest.raises(ErasureError):
        codec.rebuild_from_blocks(other, dag_blocks(root, store.get), [3], [io.BytesIO()], layout_id=layout_id)
