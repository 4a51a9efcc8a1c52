"""shoal.store.persist.direct_io: bulk writes past the page cache, with a buffered fallback.

What must hold whatever happens: the file ends up with exactly the bytes
written, in order. What we also check: aligned runs really go out with
O_DIRECT set on the fd where the file system allows it, and every way the
direct path can be refused (fcntl, write, a short write) falls back to
buffered writes without losing or duplicating a byte.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.persist import direct_io
from shoal.store.persist.direct_io import (
    ALIGN, MIN_DIRECT_BYTES, STAGING_BYTES, DirectWriter, write_file_bytes,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this platform")


def _payload(n: int, seed: int = 1) -> bytes:
    return bytes((i * 131 + seed) % 251 for i in range(n))


def _new_fd(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def _fs_takes_direct(directory: Path) -> bool:
    probe = directory / "probe"
    fd = _new_fd(probe)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


class _WriteLog:
    """Wraps os.write: records (length, O_DIRECT set?) for every call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, bool]] = []
        real = os.write

        def write(fd: int, data: Any) -> int:
            direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
            n = real(fd, data)
            self.calls.append((n, direct))
            return n

        monkeypatch.setattr(direct_io.os, "write", write)


@pytest.fixture(autouse=True)
def _direct_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_io, "ENABLED", True)


def _write_pieces(path: Path, pieces: list[bytes]) -> DirectWriter:
    fd = _new_fd(path)
    try:
        writer = DirectWriter(fd)
        for piece in pieces:
            writer.write(piece)
        writer.close_tail()
        os.fsync(fd)
    finally:
        os.close(fd)
    return writer


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 2 * STAGING_BYTES + 3 * ALIGN + 17), cuts=st.lists(st.integers(0, 10**9), max_size=8))
def test_bytes_round_trip_whatever_the_piece_sizes(tmp_path_factory: pytest.TempPathFactory, size: int,
                                                   cuts: list[int]) -> None:
    data = _payload(size, seed=size % 7)
    bounds = sorted({c % (size + 1) for c in cuts} | {0, size})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    path = tmp_path_factory.mktemp("dio") / "f"
    _write_pieces(path, pieces)
    assert path.read_bytes() == data


def test_aligned_runs_go_out_with_o_direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _fs_takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    log = _WriteLog(monkeypatch)
    size = STAGING_BYTES + 5 * ALIGN + 123  # one full staging run, an aligned rest, a tail
    data = _payload(size)
    writer = _write_pieces(tmp_path / "f", [data[:1000], data[1000:]])
    assert (tmp_path / "f").read_bytes() == data
    direct_bytes = sum(n for n, d in log.calls if d)
    buffered = [(n, d) for n, d in log.calls if not d]
    assert direct_bytes == size - 123  # everything but the unaligned tail
    assert buffered == [(123, False)]
    assert all(n % ALIGN == 0 for n, d in log.calls if d)
    assert not writer.direct  # the tail cleared O_DIRECT


def test_block_sized_file_written_direct_small_file_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _fs_takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    log = _WriteLog(monkeypatch)
    big, small = _payload(1 << 20), _payload(MIN_DIRECT_BYTES - 1)
    for name, data in (("big", big), ("small", small)):
        fd = _new_fd(tmp_path / name)
        try:
            write_file_bytes(fd, data)
        finally:
            os.close(fd)
        assert (tmp_path / name).read_bytes() == data
    assert log.calls[0] == (1 << 20, True)
    assert log.calls[1:] == [(MIN_DIRECT_BYTES - 1, False)]


def test_env_switch_turns_direct_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_io, "ENABLED", False)
    log = _WriteLog(monkeypatch)
    data = _payload(2 * STAGING_BYTES)
    _write_pieces(tmp_path / "f", [data])
    assert (tmp_path / "f").read_bytes() == data
    assert log.calls and not any(d for _, d in log.calls)


def test_fcntl_refusal_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fcntl.fcntl

    def refusing(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "no O_DIRECT here")
        return real(fd, cmd, arg)

    monkeypatch.setattr(direct_io.fcntl, "fcntl", refusing)
    data = _payload(STAGING_BYTES + 999)
    writer = _write_pieces(tmp_path / "f", [data])
    assert not writer.direct
    assert (tmp_path / "f").read_bytes() == data


