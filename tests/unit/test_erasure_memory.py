"""A 64 MiB object encodes, reconstructs and repairs with memory bounded by a stripe, not the object."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from shoal.store.erasure import codec
from shoal.store.erasure.layout import DEFAULT_PIECE_SIZE, BlockRef
from shoal.store.erasure.shard import ShardReader
from shoal.store.ipld import dagpb, unixfs
from shoal.store.ipld.cid import CID, make_cid

LEAF = 1 << 20
LEAVES = 64  # 64 MiB
K, M = 4, 2


def _leaf(i: int) -> bytes:
    return random.Random(i).randbytes(LEAF)


def _object() -> tuple[CID, bytes, list[tuple[CID, str]]]:
    """A UnixFS file of 64 one-MiB raw leaves under one root (leaves made on demand)."""
    leaves = []
    for i in range(LEAVES):
        data = _leaf(i)
        leaves.append((make_cid("raw", data), hashlib.sha256(data).hexdigest()))
    node = dagpb.PBNode(
        links=tuple(dagpb.PBLink(bytes(c), "", LEAF) for c, _ in leaves),
        data=unixfs.encode(unixfs.UnixFSData(unixfs.DataType.FILE, filesize=LEAF * LEAVES,
                                             blocksizes=(LEAF,) * LEAVES)),
    )
    root_block = dagpb.encode(node)
    return make_cid("dag-pb", root_block), root_block, leaves


def _blocks(root: CID, root_block: bytes, leaves: list[tuple[CID, str]]) -> Iterator[tuple[CID, bytes]]:
    yield root, root_block
    for i, (cid, _) in enumerate(leaves):
        yield cid, _leaf(i)


def test_64_mib_object_with_bounded_peak_memory(tmp_path: Path) -> None:
    root, root_block, leaves = _object()
    refs = [BlockRef(root, len(root_block))] + [BlockRef(c, LEAF) for c, _ in leaves]
    layout = codec.plan(refs, K, M)
    assert layout.piece_size <= DEFAULT_PIECE_SIZE and layout.stripes == 65 and layout.data_length > 64 << 20
    # a stripe's K + M pieces (twice: read and decoded or encoded), plus the
    # block being cut or filled and its copy; measured ~3.4 MB decode, ~2.7 MB rebuild
    bound = 2 * (K + M) * layout.piece_size + 2 * LEAF
    assert bound <= 5 << 20  # a twelfth of the object

    paths = [tmp_path / f"shard{i}" for i in range(K + M)]
    files = [p.open("wb") for p in paths]
    tracemalloc.start()
    try:
        infos = codec.encode(layout, _blocks(root, root_block, leaves), files)
        _, encode_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        for f in files:
            f.close()
    assert encode_peak < bound + LEAF  # the test's own generator holds one leaf too
    assert all(info.length == p.stat().st_size for info, p in zip(infos, paths))

    # lose the first two data shards: every stripe is decoded from parity
    opened = [p.open("rb") for p in paths[2:]]
    tracemalloc.start()
    try:
        got = []
        for cid, data in codec.reconstruct([ShardReader(f) for f in opened], root):
            got.append((cid, hashlib.sha256(data).hexdigest()))
            del data
        _, decode_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with (tmp_path / "rebuilt0").open("wb") as out:
            rebuilt = codec.rebuild([0], [ShardReader(f) for f in opened], [out])
        _, rebuild_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        for f in opened:
            f.close()
    assert got[0] == (root, hashlib.sha256(root_block).hexdigest())
    assert got[1:] == leaves
    assert decode_peak < bound, decode_peak
    assert rebuild_peak < bound, rebuild_peak
    assert rebuilt[0].cid == infos[0].cid
