"""A lane's writes of a fetched block: the export's file and the block file, past the page cache.

The lane copies a verified block once into page-aligned memory
(`stage_block`); from there the whole pages of the export's file
(`write_sinks`) and the block file (`LaneStore.put`) go to the disk with
O_DIRECT, as the in-process fetch's writes do (shoal.store.persist.direct_io).
Buffered, a lane filled the page cache with every byte of the export and its
sync rounds then paid for that writeback (the lanes spent ~50 % more CPU per
GiB than the in-process get). What must hold besides: exact bytes at the
sink's offset whatever its alignment, the neighbouring bytes untouched.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from shoal.p2p.lanes.api import LaneJob, Sink
from shoal.p2p.lanes.worker import LaneStore, stage_block, write_sinks
from shoal.store.ipld.cid import make_cid
from shoal.store.persist import direct_io
from shoal.store.persist.direct_io import ALIGN
from shoal.store.persist.repo import BLOCKS_DIR
from tests.helpers import random_bytes

pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this platform")


def _takes_direct(directory: Path) -> bool:
    probe = directory / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


@pytest.fixture
def io_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, bool]]:
    """Every write and pwrite of direct_io: (call, bytes, O_DIRECT set on the fd?)."""
    if not _takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    monkeypatch.setattr(direct_io, "ENABLED", True)
    calls: list[tuple[str, int, bool]] = []
    real_write, real_pwrite = os.write, os.pwrite

    def write(fd: int, data: Any) -> int:
        n = real_write(fd, data)
        calls.append(("write", n, bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)))
        return n

    def pwrite(fd: int, data: Any, offset: int) -> int:
        n = real_pwrite(fd, data, offset)
        calls.append(("pwrite", n, bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)))
        return n

    monkeypatch.setattr(direct_io.os, "write", write)
    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)
    return calls


def _export_file(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


@pytest.mark.parametrize("offset", [1 << 20, (1 << 20) + 100])
def test_a_fetched_leaf_goes_to_the_export_and_the_store_past_the_page_cache(
        tmp_path: Path, io_log: list[tuple[str, int, bool]], offset: int) -> None:
    data = random_bytes(1 << 20, seed=offset % 7)
    cid = make_cid("raw", data)
    out = _export_file(tmp_path / "out.part", 3 << 20)
    job = LaneJob(cid, None, (), (Sink(out, offset),))
    staged = stage_block(job, data)
    write_sinks(job, staged)
    sink_direct = sum(n for call, n, d in io_log if call == "pwrite" and d)
    whole_pages = (offset + len(data)) // ALIGN * ALIGN - -(-offset // ALIGN) * ALIGN
    assert sink_direct == whole_pages  # every page the leaf covers entirely, with O_DIRECT
    got = Path(out).read_bytes()
    assert got[offset : offset + len(data)] == data
    assert got[:offset] == bytes(offset) and got[offset + len(data) :] == bytes((3 << 20) - offset - len(data))

    io_log.clear()
    store = LaneStore(tmp_path / "repo")
    (tmp_path / "repo" / BLOCKS_DIR).mkdir(parents=True, exist_ok=True)
    store.put(cid, staged if offset % ALIGN == 0 else data)  # as Lane._deliver chooses
    store.close()
    assert store.blockstore.get(cid) == data
    assert sum(n for call, n, d in io_log if call == "write" and d) == len(data)  # the block file: direct too

