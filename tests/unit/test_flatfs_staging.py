"""FlatfsStager: writes that do not wait for their sync round.

The contract is put_trusted's, moved in time: a staged block gets its real
name only after a syncfs that began after its temp file was closed; a
session's `close()` returns once each of its blocks has its name (visible
to get/has), or raises the first failure among them; nothing partial is
ever named. What staging adds: the writer never sleeps through a round,
the backlog of written-but-unnamed blocks is bounded, and a block staged
twice (by one session or two) is written once and reported to both.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.store.persist import flatfs, group_sync, stager as stager_mod
from shoal.store.ipld.cid import make_cid
from shoal.store.errors import RepoError, StorageFull
from shoal.store.persist.flatfs import FlatfsBlockstore

needs_syncfs = pytest.mark.skipif(group_sync.SYNCFS is None, reason="no syncfs(2) on this platform")


def _blocks(n: int, tag: str = "") -> list[bytes]:
    return [f"staged block {tag}{i} ".encode() * 300 for i in range(n)]


def _temp_files(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.name.endswith(flatfs.TEMP_SUFFIX)}


class _GatedSyncfs:
    """A syncfs that records which temp files exist when it starts and can be held shut."""

    def __init__(self, root: Path, real: object) -> None:
        self.root, self.real = root, real
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.covered: set[str] = set()  # temp files closed before some syncfs began
        self.calls = 0
        self.fail_with: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.covered |= _temp_files(self.root)
        self.entered.set()
        self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        self.real(fd)  # type: ignore[operator]


@pytest.fixture
def gated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _GatedSyncfs:
    if group_sync.SYNCFS is None:
        pytest.skip("no syncfs(2) on this platform")
    syncfs = _GatedSyncfs(tmp_path / "blocks", group_sync.SYNCFS)
    monkeypatch.setattr(group_sync, "SYNCFS", syncfs)
    return syncfs


def test_staged_blocks_are_in_place_after_close(tmp_path: Path) -> None:
    store = FlatfsBlockstore(tmp_path / "blocks")
    data = _blocks(40)
    cids = [make_cid("raw", d) for d in data]
    stager = store.stager()
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(stager.stage, cids, data))
    stager.close()
    assert [store.get(c) for c in cids] == data
    assert not _temp_files(tmp_path)
    store.flush()
    store.close()


@needs_syncfs
def test_a_writer_never_waits_for_the_sync_round(tmp_path: Path, gated: _GatedSyncfs) -> None:
    store = FlatfsBlockstore(tmp_path / "blocks")
    data = _blocks(12)
    cids = [make_cid("raw", d) for d in data]
    gated.gate.clear()  # the first round cannot finish until we say so
    stager = store.stager()
    stager.stage(cids[0], data[0])
    assert gated.entered.wait(10)
    for cid, block in zip(cids[1:], data[1:]):  # all return while that round is held
        assert stager.stage(cid, block)
    assert not any(store.has(c) for c in cids[1:])  # written, not yet named
    gated.gate.set()
    stager.close()
    assert all(store.has(c) for c in cids)
    assert 2 <= gated.calls < len(data)  # the held round, then one for the rest (or a few)


@needs_syncfs
def test_no_block_is_named_before_a_sync_that_covers_it(tmp_path: Path, gated: _GatedSyncfs,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = FlatfsBlockstore(tmp_path / "blocks")
    named_early: list[str] = []
    real_replace = os.replace

    def checked_replace(src: str, dst: str) -> None:
        if Path(src).name.endswith(flatfs.TEMP_SUFFIX) and Path(src).name not in gated.covered:
            named_early.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(flatfs.os, "replace", checked_replace)
    data = _blocks(64)
    cids = [make_cid("raw", d) for d in data]
    stager = store.stager()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(stager.stage, cids, data))
    stager.close()
    assert named_early == []
    assert [store.get(c) for c in cids] == data


@needs_syncfs
def test_a_failed_round_fails_the_session_and_names_nothing(tmp_path: Path, gated: _GatedSyncfs) -> None:
    store = FlatfsBlockstore(tmp_path / "blocks")
    gated.fail_with = OSError(5, "Input/output error")
    data = _blocks(6)
    cids = [make_cid("raw", d) for d in data]
    stager = store.stager()
    for cid, block in zip(cids, data):
        stager.stage(cid, block)
    with pytest.raises(RepoError):
        stager.close()
    assert not any(store.has(c) for c in cids)
    assert not _temp_files(tmp_path)
    gated.fail_with = None  # the store itself stays usable: a new session succeeds
    again = store.stager()
    for cid, block in zip(cids, data):
        again.stage(cid, block)
    again.close()
    assert all(store.has(c) for c in cids)


@needs_syncfs
def test_a_block_staged_by_two_sessions_is_written_once_and_both_learn_the_outcome(
        tmp_path: Path, gated: _GatedSyncfs, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FlatfsBlockstore(tmp_path / "blocks")
    writes: list[str] = []
    real_create = flatfs.create_file

    def counting_create(path: str, data: object, **kw: object) -> None:
        writes.append(path)
        real_create(path, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(flatfs, "create_file", counting_create)
    block = _blocks(1)[0]
    cid = make_cid("raw", block)
    gated.gate.clear()
    gated.fail_with = OSError(5, "Input/output error")
    first, second = store.stager(), store.stager()
    assert first.stage(cid, block) is True
    assert gated.entered.wait(10)  # its round is under way, held: the entry is still open
    assert second.stage(cid, block) is False  # shares the first one's entry
    gated.gate.set()
    with pytest.raises(RepoError):
        first.close()
    with pytest.raises(RepoError):
        second.close()
    assert len(writes) == 1
    assert not store.has(cid)


def test_an_existing_block_is_not_written_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FlatfsBlockstore(tmp_path / "blocks")
    block = _blocks(1)[0]
    cid = make_cid("raw", block)
    store.put_trusted(cid, block)
    monkeypatch.setattr(flatfs, "create_file", lambda *a, **k: pytest.fail("wrote an existing block"))
    stager = store.stager()
    assert stager.stage(cid, block) is False
    stager.close()
    assert store.get(cid) == block


@needs_syncfs
def test_the_backlog_of_unnamed_blocks_is_bounded(tmp_path: Path, gated: _GatedSyncfs,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stager_mod, "MAX_STAGED", 3)
    store = FlatfsBlockstore(tmp_path / "blocks")
    longest = [0]

    class Watched(list):  # type: ignore[type-arg]
        def append(self, item: object) -> None:
            super().append(item)
            longest[0] = max(longest[0], len(self))

    store._staging._staged = Watched()
    data = _blocks(30)
    cids = [make_cid("raw", d) for d in data]
    stager = store.stager()
    gated.gate.clear()
    releaser = threading.Timer(0.2, gated.gate.set)  # hold the first round while writers pile up
    releaser.start()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(stager.stage, cids, data))
    stager.close()
    releaser.join()
    assert all(store.has(c) for c in cids)
    assert longest[0] <= 3


def test_disk_full_while_staging_raises_at_once(tiny_tmpfs: Path) -> None:
    store = FlatfsBlockstore(tiny_tmpfs / "blocks")
    big = os.urandom(3 * 1024 * 1024)
    big_cid = make_cid("raw", big)
    stager = store.stager()
    with pytest.raises(StorageFull):
        stager.stage(big_cid, big)
    with pytest.raises(StorageFull):  # and the session remembers it failed
        stager.close()
    assert not store.has(big_cid)
    assert list((tiny_tmpfs / "blocks").rglob("*.tmp")) == []


def test_the_namer_thread_stops_when_idle_and_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stager_mod, "NAMER_IDLE_S", 0.01)
    store = FlatfsBlockstore(tmp_path / "blocks")
    for round_ in range(2):
        data = _blocks(3, tag=f"r{round_}-")
        stager = store.stager()
        for d in data:
            stager.stage(make_cid("raw", d), d)
        stager.close()
        assert all(store.has(make_cid("raw", d)) for d in data)
        namer = store._staging._namer
        if namer is not None:
            namer.join(10)
        assert store._staging._namer is None or not store._staging._namer.is_alive()


@needs_syncfs
def test_a_block_written_for_a_round_gets_one_even_if_the_sync_fd_goes_away(
        tmp_path: Path, gated: _GatedSyncfs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a staged file still needs a sync is decided when it is written:
    a store closed meanwhile (sync fd dropped) must not name it unsynced."""
    synced: list[str] = []
    monkeypatch.setattr(flatfs.os, "sync", lambda: synced.append("sync"))
    store = FlatfsBlockstore(tmp_path / "blocks")
    first, second = _blocks(2)
    stager = store.stager()
    gated.gate.clear()
    stager.stage(make_cid("raw", first), first)
    assert gated.entered.wait(10)  # the first round is held inside syncfs
    stager.stage(make_cid("raw", second), second)  # written without fsync: the next round covers it
    store._group.fd = None  # as close() would leave it
    gated.gate.set()
    stager.close()
    assert synced == ["sync"]  # the second round fell back to sync(2) instead of skipping
    assert store.has(make_cid("raw", second))