def _trip_first_direct_write(monkeypatch: pytest.MonkeyPatch, failure: str) -> dict[str, bool]:
    """Make the first O_DIRECT write fail ("einval") or take an unaligned part
    of the run ("short_unaligned"); `state["tripped"]` says it happened."""
    real = os.write
    state = {"tripped": False}

    def flaky(fd: int, data: Any) -> int:
        direct = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
        if direct and not state["tripped"]:
            state["tripped"] = True
            if failure == "einval":
                raise OSError(errno.EINVAL, "refused")
            return _short(fd, data)
        return real(fd, data)

    def _short(fd: int, data: Any) -> int:
        # Simulate a device that took an unaligned part of the run: write
        # that much buffered (O_DIRECT would refuse it) and report it.
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        n = real(fd, memoryview(data)[: ALIGN + 100])
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        return n

    monkeypatch.setattr(direct_io.os, "write", flaky)
    return state


@pytest.mark.parametrize("failure", ["einval", "short_unaligned"])
def test_write_refusal_or_short_write_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  failure: str) -> None:
    """A file system that accepts the flag but refuses (or half-does) the write."""
    if not _fs_takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    state = _trip_first_direct_write(monkeypatch, failure)
    data = _payload(2 * STAGING_BYTES + 3 * ALIGN + 5)
    writer = _write_pieces(tmp_path / "f", [data[:77], data[77:]])
    assert state["tripped"]
    assert not writer.direct
    assert (tmp_path / "f").read_bytes() == data


