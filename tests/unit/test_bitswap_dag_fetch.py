"""fetch_dag: a whole UnixFS DAG (file, directory) over Bitswap, between in-memory nodes."""

from __future__ import annotations

import random
from pathlib import Path

import trio

from shoal.p2p.bitswap.dag_fetch import fetch_dag
from shoal.p2p.bitswap.driver import Bitswap
from shoal.p2p.bitswap.repo_source import StoreSource
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.dag import exporter
from shoal.store.dag.importer import import_path
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.persist.blockstore import MemoryBlockstore
from tests.unit.test_bitswap_driver import join

SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=4096, max_links=8)


def tree(tmp_path: Path) -> Path:
    rng = random.Random(11)
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(rng.randbytes(150_000))
    (root / "sub" / "shard.bin").write_bytes(rng.randbytes(40_000))
    (root / "sub" / "empty").write_bytes(b"")
    return root


def read_tree(store: MemoryBlockstore, cid: CID, prefix: str = "") -> dict[str, bytes]:
    """Every file under directory `cid`, by path, read with Shoal's exporter."""
    out: dict[str, bytes] = {}
    for entry in exporter.list_dir(store, cid):
        path = prefix + entry.name
        if entry.kind == "dir":
            out.update(read_tree(store, entry.cid, path + "/"))
        else:
            out[path] = b"".join(exporter.read_file(store, entry.cid))
    return out


async def test_a_directory_dag_is_fetched_whole_and_reads_back(tmp_path: Path) -> None:
    src = tree(tmp_path)
    theirs, ours = MemoryBlockstore(), MemoryBlockstore()
    root = import_path(src, theirs, SMALL).cid
    blocks = len(list(theirs.keys()))
    assert blocks > 50  # several levels of links
    leaf = make_cid("raw", (src / "weights.bin").read_bytes()[:4096])
    ours.put(leaf, (src / "weights.bin").read_bytes()[:4096])  # one block we already have
    a, b = Bitswap(StoreSource(theirs)), Bitswap(StoreSource(ours))
    async with trio.open_nursery() as nursery:
        await join(nursery, a, "A", b, "B")
        result = await fetch_dag(b, root, ours, batch=16)
        nursery.cancel_scope.cancel()
    assert result.missing == [] and result.malformed == [] and result.bad_peers == []
    assert result.present == 1 and result.fetched == blocks - 1
    assert read_tree(ours, root) == {
        "weights.bin": (src / "weights.bin").read_bytes(),
        "sub/shard.bin": (src / "sub" / "shard.bin").read_bytes(),
        "sub/empty": b"",
    }


async def test_a_hole_in_the_dag_is_reported(tmp_path: Path) -> None:
    src = tree(tmp_path)
    theirs, ours = MemoryBlockstore(), MemoryBlockstore()
    root = import_path(src / "weights.bin", theirs, SMALL).cid
    hole = make_cid("raw", (src / "weights.bin").read_bytes()[8192:12288])
    theirs.delete(hole)
    a, b = Bitswap(StoreSource(theirs)), Bitswap(StoreSource(ours))
    async with trio.open_nursery() as nursery:
        await join(nursery, a, "A", b, "B")
        with trio.fail_after(5):  # DONT_HAVE ends it, no timeout
            result = await fetch_dag(b, root, ours)
        nursery.cancel_scope.cancel()
    assert result.missing == [bytes(hole)]
