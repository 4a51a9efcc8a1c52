"""FlatfsBlockstore specifics: layout, corruption, temp files, disk full."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from shoal.store.persist import flatfs
from shoal.store.ipld.cid import block_key, make_cid
from shoal.store.errors import HashMismatch, RepoError, StorageFull
from shoal.store.persist.flatfs import SHARDING_RULE, FlatfsBlockstore, cid_for_key, shard_of


def test_layout_matches_kubo_flatfs(tmp_path: Path) -> None:
    bs = FlatfsBlockstore(tmp_path / "blocks")
    data = b"layout"
    cid = make_cid("raw", data)
    bs.put(cid, data)
    key = block_key(cid)
    assert key.startswith("CIQ")  # base32 of 0x12 0x20 …, as in kubo's blocks/
    assert (tmp_path / "blocks" / key[-3:-1] / f"{key}.data").read_bytes() == data
    assert (tmp_path / "blocks" / "SHARDING").read_text() == SHARDING_RULE + "\n"


def test_shard_rule() -> None:
    assert shard_of("CIQABCDEFXYZ") == "XY"
    assert shard_of("A") == "__"


def test_cid_for_key_roundtrip() -> None:
    cid = make_cid("dag-pb", b"x")
    assert block_key(cid_for_key(block_key(cid))) == block_key(cid)
    with pytest.raises(RepoError):
        cid_for_key("not base32!")


def test_foreign_sharding_refused(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    root.mkdir()
    (root / "SHARDING").write_text("/repo/flatfs/shard/v1/prefix/2\n")
    with pytest.raises(RepoError, match="shard rule"):
        FlatfsBlockstore(root)


def test_reopen_sees_blocks(tmp_path: Path) -> None:
    cid = make_cid("raw", b"persist")
    FlatfsBlockstore(tmp_path / "b").put(cid, b"persist")
    assert FlatfsBlockstore(tmp_path / "b").get(cid) == b"persist"


def test_corrupt_file_detected(tmp_path: Path) -> None:
    bs = FlatfsBlockstore(tmp_path / "blocks")
    good, bad = make_cid("raw", b"good"), make_cid("raw", b"bad!")
    bs.put(good, b"good")
    bs.put(bad, b"bad!")
    path = tmp_path / "blocks" / shard_of(block_key(bad)) / f"{block_key(bad)}.data"
    path.write_bytes(b"bit rot")
    with pytest.raises(HashMismatch):
        bs.get(bad)
    assert dict(bs.verify_all()) == {block_key(good): True, block_key(bad): False}


def test_truncated_file_detected(tmp_path: Path) -> None:
    bs = FlatfsBlockstore(tmp_path / "blocks")
    data = os.urandom(5000)
    cid = make_cid("raw", data)
    bs.put(cid, data)
    path = tmp_path / "blocks" / shard_of(block_key(cid)) / f"{block_key(cid)}.data"
    os.truncate(path, 100)
    with pytest.raises(HashMismatch):
        bs.get(cid)


def test_temp_files_ignored_and_cleaned(tmp_path: Path) -> None:
    bs = FlatfsBlockstore(tmp_path / "blocks")
    cid = make_cid("raw", b"real")
    bs.put(cid, b"real")
    shard = tmp_path / "blocks" / shard_of(block_key(cid))
    leftover = shard / f"{block_key(cid)}.abc123.tmp"
    leftover.write_bytes(b"half a blo")
    assert list(bs.keys()) == [block_key(cid)]
    assert [k for k, _ in bs.verify_all()] == [block_key(cid)]
    assert bs.cleanup_temp() == 1
    assert not leftover.exists()
    assert bs.get(cid) == b"real"


def test_flush_syncs_dirty_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    real = flatfs.fsync_dir

    def spy(path: Path) -> None:
        synced.append(Path(path))
        real(path)

    monkeypatch.setattr(flatfs, "fsync_dir", spy)
    bs = FlatfsBlockstore(tmp_path / "blocks")
    cid = make_cid("raw", b"durable")
    bs.put(cid, b"durable")
    shard_dir = tmp_path / "blocks" / shard_of(block_key(cid))
    assert shard_dir not in synced  # the rename's directory sync is deferred…
    bs.flush()
    assert shard_dir in synced  # …to flush
    synced.clear()
    bs.flush()
    assert synced == []


def test_a_block_another_process_wrote_is_flushed_once_noted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane (another process, its own instance) renames a block into place;
    the node's instance fsyncs that shard and <root> at its next flush only
    once told of it (issue 15: the index must never refer to a block whose
    name a power cut could take)."""
    synced: list[Path] = []
    real = flatfs.fsync_dir

    def spy(path: Path) -> None:
        synced.append(Path(path))
        real(path)

    node = FlatfsBlockstore(tmp_path / "blocks")
    lane = FlatfsBlockstore(tmp_path / "blocks")
    cid = make_cid("raw", b"from a lane")
    lane.put(cid, b"from a lane")
    monkeypatch.setattr(flatfs, "fsync_dir", spy)
    node.flush()
    assert synced == []  # the node's instance knows nothing of it
    node.note_written(cid)
    node.flush()
    assert tmp_path / "blocks" / shard_of(block_key(cid)) in synced
    assert tmp_path / "blocks" in synced  # the shard itself may be new on disk
    assert node.get(cid) == b"from a lane"


def _fail_writes(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    real_write = os.write
    calls = {"n": 0}

    def write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:10])  # a short write, then failure
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("err,exc", [(errno.ENOSPC, StorageFull), (errno.EIO, RepoError)])
def test_write_error_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, exc: type) -> None:
    bs = FlatfsBlockstore(tmp_path / "blocks")
    data = os.urandom(4096)
    cid = make_cid("raw", data)
    _fail_writes(monkeypatch, err)
    with pytest.raises(exc):
        bs.put(cid, data)
    monkeypatch.undo()
    assert not bs.has(cid)
    leftovers = [p for p in (tmp_path / "blocks").rglob("*") if p.is_file() and p.name != "SHARDING"]
    assert leftovers == []


def test_real_enospc(tiny_tmpfs: Path) -> None:
    bs = FlatfsBlockstore(tiny_tmpfs / "blocks")
    small = os.urandom(1000)
    bs.put(make_cid("raw", small), small)
    big = os.urandom(3 * 1024 * 1024)
    big_cid = make_cid("raw", big)
    with pytest.raises(StorageFull):
        bs.put(big_cid, big)
    assert not bs.has(big_cid)
    assert list((tiny_tmpfs / "blocks").rglob("*.tmp")) == []
    assert all(ok for _, ok in bs.verify_all())
