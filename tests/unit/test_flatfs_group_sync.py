"""FlatfsBlockstore's durability paths: shared syncfs rounds, per-file fsync, flush.

The crash contract these protect: a block file gets its real name only after
its data is durable, and `flush()` makes every name durable (shard
directories and, for new shards, the root) before the index may refer to it.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.store.persist import flatfs, group_sync
from shoal.store.ipld.cid import make_cid
from shoal.store.errors import RepoError
from shoal.store.persist.flatfs import FlatfsBlockstore

needs_syncfs = pytest.mark.skipif(group_sync.SYNCFS is None, reason="no syncfs(2) on this platform")


def _blocks(n: int) -> list[bytes]:
    return [f"block {i} ".encode() * 100 for i in range(n)]


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(flatfs.TEMP_SUFFIX)]


@needs_syncfs
def test_concurrent_puts_share_syncfs_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = group_sync.SYNCFS
    assert real is not None

    def slow_syncfs(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.02)  # long enough that other puts queue up behind this round
        real(fd)

    monkeypatch.setattr(group_sync, "SYNCFS", slow_syncfs)
    store = FlatfsBlockstore(tmp_path / "blocks")
    assert store.group_sync
    data = _blocks(64)
    cids = [make_cid("raw", d) for d in data]
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(store.put_trusted, cids, data))
    store.flush()
    assert [store.get(c) for c in cids] == data
    assert 1 <= len(calls) < len(data)
    assert not _temp_files(tmp_path)
    store.close()
    assert not store.group_sync


@needs_syncfs
def test_failed_syncfs_fails_its_round_and_names_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = threading.Event()

    def failing_syncfs(fd: int) -> None:
        started.set()
        time.sleep(0.05)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(group_sync, "SYNCFS", failing_syncfs)
    store = FlatfsBlockstore(tmp_path / "blocks")
    data = _blocks(8)
    cids = [make_cid("raw", d) for d in data]

    def put(i: int) -> BaseException | None:
        try:
            store.put_trusted(cids[i], data[i])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            return exc
        return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(put, range(len(data))))
    assert started.is_set()
    assert all(isinstance(r, RepoError) for r in results), results
    assert not any(store.has(c) for c in cids)
    assert not _temp_files(tmp_path)


@pytest.mark.parametrize("path", ["put", "stage"])
def test_per_file_fsync_when_group_sync_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    synced = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    store = FlatfsBlockstore(tmp_path / "blocks", group_sync=False)
    assert not store.group_sync
    data = _blocks(5)
    stager = store.stager()
    for d in data:
        if path == "put":
            store.put_trusted(make_cid("raw", d), d)
        else:  # a staged file is fsync'd by its writer; the namer then only renames
            stager.stage(make_cid("raw", d), d)
    stager.close()
    assert len(synced) >= len(data)
    assert all(store.has(make_cid("raw", d)) for d in data)


def test_flush_syncs_new_shards_and_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FlatfsBlockstore(tmp_path / "blocks")
    synced: list[Path] = []
    lock = threading.Lock()

    def record(path: Path) -> None:
        with lock:
            synced.append(Path(path))

    monkeypatch.setattr(flatfs, "fsync_dir", record)
    data = _blocks(20)
    for d in data:
        store.put_trusted(make_cid("raw", d), d)
    store.flush()
    shards = {p.parent for p in (tmp_path / "blocks").rglob("*.data")}
    assert shards <= set(synced)
    assert tmp_path / "blocks" in synced  # new shards: their entries in <root> too
    synced.clear()
    store.flush()
    assert synced == []  # nothing dirty any more


def test_flush_failure_keeps_everything_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FlatfsBlockstore(tmp_path / "blocks")
    for d in _blocks(6):
        store.put_trusted(make_cid("raw", d), d)

    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(flatfs, "fsync_dir", broken)
    with pytest.raises(RepoError):
        store.flush()
    synced: list[Path] = []
    monkeypatch.setattr(flatfs, "fsync_dir", lambda p: synced.append(Path(p)))
    store.flush()
    assert tmp_path / "blocks" in synced and len(synced) > 1


def test_reput_of_an_existing_block_still_syncs_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block renamed by a process that died before its flush may have a
    non-durable name: a later put that finds it must still sync the shard."""
    data = _blocks(1)[0]
    cid = make_cid("raw", data)
    FlatfsBlockstore(tmp_path / "blocks").put_trusted(cid, data)  # never flushed: "died"
    store = FlatfsBlockstore(tmp_path / "blocks")
    synced: list[Path] = []
    monkeypatch.setattr(flatfs, "fsync_dir", lambda p: synced.append(Path(p)))
    assert store.put_trusted(cid, data) is False
    store.flush()
    assert tmp_path / "blocks" in synced
    assert any(p.parent == tmp_path / "blocks" and p != tmp_path / "blocks" for p in synced)
