"""Decompression bombs and modes: a few hostile blocks must not make an
export or a listing write or walk without bound (issue 12, items 9 and 20)."""

from __future__ import annotations

import os
import stat as stat_mod
from pathlib import Path

import pytest

from shoal.store.ipld import dagpb, unixfs
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.cancel import CancelFlag, Cancelled
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.errors import MalformedBlock, StorageFull
from shoal.store.dag.disk_export import export_to_path, plan_export
from shoal.store.dag.exporter import ExportRefused, iter_dir, list_dir
from shoal.store.dag.importer import import_path
from shoal.store.ipld.unixfs import DataType, UnixFSData


def store_pb(bs: MemoryBlockstore, links: tuple[dagpb.PBLink, ...], fs: UnixFSData) -> CID:
    block = dagpb.encode(dagpb.PBNode(links, unixfs.encode(fs)))
    cid = make_cid("dag-pb", block)
    bs.put(cid, block)
    return cid


def branching_bomb(bs: MemoryBlockstore, width: int, depth: int) -> CID:
    """`depth` directory blocks, each linking the one below `width` times: width^depth files."""
    leaf = make_cid("raw", b"x")
    bs.put(leaf, b"x")
    child, kind = leaf, 1
    for _ in range(depth):
        links = tuple(dagpb.PBLink(bytes(child), f"e{i:03d}", kind) for i in range(width))
        child = store_pb(bs, links, UnixFSData(DataType.DIRECTORY))
    return child


def huge_file(bs: MemoryBlockstore, declared: int) -> CID:
    """A file root whose single link claims `declared` bytes (a 1 PiB file in one block)."""
    leaf = make_cid("raw", b"y" * 16)
    bs.put(leaf, b"y" * 16)
    return store_pb(bs, (dagpb.PBLink(bytes(leaf), "", 16),),
                    UnixFSData(DataType.FILE, blocksizes=(declared,)))


def listing(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))