def test_other_write_errors_propagate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC is not a refusal of O_DIRECT: it must reach the caller."""
    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_io.os, "write", full)
    fd = _new_fd(tmp_path / "f")
    try:
        with pytest.raises(OSError) as info:
            write_file_bytes(fd, _payload(1 << 20))
    finally:
        os.close(fd)
    assert info.value.errno == errno.ENOSPC


def test_tmpfs_round_trip(tiny_tmpfs: Path) -> None:
    """tmpfs may refuse O_DIRECT (older kernels) or take it: either way the bytes land."""
    data = _payload(1 << 20)
    fd = _new_fd(tiny_tmpfs / "f")
    try:
        write_file_bytes(fd, data)
    finally:
        os.close(fd)
    assert (tiny_tmpfs / "f").read_bytes() == data


# -- create_file: aligned buffers go straight from memory ----------------------------


def _aligned_copy(data: bytes) -> memoryview:
    """`data` in a page-aligned, writable buffer (as the importer's read slots are)."""
    import mmap

    buf = mmap.mmap(-1, max(len(data), 1))
    buf[: len(data)] = data
    return memoryview(buf)[: len(data)]


def test_is_aligned_only_for_aligned_writable_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _payload(1 << 20)
    view = _aligned_copy(data)
    assert direct_io.is_aligned(view)
    assert not direct_io.is_aligned(data)  # bytes: the payload sits inside a heap object
    assert not direct_io.is_aligned(view[ALIGN // 2 : ALIGN // 2 + (1 << 19)])  # address off
    assert not direct_io.is_aligned(view[: (1 << 20) - 100])  # length off
    assert not direct_io.is_aligned(view[: MIN_DIRECT_BYTES - ALIGN])  # too small to pay
    assert not direct_io.is_aligned(view.toreadonly())
    monkeypatch.setattr(direct_io, "ENABLED", False)
    assert not direct_io.is_aligned(view)


def test_create_file_writes_an_aligned_buffer_directly_in_one_call(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if not _fs_takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    log = _WriteLog(monkeypatch)
    data = _payload(1 << 20)
    direct_io.create_file(str(tmp_path / "aligned"), _aligned_copy(data), fsync=True)
    direct_io.create_file(str(tmp_path / "plain"), data, fsync=False)
    assert (tmp_path / "aligned").read_bytes() == data
    assert (tmp_path / "plain").read_bytes() == data
    assert log.calls[0] == (1 << 20, True)  # the aligned one: one direct write, no staging
    assert sum(n for n, _ in log.calls[1:]) == 1 << 20  # the bytes one: through the staging buffer
    assert (tmp_path / "aligned").stat().st_mode & 0o777 == 0o600


def test_create_file_refused_at_open_writes_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_direct_open(path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "no O_DIRECT here")
        return real_open(path, flags, mode)

    monkeypatch.setattr(direct_io.os, "open", no_direct_open)
    data = _payload(1 << 20, seed=3)
    direct_io.create_file(str(tmp_path / "f"), _aligned_copy(data), fsync=True)
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.parametrize("failure", ["einval", "short_unaligned"])
def test_create_file_refused_or_cut_short_at_write_finishes_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      failure: str) -> None:
    if not _fs_takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    state = _trip_first_direct_write(monkeypatch, failure)
    data = _payload(2 << 20, seed=5)
    direct_io.create_file(str(tmp_path / "f"), _aligned_copy(data), fsync=True)
    assert state["tripped"]
    assert (tmp_path / "f").read_bytes() == data


def test_create_file_leaves_nothing_on_failure_and_never_clobbers(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    existing = tmp_path / "taken"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        direct_io.create_file(str(existing), _payload(4096), fsync=False)
    assert existing.read_bytes() == b"keep me"

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_io.os, "write", full)
    with pytest.raises(OSError) as info:
        direct_io.create_file(str(tmp_path / "new"), _aligned_copy(_payload(1 << 20)), fsync=False)
    assert info.value.errno == errno.ENOSPC
    assert not (tmp_path / "new").exists()


class _PwriteLog:
    """Wraps os.pwrite: records (offset, length, O_DIRECT set?) for every call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int, bool]] = []
        real = os.pwrite

        def pwrite(fd: int, data: Any, offset: int) -> int:
            direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
            n = real(fd, data, offset)
            self.calls.append((offset, n, direct))
            return n

        monkeypatch.setattr(direct_io.os, "pwrite", pwrite)


def _sparse(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def test_create_file_staged_copy_of_any_length_goes_direct_but_its_tail(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane's block of unaligned length (a file's last leaf) in its staged
    copy: the whole pages straight from that memory, no staging copy, only
    the tail buffered."""
    if not _fs_takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    log = _WriteLog(monkeypatch)
    data = _payload((1 << 20) - 100)
    direct_io.create_file(str(tmp_path / "f"), direct_io.staged_copy(data), fsync=True)
    assert (tmp_path / "f").read_bytes() == data
    aligned = len(data) - len(data) % ALIGN
    assert log.calls == [(aligned, True), (len(data) - aligned, False)]


@pytest.mark.parametrize("offset", [0, 3 * ALIGN, ALIGN + 777, (1 << 20) - 5])
@pytest.mark.parametrize("size", [1 << 20, (1 << 20) - 100, 300 * 1024 + 1])
def test_pwrite_at_writes_whole_pages_direct_and_edges_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 offset: int, size: int) -> None:
    """The export's file, filled by a lane: exact bytes at the offset, the
    pages the block covers entirely with O_DIRECT, the partial edge pages
    buffered (a neighbouring leaf shares them), the rest of the file untouched."""
    if not _fs_takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    log = _PwriteLog(monkeypatch)
    total = offset + size + 3 * ALIGN
    path = _sparse(tmp_path / "out", total)
    data = _payload(size, seed=offset % 11)
    direct_io.pwrite_at(path, direct_io.staged_copy(data, offset % ALIGN), offset)
    got = Path(path).read_bytes()
    assert got[offset : offset + size] == data
    assert got[:offset] == bytes(offset) and got[offset + size :] == bytes(total - offset - size)
    lo, hi = -(-offset // ALIGN) * ALIGN, (offset + size) // ALIGN * ALIGN
    direct = [(o, n) for o, n, d in log.calls if d]
    assert direct == [(lo, hi - lo)]  # one write of every whole page
    buffered = sorted((o, n) for o, n, d in log.calls if not d and n)
    assert buffered == [(o, n) for o, n in ((offset, lo - offset), (hi, offset + size - hi)) if n]


def test_pwrite_at_plain_bytes_or_a_misplaced_copy_writes_buffered(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if not _fs_takes_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    log = _PwriteLog(monkeypatch)
    path = _sparse(tmp_path / "out", 4 << 20)
    data = _payload(1 << 20)
    direct_io.pwrite_at(path, data, ALIGN)  # bytes: no address to align
    direct_io.pwrite_at(path, direct_io.staged_copy(data, 0), (2 << 20) + 100)  # copy placed for another offset
    got = Path(path).read_bytes()
    assert got[ALIGN : ALIGN + (1 << 20)] == data
    assert got[(2 << 20) + 100 : (3 << 20) + 100] == data
    assert log.calls and not any(d for _, _, d in log.calls)


def test_pwrite_at_refused_direct_falls_back_without_losing_a_byte(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_direct_open(path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "no O_DIRECT here")
        return real_open(path, flags, mode)

    monkeypatch.setattr(direct_io.os, "open", no_direct_open)
    path = _sparse(tmp_path / "out", 3 << 20)
    data = _payload(1 << 20, seed=9)
    direct_io.pwrite_at(path, direct_io.staged_copy(data, 0), 1 << 20)
    assert Path(path).read_bytes()[1 << 20 : 2 << 20] == data


def test_staged_copy_is_placed_and_grows() -> None:
    import ctypes

    for shift in (0, 1, ALIGN - 1):
        data = _payload(STAGING_BYTES + 10, seed=shift)  # larger than the first buffer
        view = direct_io.staged_copy(data, shift)
        assert bytes(view) == data
        assert ctypes.addressof(ctypes.c_char.from_buffer(view)) % ALIGN == shift
    with pytest.raises(ValueError):
        direct_io.staged_copy(b"x", ALIGN)
