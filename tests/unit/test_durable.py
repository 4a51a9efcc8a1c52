"""shoal.store.persist.durable: temp -> fsync -> rename -> fsync dir, and nothing left on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shoal.store.persist import durable


def _spy_fsync(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Record every fsync as (what the fd is, whether it is a directory)."""
    calls: list[tuple[str, bool]] = []
    real = os.fsync

    def spy(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        calls.append((target, stat.S_ISDIR(os.fstat(fd).st_mode)))
        real(fd)

    monkeypatch.setattr(durable.os, "fsync", spy)
    return calls


def test_write_durably_fsyncs_file_then_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_fsync(monkeypatch)
    target = tmp_path / "config.toml"
    durable.write_durably(target, b"new")
    assert target.read_bytes() == b"new"
    # The data before the rename, the directory after it: the name is durable too.
    assert [is_dir for _, is_dir in calls] == [False, True]
    assert calls[1][0] == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_replaces_and_applies_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    durable.write_durably(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    durable.write_durably(target, b"newer")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_failure_while_writing_leaves_old_content_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "api"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with durable.durable_file(target) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api"]


def test_failing_fsync_leaves_no_temp_and_no_new_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(durable.os, "fsync", broken)
    with pytest.raises(OSError):
        durable.write_durably(tmp_path / "x", b"data")
    assert list(tmp_path.iterdir()) == []


def test_failing_rename_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable.os, "replace", broken)
    with pytest.raises(OSError):
        durable.write_durably(tmp_path / "x", b"data")
    assert list(tmp_path.iterdir()) == []


def test_no_overwrite_keeps_the_winner(tmp_path: Path) -> None:
    target = tmp_path / "identity.key"
    durable.write_durably(target, b"first", overwrite=False)
    with pytest.raises(FileExistsError):
        durable.write_durably(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]


def test_temp_name_and_publish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temp file sits beside the target under `<name>.*.tmp` (what the repo's cleanups look for);
    `publish` fsyncs the directory after the rename."""
    seen: list[str] = []
    with durable.durable_file(tmp_path / "abc.leaves") as f:
        seen = [p.name for p in tmp_path.iterdir()]
        f.write(b"x")
    assert len(seen) == 1 and seen[0].startswith("abc.leaves.") and seen[0].endswith(".tmp")
    calls = _spy_fsync(monkeypatch)
    tmp = tmp_path / "t.tmp"
    tmp.write_bytes(b"y")
    durable.publish(tmp, tmp_path / "y")
    assert (tmp_path / "y").read_bytes() == b"y" and not tmp.exists()
    assert calls == [(str(tmp_path), True)]


def test_fsync_dir_tolerates_einval_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def einval(fd: int) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(durable.os, "fsync", einval)
    durable.fsync_dir(tmp_path)  # a filesystem that cannot fsync directories

    def eio(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(durable.os, "fsync", eio)
    with pytest.raises(OSError):
        durable.fsync_dir(tmp_path)


def test_no_overwrite_without_hard_links_still_keeps_the_winner(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """On a filesystem without hard links (vfat, some FUSE: link() fails with
    EPERM) `overwrite=False` used to fall back to a plain rename, replacing an
    existing file (an identity key!) after all."""
    target = tmp_path / "identity.key"
    target.write_bytes(b"first")

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(durable.os, "link", no_links)
    with pytest.raises(FileExistsError):
        durable.write_durably(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]
    fresh = tmp_path / "other.key"
    durable.write_durably(fresh, b"new", overwrite=False)  # the fallback still creates a new file
    assert fresh.read_bytes() == b"new"


def test_a_missing_directory_is_reported_under_the_path_asked_for(tmp_path: Path) -> None:
    """The temp file's hidden name (`.x.car.k2j3.partial`) is no name the user
    typed: an error creating it names the target instead."""
    target = tmp_path / "no-such-dir" / "x.car"
    with pytest.raises(FileNotFoundError) as info:
        durable.write_durably(target, b"data")
    assert info.value.filename == str(target)