def test_branching_directory_bomb_is_refused_before_writing(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    root = branching_bomb(bs, width=32, depth=6)  # 2^30 files from 7 blocks
    plan = plan_export(bs, root, max_entries=1 << 40)
    assert plan.bytes == 32 ** 6
    with pytest.raises(ExportRefused):
        export_to_path(bs, root, tmp_path / "out")
    assert listing(tmp_path) == []


def test_small_repeated_subtree_still_exports(tmp_path: Path) -> None:
    """Repeats are legal (identical files, identical subdirectories); only the totals count."""
    bs = MemoryBlockstore()
    root = branching_bomb(bs, width=3, depth=2)
    plan = export_to_path(bs, root, tmp_path / "out")
    assert plan.entries == 1 + 3 + 9 and plan.bytes == 9
    assert (tmp_path / "out" / "e002" / "e001").read_bytes() == b"x"


def test_declared_size_over_free_space_is_refused(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    root = huge_file(bs, 1 << 50)
    with pytest.raises(StorageFull) as info:
        export_to_path(bs, root, tmp_path / "big")
    assert listing(tmp_path) == []
    # The destination's disk is short, not the repo's: no `pin rm` / `gc` advice.
    assert "gc" not in info.value.hint and str(tmp_path) in info.value.hint


def test_max_size(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"a" * 1000)
    (tmp_path / "src" / "b").write_bytes(b"b" * 1000)
    root = import_path(tmp_path / "src", bs).cid
    with pytest.raises(ExportRefused):
        export_to_path(bs, root, tmp_path / "out", max_size=1999)
    assert not (tmp_path / "out").exists()
    assert export_to_path(bs, root, tmp_path / "out", max_size=2000).bytes == 2000


def test_entry_budget(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    root = branching_bomb(bs, width=10, depth=2)
    with pytest.raises(ExportRefused):
        export_to_path(bs, root, tmp_path / "out", max_entries=100)
    assert export_to_path(bs, root, tmp_path / "out", max_entries=111).entries == 111


def test_hamt_with_repeated_sub_shard_is_malformed() -> None:
    bs = MemoryBlockstore()
    leaf = make_cid("raw", b"z")
    bs.put(leaf, b"z")
    shard = UnixFSData(DataType.HAMT_SHARD, data=b"\xff", hash_type=0x22, fanout=256)
    child = store_pb(bs, (dagpb.PBLink(bytes(leaf), "00name", 1),), shard)
    for _ in range(8):  # each level links the one below under 200 slots: 200^8 entries declared
        child = store_pb(bs, tuple(dagpb.PBLink(bytes(child), f"{i:02X}", 10) for i in range(200)), shard)
    with pytest.raises(MalformedBlock):
        for _ in iter_dir(bs, child, resolve=False):
            pass


def test_flat_directory_with_duplicate_names_is_malformed(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    leaf = make_cid("raw", b"z")
    bs.put(leaf, b"z")
    d = store_pb(bs, (dagpb.PBLink(bytes(leaf), "same", 1),) * 2, UnixFSData(DataType.DIRECTORY))
    with pytest.raises(MalformedBlock):
        list_dir(bs, d)


def test_wide_directory_listing_streams() -> None:
    """iter_dir yields before it has read the whole directory and stops at its budget."""
    bs = MemoryBlockstore()
    root = branching_bomb(bs, width=5000, depth=1)
    it = iter_dir(bs, root, resolve=False)
    assert next(it).name == "e000"
    with pytest.raises(ExportRefused):
        list(iter_dir(bs, root, resolve=False, max_entries=4999))


def test_cancelled_export_removes_what_it_wrote(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    src = tmp_path / "src"
    for d in ("a", "b", "c"):
        (src / d).mkdir(parents=True)
        for i in range(5):
            (src / d / f"f{i}").write_bytes(os.urandom(100))
    root = import_path(src, bs).cid
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_bytes(b"mine")
    flag = CancelFlag()
    gets = 0

    class Cancelling(MemoryBlockstore):
        def get(self, cid: CID) -> bytes:
            nonlocal gets
            gets += 1
            if gets == 40:  # mid-export, after the plan and some files
                flag.set("client went away")
            return bs.get(cid)

    with pytest.raises(Cancelled):
        export_to_path(Cancelling(), root, tmp_path / "out", cancel=flag)
    assert listing(tmp_path / "out") == ["keep"]


def test_malformed_directory_removes_what_it_wrote(tmp_path: Path) -> None:
    """A directory whose second entry is missing fails at that entry: the first is undone."""
    bs = MemoryBlockstore()
    good = make_cid("raw", b"ok")
    bs.put(good, b"ok")
    missing = make_cid("raw", b"gone")
    d = store_pb(bs, (dagpb.PBLink(bytes(good), "a", 2), dagpb.PBLink(bytes(missing), "b", 4)),
                 UnixFSData(DataType.DIRECTORY))
    from shoal.store.errors import BlockNotFound

    with pytest.raises(BlockNotFound):
        export_to_path(bs, d, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mask,expect", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_honour_the_umask(tmp_path: Path, mask: int, expect: int) -> None:
    bs = MemoryBlockstore()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "w.bin").write_bytes(b"w" * 3000)
    root = import_path(tmp_path / "src", bs).cid
    export_to_path(bs, root, tmp_path / "out", umask=mask)
    assert stat_mod.S_IMODE((tmp_path / "out" / "w.bin").stat().st_mode) == expect


def test_process_umask_is_the_default(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    leaf = make_cid("raw", b"q")
    bs.put(leaf, b"q")
    old = os.umask(0o022)
    try:
        export_to_path(bs, leaf, tmp_path / "q")
    finally:
        os.umask(old)
    assert stat_mod.S_IMODE((tmp_path / "q").stat().st_mode) == 0o644


def test_unixfs_mode_bits_are_kept(tmp_path: Path) -> None:
    bs = MemoryBlockstore()
    script = store_pb(bs, (), UnixFSData(DataType.FILE, data=b"#!/bin/sh\n", mode=0o4755))
    ro_dir = store_pb(bs, (dagpb.PBLink(bytes(script), "run.sh", 20),),
                      UnixFSData(DataType.DIRECTORY, mode=0o555))
    root = store_pb(bs, (dagpb.PBLink(bytes(ro_dir), "bin", 80),), UnixFSData(DataType.DIRECTORY))
    export_to_path(bs, root, tmp_path / "out", umask=0o022)
    try:
        assert stat_mod.S_IMODE((tmp_path / "out" / "bin" / "run.sh").stat().st_mode) == 0o755  # no setuid
        assert stat_mod.S_IMODE((tmp_path / "out" / "bin").stat().st_mode) == 0o555
    finally:
        (tmp_path / "out" / "bin").chmod(0o755)
