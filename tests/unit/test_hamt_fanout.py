"""A HAMT shard may declare only a fanout IPFS accepts: a power of two, 8..1024.

Issue 12: a shard declaring fanout 1 (a trie that never splits) or 2^40
(10-hex-digit slot names) was accepted. Now unixfs decoding refuses any
other fanout (fuzz-style, over every integer class), so `ls`, `get`, the
CAR importer's checks and the node all see MalformedBlock; the builder
refuses to make one.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.ipld import dagpb, hamt, unixfs
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import make_cid
from shoal.store.errors import MalformedBlock
from shoal.store.dag.disk_export import export_to_path
from shoal.store.dag.exporter import DirEntry, list_dir
from shoal.store.ipld.unixfs import DataType, UnixFSData

VALID = [1 << b for b in range(3, 11)]


def _shard_root(bs: MemoryBlockstore, fanout: int) -> object:
    leaf = make_cid("raw", b"A")
    bs.put(leaf, b"A")
    width = len(f"{fanout - 1:X}")
    shard = UnixFSData(DataType.HAMT_SHARD, data=b"\x01", hash_type=0x22, fanout=fanout)
    block = dagpb.encode(dagpb.PBNode((dagpb.PBLink(bytes(leaf), "0" * width + "ant", 1),), unixfs.encode(shard)))
    cid = make_cid("dag-pb", block)
    bs.put(cid, block)
    return cid


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(0, 4096), st.integers(0, 2**63 - 1), st.sampled_from([1, 2, 4, 2048, 1 << 40])))
def test_decoding_accepts_exactly_the_ipfs_fanouts(fanout: int) -> None:
    raw = unixfs.encode(UnixFSData(DataType.HAMT_SHARD, data=b"\x01", hash_type=0x22, fanout=fanout))
    if fanout in VALID:
        assert unixfs.decode(raw).fanout == fanout
    else:
        with pytest.raises(MalformedBlock, match="fanout"):
            unixfs.decode(raw)


def test_a_shard_without_a_fanout_is_malformed() -> None:
    raw = unixfs.encode(UnixFSData(DataType.HAMT_SHARD, data=b"\x01", hash_type=0x22))
    with pytest.raises(MalformedBlock, match="fanout"):
        unixfs.decode(raw)


@pytest.mark.parametrize("fanout", [1, 2, 4, 2048, 1 << 40])
def test_ls_and_get_refuse_a_shard_with_a_bad_fanout(fanout: int, tmp_path: object) -> None:
    bs = MemoryBlockstore()
    root = _shard_root(bs, fanout)
    with pytest.raises(MalformedBlock):
        list_dir(bs, root)  # type: ignore[arg-type]
    with pytest.raises(MalformedBlock):
        export_to_path(bs, root, tmp_path / "out")  # type: ignore[arg-type, operator]


@pytest.mark.parametrize("fanout", [8, 1024])
def test_the_edge_fanouts_still_list(fanout: int) -> None:
    bs = MemoryBlockstore()
    root = _shard_root(bs, fanout)
    assert list_dir(bs, root) == [DirEntry("ant", make_cid("raw", b"A"), 1, "file")]  # type: ignore[arg-type]


@pytest.mark.parametrize("fanout", [1, 4, 2048, 1 << 40])
def test_the_builder_refuses_a_bad_fanout(fanout: int) -> None:
    with pytest.raises(ValueError, match="fanout"):
        hamt.build([hamt.HamtEntry(b"a", bytes(make_cid("raw", b"A")), 1)], lambda block: b"", fanout)
