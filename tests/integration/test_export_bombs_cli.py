"""Decompression bombs through the real CLI, offline and through a node (issue 12, item 9).

Each CAR is a few blocks that declare far more than they hold: a directory
linked 32 times from its parent, six levels deep (2^30 files from ~4 KB); a
file whose 1 MiB leaf is linked 1,024 times per level (1 PiB from 1 MiB); a
HAMT that links one sub-shard from 200 slots per level. `get` must refuse
before writing anything and `ls` must fail fast, with one line on stderr.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.store.ipld import dagpb, unixfs
from shoal.store.ipld.car import write_car
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.ipld.unixfs import DataType, UnixFSData
from tests.helpers import assert_one_line_error, run_shoal
from tests.integration.swarm import Swarm, swarm  # noqa: F401  (fixture)

MIB = 1 << 20


class Blocks:
    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}

    def pb(self, links: list[dagpb.PBLink], fs: UnixFSData) -> CID:
        block = dagpb.encode(dagpb.PBNode(tuple(links), unixfs.encode(fs)))
        cid = make_cid("dag-pb", block)
        self.blocks[cid] = block
        return cid

    def raw(self, data: bytes) -> CID:
        cid = make_cid("raw", data)
        self.blocks[cid] = data
        return cid

    def car(self, path: Path, root: CID) -> Path:
        with open(path, "wb") as f:
            write_car(f, [root], list(self.blocks.items()))
        return path


def directory_bomb(tmp: Path) -> tuple[Path, CID]:
    b = Blocks()
    child, tsize = b.raw(b"x"), 1
    for _ in range(6):
        child = b.pb([dagpb.PBLink(bytes(child), f"d{i:02d}", tsize) for i in range(32)],
                     UnixFSData(DataType.DIRECTORY))
        tsize = tsize * 32 + 400
    return b.car(tmp / "dirbomb.car", child), child


def petabyte_file(tmp: Path) -> tuple[Path, CID]:
    b = Blocks()
    child, size = b.raw(b"\x5a" * MIB), MIB
    for _ in range(3):  # 1 MiB * 1024^3 = 1 PiB
        child = b.pb([dagpb.PBLink(bytes(child), "", size)] * 1024,
                     UnixFSData(DataType.FILE, blocksizes=(size,) * 1024))
        size *= 1024
    return b.car(tmp / "pib.car", child), child


def two_gib_file(tmp: Path) -> tuple[Path, CID]:
    b = Blocks()
    leaf = b.raw(b"\x00" * MIB)
    root = b.pb([dagpb.PBLink(bytes(leaf), "", MIB)] * 2048,
                UnixFSData(DataType.FILE, blocksizes=(MIB,) * 2048))
    return b.car(tmp / "2g.car", root), root


def hamt_bomb(tmp: Path) -> tuple[Path, CID]:
    b = Blocks()
    shard = UnixFSData(DataType.HAMT_SHARD, data=b"\xff", hash_type=0x22, fanout=256)
    child = b.pb([dagpb.PBLink(bytes(b.raw(b"z")), "00name", 1)], shard)
    for _ in range(6):
        child = b.pb([dagpb.PBLink(bytes(child), f"{i:02X}", 10) for i in range(200)], shard)
    return b.car(tmp / "hamt.car", child), child


@pytest.fixture(params=["offline", "node"])
def repo(request: pytest.FixtureRequest, tmp_path: Path, swarm: Swarm) -> Path:
    if request.param == "node":
        return swarm.add("a").repo
    path = tmp_path / "repo"
    assert run_shoal(path, "init").code == 0
    return path


def imported(repo: Path, car: Path) -> None:
    r = run_shoal(repo, "car", "import", str(car))
    assert r.code == 0, r.err


def test_directory_bomb_get_refuses_and_writes_nothing(repo: Path, tmp_path: Path) -> None:
    car, root = directory_bomb(tmp_path)
    assert car.stat().st_size < 16384
    imported(repo, car)
    out = tmp_path / "out"
    r = run_shoal(repo, "get", str(root), "-o", str(out), timeout=60)
    assert_one_line_error(r)
    assert "files and directories" in r.err or "entries" in r.err, r.err
    assert not out.exists()


def test_petabyte_file_get_refuses_before_writing(repo: Path, tmp_path: Path) -> None:
    car, root = petabyte_file(tmp_path)
    imported(repo, car)
    out = tmp_path / "out"
    out.mkdir()
    r = run_shoal(repo, "get", str(root), "-o", str(out / "model.bin"), timeout=60)
    assert_one_line_error(r)
    assert "free" in r.err, r.err
    assert list(out.iterdir()) == []


def test_get_max_size(repo: Path, tmp_path: Path) -> None:
    car, root = two_gib_file(tmp_path)
    imported(repo, car)
    out = tmp_path / "out.bin"
    r = run_shoal(repo, "get", str(root), "-o", str(out), "--max-size", "1G", timeout=60)
    assert_one_line_error(r)
    assert not out.exists()
    assert list(tmp_path.glob(".shoal-*")) == []


def test_hamt_bomb_ls_fails_fast(repo: Path, tmp_path: Path) -> None:
    car, root = hamt_bomb(tmp_path)
    imported(repo, car)
    r = run_shoal(repo, "ls", str(root), timeout=60)
    assert_one_line_error(r)
    assert "sub-shard" in r.err, r.err
    assert len(r.out) < 4096
