"""Repo: the index is never silently recreated, repair_index, gc's guard, the
lock's waiting rules and read-only opens (issue 12: A2, 22)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from shoal.store.errors import (
    GcRefused, IndexCorrupt, IndexMissing, RepoError, RepoLocked, StorageFull,
)
from shoal.store.chunking.profiles import PROFILES
from shoal.store.persist.repo import Repo



@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    Repo.init(tmp_path / "repo").close()
    return tmp_path / "repo"


def _file(tmp_path: Path, name: str, size: int) -> Path:
    p = tmp_path / name
    p.write_bytes(os.urandom(size))
    return p


def _drop_index(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (path / f"index.sqlite{suffix}").unlink(missing_ok=True)


def test_open_never_creates_an_index(repo_path: Path) -> None:
    _drop_index(repo_path)
    for lock in (True, False):
        with pytest.raises(IndexMissing) as info:
            Repo.open(repo_path, lock=lock)
        assert "repair-index" in info.value.hint
    assert not (repo_path / "index.sqlite").exists()
    (repo_path / "index.sqlite").write_bytes(b"not sqlite at all" * 300)
    with pytest.raises(IndexCorrupt):
        Repo.open(repo_path)


def test_repair_index_recovers_every_root(repo_path: Path, tmp_path: Path) -> None:
    with Repo.open(repo_path) as r:
        big = r.add(_file(tmp_path, "big", 2_500_000))
        small = r.add(_file(tmp_path, "small", 100))
        legacy = r.add(_file(tmp_path, "legacy", 1_200_000), profile=PROFILES["kubo-legacy"])
        keys = set(r.blockstore.keys())
    assert str(legacy.cid).startswith("Qm")
    _drop_index(repo_path)
    with Repo.open_for_repair(repo_path) as r:
        report = r.repair_index()
        assert {o.cid for o in report.objects} == {str(big.cid), str(small.cid), str(legacy.cid)}
        assert report.blocks_scanned == len(keys) and report.corrupt_blocks == 0
        assert r.index.live_keys() == keys
        assert r.repair_index().objects == []  # additive and idempotent
        assert r.gc().removed_blocks == 0
        assert r.verify().ok
        sizes = {o.cid: o.size for o in r.objects()}
        assert sizes[str(big.cid)] == 2_500_000 and sizes[str(small.cid)] == 100


def test_repair_ignores_the_wal_of_a_lost_index(repo_path: Path, tmp_path: Path) -> None:
    """Only index.sqlite was lost; its -wal (another database's frames) is moved aside, not replayed."""
    with Repo.open(repo_path) as r:
        res = r.add(_file(tmp_path, "f", 3_000))
        (repo_path / "index.sqlite").unlink()  # while open: its -wal and -shm stay behind
        wal = (repo_path / "index.sqlite-wal").read_bytes()
    (repo_path / "index.sqlite-wal").write_bytes(wal)
    with Repo.open_for_repair(repo_path) as r:
        assert [o.cid for o in r.repair_index().objects] == [str(res.cid)]
        assert r.verify().ok
    assert list(repo_path.glob("index.sqlite-wal.orphan-*"))


def test_gc_refuses_a_never_pinned_index_only(repo_path: Path, tmp_path: Path) -> None:
    with Repo.open(repo_path) as r:
        res = r.add(_file(tmp_path, "f", 5_000))
        r.pin_rm(res.cid)
        assert r.gc().removed_blocks == 1  # its pins were removed on purpose: gc runs
        r.blockstore.put(res.cid, (tmp_path / "f").read_bytes())
    _drop_index(repo_path)
    Repo.init(repo_path.parent / "fresh").close()
    (repo_path / "index.sqlite").write_bytes((repo_path.parent / "fresh" / "index.sqlite").read_bytes())
    with Repo.open(repo_path) as r:
        with pytest.raises(GcRefused):
            r.gc()
        assert r.blockstore.has(res.cid)
        assert r.gc(force=True).removed_blocks == 1


def test_reader_beside_a_writer(repo_path: Path, tmp_path: Path) -> None:
    with Repo.open(repo_path) as writer:
        first = writer.add(_file(tmp_path, "a", 3_000))
        with Repo.open(repo_path, lock=False) as reader:
            assert [o.cid for o in reader.objects()] == [str(first.cid)]
            second = writer.add(_file(tmp_path, "b", 3_000))  # the reader blocks nothing
            assert {o.cid for o in reader.objects()} == {str(first.cid), str(second.cid)}
            with pytest.raises(RepoError, match="read-only"):
                reader.pin_rm(first.cid)


def test_a_writer_waits_for_the_lock(repo_path: Path) -> None:
    holder = Repo.open(repo_path)
    waited: list[str] = []
    opened = threading.Event()

    def second() -> None:
        with Repo.open(repo_path, wait=True, on_wait=waited.append):
            opened.set()

    t = threading.Thread(target=second)
    t.start()
    try:
        assert not opened.wait(0.5)  # blocked behind the holder
        assert waited == [f"another shoal process (pid {os.getpid()})"]
    finally:
        holder.close()
        t.join(30)
    assert opened.is_set()


def test_a_writer_never_waits_behind_a_node(repo_path: Path) -> None:
    with Repo.open(repo_path, node=True):
        waited: list[str] = []
        with pytest.raises(RepoLocked, match="node") as info:
            Repo.open(repo_path, wait=True, on_wait=waited.append)
        assert waited == [] and "API" in info.value.hint


def test_pin_rm_spends_the_reserve_when_the_index_cannot_grow(repo_path: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's pin rm on a full disk: the commit fails, the reserve is given back, the retry commits."""
    with Repo.open(repo_path) as r:
        res = r.add(_file(tmp_path, "f", 3_000))
        assert r.reserve.size() > 0
        real = r.index.remove_pin
        calls: list[bool] = []

        def full_once(cid: str, created: float | None = None) -> bool:
            calls.append(True)
            if len(calls) == 1:
                assert r.reserve.size() > 0
                raise StorageFull("cannot update index: disk full")
            return real(cid, created)

        monkeypatch.setattr(r.index, "remove_pin", full_once)
        r.pin_rm(res.cid)
        assert len(calls) == 2 and r.reserve_released > 0 and r.reserve.size() == 0
        assert r.pins() == []
        monkeypatch.setattr(r.index, "remove_pin", lambda *a: (_ for _ in ()).throw(StorageFull("full")))
        with pytest.raises(StorageFull):  # no reserve left to spend: the error stands
            r.pin_rm(res.cid)
        r.gc()
        assert r.reserve.size() > 0  # gc made room: held again
