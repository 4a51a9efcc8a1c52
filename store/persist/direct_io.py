"""Bulk writes that go straight to the disk (O_DIRECT), past the page cache.

Why: every byte Shoal writes in bulk (block files, an exported file) must
be durable before Shoal reports success, so it is fsync'd (or syncfs'd)
right after the write anyway. A buffered write first copies the bytes into
freshly allocated page-cache pages and the sync then writes them out: the
copy, the page allocation and the cache pollution buy nothing, because the
caller waits for the disk regardless. With O_DIRECT the disk DMAs the bytes
from our buffer and no page cache is touched. The effect is large where
page allocation is expensive: on this project's 2-core Firecracker VM a
buffered write of 1 GiB into new pages costs ~2.5 CPU-seconds of kernel
time, an O_DIRECT write ~0.2 (bench/put.py and bench/transfer.py measure
both paths in the same run). A multi-GiB put also no longer evicts the
working set of whatever else the machine runs (e.g. the model being served).
Ceph's BlueStore makes the same split: direct writes, buffered reads; reads
here stay buffered, so the page cache still serves hot blocks to peers.

O_DIRECT wants the file offset, the length and the memory address aligned
(to the device's logical block size; `ALIGN` = 4 KiB covers every common
device). `DirectWriter` therefore stages bytes in a page-aligned anonymous
mmap and writes whole aligned runs directly; the unaligned tail of a file
is written buffered (after clearing O_DIRECT on the fd), which the caller's
fsync/syncfs makes durable like the rest. Where O_DIRECT is missing or
refused (non-Linux, tmpfs on older kernels, some FUSE or network file
systems: EINVAL) the writer falls back to plain writes for that file, so
callers never need to know. `SHOAL_DIRECT_IO=0` in the environment turns
the direct path off (for comparisons and for file systems that misbehave).

Durability is unchanged: the caller still fsyncs (or syncfs) before it
renames or reports; O_DIRECT only removes the page-cache detour.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading

ALIGN = 4096
# Below this a file is written buffered: for small blocks (dag-pb nodes,
# short tails) the syscall and alignment work cost more than the copy saved.
MIN_DIRECT_BYTES = 64 * 1024
# The staging buffer: one per thread, reused, so its pages are touched once.
STAGING_BYTES = 4 * 1024 * 1024

_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
_REFUSED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


def _enabled_by_env() -> bool:
    return os.environ.get("SHOAL_DIRECT_IO", "1").strip().lower() not in ("0", "false", "no", "off")


ENABLED: bool = _O_DIRECT != 0 and _enabled_by_env()

_local = threading.local()


def _staging() -> mmap.mmap:
    """This thread's page-aligned staging buffer (anonymous mmap, reused)."""
    buf: mmap.mmap | None = getattr(_local, "buf", None)
    if buf is None:
        buf = mmap.mmap(-1, STAGING_BYTES)
        _local.buf = buf
    return buf


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class DirectWriter:
    """Write a file front to back, aligned runs with O_DIRECT, the tail buffered.

    `fd` must be open for writing at offset 0 of an empty (new) file. Call
    `write` any number of times, then `close_tail()` once before fsync; the
    caller owns the fd (opens, fsyncs, closes it). Not thread-safe: one
    writer per file, each in its own thread (the staging buffer is per
    thread).
    """

    def __init__(self, fd: int, *, expected_size: int | None = None) -> None:
        self._fd = fd
        self._direct = ENABLED and (expected_size is None or expected_size >= MIN_DIRECT_BYTES)
        self._staged = 0  # bytes waiting in the staging buffer
        self._buf: mmap.mmap | None = None
        self._view: memoryview | None = None
        if self._direct:
            self._direct = self._set_direct(True)
            if self._direct:
                self._buf = _staging()
                self._view = memoryview(self._buf)

    @property
    def direct(self) -> bool:
        """True while aligned runs still go straight to the disk."""
        return self._direct

    def _set_direct(self, on: bool) -> bool:
        try:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            flags = flags | _O_DIRECT if on else flags & ~_O_DIRECT
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags)
        except OSError as exc:
            if on and exc.errno in _REFUSED:
                return False
            raise
        return on

    def _fall_back(self) -> None:
        """Buffered from here on (for the rest of this file)."""
        self._set_direct(False)
        self._direct = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._direct:
            _write_all(self._fd, data)
            return
        assert self._view is not None
        src = memoryview(data).cast("B")
        while src:
            take = min(len(src), STAGING_BYTES - self._staged)
            self._view[self._staged : self._staged + take] = src[:take]
            self._staged += take
            src = src[take:]
            if self._staged == STAGING_BYTES:
                self._flush_aligned()
                if not self._direct:  # fell back: the rest goes buffered
                    _write_all(self._fd, src)
                    return

    def _flush_aligned(self) -> None:
        """Write the aligned front of the staging buffer directly; keep the rest."""
        assert self._view is not None
        aligned = self._staged - self._staged % ALIGN
        done = 0
        try:
            while done < aligned:
                written = os.write(self._fd, self._view[done:aligned])
                done += written
                if written % ALIGN:  # a short, unaligned write: finish buffered
                    break
        except OSError as exc:
            if exc.errno not in _REFUSED or done % ALIGN:
                raise
        if done < aligned:
            self._fall_back()
            _write_all(self._fd, self._view[done : self._staged])
            self._staged = 0
            return
        rest = self._staged - aligned
        if rest:
            self._view[:rest] = self._view[aligned : self._staged]
        self._staged = rest

    def close_tail(self) -> None:
        """Write what is still staged: the aligned part directly, the tail buffered."""
        if not self._direct or self._staged == 0:
            self._release()
            return
        self._flush_aligned()
        if self._staged:
            assert self._view is not None
            if self._direct:
                self._fall_back()  # the tail is not aligned: O_DIRECT would refuse it
            _write_all(self._fd, self._view[: self._staged])
            self._staged = 0
        self._release()

    def _release(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        self._buf = None


def write_file_bytes(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of `data` to a new, empty file's `fd` (directly where that pays)."""
    writer = DirectWriter(fd, expected_size=len(data))
    writer.write(data)
    writer.close_tail()


def is_aligned(data: bytes | bytearray | memoryview) -> bool:
    """True if `data` can go to the disk with O_DIRECT as it is, with no staging copy.

    That needs O_DIRECT enabled, at least `MIN_DIRECT_BYTES`, a length that
    is a multiple of `ALIGN` and a start address that is one too. Only a
    writable buffer can tell its address without a copy (ctypes
    `from_buffer`); `bytes` never qualify, and need not: their payload sits
    32 bytes into a heap object. The importer reads fixed-size chunks into
    page-aligned mmap slots precisely so that this holds for them.
    """
    if not ENABLED or len(data) < MIN_DIRECT_BYTES or len(data) % ALIGN:
        return False
    if isinstance(data, bytes):
        return False
    import ctypes

    try:
        view = memoryview(data)
        if view.readonly or not view.c_contiguous:
            return False
        return ctypes.addressof(ctypes.c_char.from_buffer(view)) % ALIGN == 0
    except (TypeError, ValueError, BufferError):
        return False


def _address(data: bytes | bytearray | memoryview) -> int | None:
    """The start address of a writable contiguous buffer, or None if it cannot be told without a copy."""
    if isinstance(data, bytes):
        return None
    import ctypes

    try:
        view = memoryview(data)
        if view.readonly or not view.c_contiguous or not len(view):
            return None
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError, BufferError):
        return None


def _direct_head(data: bytes | bytearray | memoryview) -> bool:
    """True if `data` starts page-aligned in memory and its aligned front is
    worth an O_DIRECT write (the unaligned tail then goes buffered)."""
    if not ENABLED or len(data) - len(data) % ALIGN < MIN_DIRECT_BYTES:
        return False
    address = _address(data)
    return address is not None and address % ALIGN == 0


def staged_copy(data: bytes | bytearray | memoryview, shift: int = 0) -> memoryview:
    """`data` copied into this thread's page-aligned copy buffer, `shift` bytes past a page boundary.

    For a writer that sends the same bytes to several places with O_DIRECT
    (a lane: the export's file and the block file): one copy into memory the
    disk can DMA from, instead of a staging copy per file plus the page
    cache's. With `shift` = the file offset modulo `ALIGN`, each byte sits
    at the same offset within its page as it will in the file, which is
    what `pwrite_at` needs for the aligned pages. The view is valid until
    this thread's next `staged_copy` (a separate buffer from DirectWriter's).
    """
    if not 0 <= shift < ALIGN:
        raise ValueError(f"shift must be in [0, {ALIGN}), not {shift}")
    need = shift + len(data)
    buf: mmap.mmap | None = getattr(_local, "copy_buf", None)
    if buf is None or len(buf) < need:  # (an old one is unmapped once its last view is gone)
        buf = mmap.mmap(-1, max(STAGING_BYTES, -(-need // ALIGN) * ALIGN))
        _local.copy_buf = buf
    view = memoryview(buf)[shift:need]
    view[:] = memoryview(data).cast("B")
    return view


def pwrite_at(path: str, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` of the existing file `path`, its whole pages with O_DIRECT.

    The pages `data` covers entirely go straight to the disk when `data`'s
    address has the same offset within a page as `offset` (a `staged_copy`
    with `shift = offset % ALIGN`); the partial pages at either edge, which
    a neighbouring write may share, are written buffered, as is everything
    when O_DIRECT is off, refused, or the aligned part is too small to pay.
    Another process writing other ranges of the same file at the same time
    is fine: an O_DIRECT write only ever covers pages no other range touches.
    The caller makes the file durable (fsync) as for a buffered write.
    """
    view = memoryview(data).cast("B")
    end = offset + len(view)
    lo = -(-offset // ALIGN) * ALIGN
    hi = end - end % ALIGN
    done_lo, done_hi = lo, lo  # the direct part written: [lo, done_hi)
    if ENABLED and hi - lo >= MIN_DIRECT_BYTES:
        address = _address(view)
        if address is not None and address % ALIGN == offset % ALIGN:
            done_hi = _pwrite_direct(path, view[lo - offset : hi - offset], lo)
    flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if done_hi == done_lo:  # nothing went direct: one buffered write
            _pwrite_all(fd, view, offset)
            return
        _pwrite_all(fd, view[: done_lo - offset], offset)
        _pwrite_all(fd, view[done_hi - offset :], done_hi)
    finally:
        os.close(fd)


def _pwrite_direct(path: str, view: memoryview, offset: int) -> int:
    """O_DIRECT pwrite of an aligned run; the file offset it got to (short of
    the end if the file system refused or wrote a partial page)."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | _O_DIRECT)
    except OSError as exc:
        if exc.errno in _REFUSED:
            return offset
        raise
    pos = 0
    try:
        while pos < len(view):
            written = os.pwrite(fd, view[pos:], offset + pos)
            pos += written
            if written % ALIGN or not written:
                pos -= written % ALIGN  # rewrite the partial page buffered (same bytes)
                break
    except OSError as exc:
        if exc.errno not in _REFUSED:
            raise
    finally:
        os.close(fd)
    return offset + pos


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def create_file(path: str, data: bytes | bytearray | memoryview, *, fsync: bool, mode: int = 0o600) -> None:
    """Create `path` (which must not exist: O_EXCL), write all of `data`, fsync it if asked.

    A buffer that starts page-aligned in memory (`is_aligned`, or a
    `staged_copy` at shift 0 of any length) is written straight from memory
    with O_DIRECT set at open: no staging copy; an unaligned tail is then
    written buffered. Any other buffer goes through `write_file_bytes`. A
    file system that refuses O_DIRECT at open or at the first write gets a
    plain write instead. FileExistsError (a name collision) is left to the
    caller; after any other failure the file is removed and the error raised.
    """
    direct = _direct_head(data)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | (_O_DIRECT if direct else 0), mode)
    except OSError as exc:
        if not direct or exc.errno not in _REFUSED:
            raise
        direct = False
        fd = os.open(path, flags, mode)
    try:
        if direct:
            _write_direct_from(fd, memoryview(data).cast("B"))
        else:
            write_file_bytes(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)


def _write_direct_from(fd: int, view: memoryview) -> None:
    """Write an aligned buffer on an O_DIRECT fd; finish buffered if refused or cut short."""
    done = 0
    aligned = len(view) - len(view) % ALIGN  # O_DIRECT takes whole pages; the tail goes buffered
    try:
        while done < aligned:
            written = os.write(fd, view[done:aligned])
            done += written
            if written % ALIGN:  # a short, unaligned write: the rest cannot go direct
                break
    except OSError as exc:
        if exc.errno not in _REFUSED or done % ALIGN:
            raise
    if done < len(view):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
        _write_all(fd, view[done:])
