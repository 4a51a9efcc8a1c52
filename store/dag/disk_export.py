"""Write a UnixFS DAG out as files and directories: `export_to_path`.

Decompression bombs: a few KB of blocks can declare a tree of 2^30 entries
(one directory linked many times from its parent, level after level) or a
file of a PiB. So an export first plans (`plan_export`): it walks each
distinct directory once, memoizing its totals, and refuses the export before
writing anything if the tree holds more entries than the caller's budget,
more bytes than `max_size`, or more bytes (or inodes) than the destination's
file system has free. Long walks check a `CancelFlag` between blocks, and a
refused, failed or cancelled export removes the files and directories it
created.

Files are written durably (shoal.store.persist.durable: temp file beside
the target, fsync, rename), and every directory that got a new name is
fsync'd once the tree is written, so a crash never leaves a partial file
under its real name.

Modes: files are written with the UnixFS mode of their root node when the
DAG records one, else 0666, and directories likewise (0777), both masked by
the umask (the caller's: a node passes the client's), as `cp` and `tar` do.

Laned export (`filler`): a caller that has other processes to move bytes
(the node's lanes, shoal.p2p.exchange.laned) passes a `LeafFiller`. A file
made of a dag-pb tree then goes to the same durable temp file, sized with
ftruncate, but its raw leaves are not read here: this module reads only the
inner nodes (`exporter.file_layout`: offsets and sizes, checked), writes
the bytes inner nodes carry themselves, and hands the (leaf, offset) list
to `filler.fill(temp path, leaves)`, which returns once every leaf is in
the file; then fsync and rename as always. Up to `FILL_FILES` files of a
tree are filled at once (the next file's leaves are on their way while one
file's last leaves and its fsync finish). Files that are one raw block are
written here from `source` as before.

Reading the DAG (stat, byte ranges, listings) is shoal.store.dag.exporter.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat as stat_mod
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from shoal.store.cancel import CancelFlag
from shoal.store.dag.exporter import (
    DEFAULT_MAX_ENTRIES, ExportRefused, Inline, Leaf, Source, _decode_pb, _dir_links, _getter, _key, _stat_block,
    file_layout, read_file,
)
from shoal.store.errors import InvalidInput, MalformedBlock, StorageFull
from shoal.store.ipld.cid import CID
from shoal.store.persist.direct_io import DirectWriter
from shoal.store.persist.durable import durable_file, durable_temp, fsync_dir

__all__ = ["ExportPlan", "plan_export", "export_to_path", "current_umask", "LeafFiller", "FILL_FILES"]

# Files of one tree filled at once through a `LeafFiller`: two, so that while
# one file's last leaves land and it is fsync'd, the next one's are already
# on their way (the lanes never idle between files); more would only spread
# the same lanes over more half-written files.
FILL_FILES = 2


class LeafFiller(Protocol):
    """Puts the raw leaves of a file into a temp file the export created (see the module doc)."""

    def fill(self, path: str, leaves: Iterable[Leaf], cancel: CancelFlag | None) -> None:
        """Return once each leaf's verified bytes are at `leaf.offset` of the existing file `path`.

        `leaves` is consumed lazily (it reads inner nodes as it goes) and may
        list a leaf at several offsets. Raise MalformedBlock if a leaf's block
        does not hold `leaf.size` bytes, any StoreError/P2P error if a leaf
        cannot be had, Cancelled once `cancel` is set. Thread-safe: up to
        `FILL_FILES` files of an export are filled at once. Nothing may be
        written into `path` after `fill` returned or raised (a write in
        flight when it raised may still land: the file is deleted then).
        """


@dataclass(frozen=True)
class ExportPlan:
    """What exporting a CID would write: `entries` files and directories
    (the root included) holding `bytes` file bytes, as the DAG declares."""

    entries: int
    bytes: int



def plan_export(source: Source, cid: CID, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                cancel: CancelFlag | None = None, root_block: bytes | None = None) -> ExportPlan:
    """Count what exporting `cid` would write, reading each distinct directory once.

    Why: a directory linked k times from its parent, nested n levels, is n
    blocks that export to k^n entries; memoizing each directory's totals by
    block makes the count cost the distinct blocks, so the export can be
    refused before it writes anything. Reads every directory block and the
    root block of every distinct entry (file contents are not read; their
    sizes are checked against the data later, as they are written).
    ExportRefused past `max_entries` (counting links listed, so the walk
    itself is bounded too); MalformedBlock for a directory inside itself.
    `root_block`: the root's bytes if the caller has them already.
    """
    get = _cached_root(_getter(source), cid, root_block)
    totals: dict[tuple[int, bytes], tuple[int, int]] = {}
    on_path: set[tuple[int, bytes]] = set()
    listed = 0
    stack: list[tuple[CID, list[CID] | None]] = [(cid, None)]
    while stack:
        if cancel is not None:
            cancel.check()
        current, children = stack.pop()
        key = _key(current)
        if children is not None:  # every child is counted: total this directory
            entries = 1 + sum(totals[_key(c)][0] for c in children)
            size = sum(totals[_key(c)][1] for c in children)
            if entries > max_entries:
                raise ExportRefused(f"{cid} would write {entries} files and directories "
                                    f"(the limit is {max_entries})")
            totals[key] = (entries, size)
            on_path.discard(key)
            continue
        if key in totals:
            continue
        block = get(current)
        st = _stat_block(current, block)
        if st.kind == "symlink":
            raise InvalidInput(f"{current}: UnixFS symlinks are not exported")
        if st.kind != "dir":
            totals[key] = (1, st.size or 0)
            continue
        node, fs = _decode_pb(current, block)
        kids = [child for _, child in _dir_links(get, current, node, fs, cancel)]
        listed += len(kids)
        if listed > max_entries:
            raise ExportRefused(f"{cid} lists more than {max_entries} directory entries")
        on_path.add(key)
        stack.append((current, kids))
        for child in kids:
            child_key = _key(child)
            if child_key in on_path:
                raise MalformedBlock(f"{current}: directory contains itself ({child})")
            if child_key not in totals:
                stack.append((child, None))
    return ExportPlan(*totals[_key(cid)])


def current_umask() -> int:
    """This process's umask, read without changing it (other threads may be creating files)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read, briefly racy
    os.umask(mask)
    return mask


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path if path.is_dir() else path.parent


def _check_space(cid: CID, plan: ExportPlan, dest: Path) -> None:
    where = _existing_ancestor(dest)
    try:
        free = shutil.disk_usage(where).free
        vfs = os.statvfs(where)
    except OSError:
        return  # cannot tell: the writes themselves will say ENOSPC
    short = None
    if plan.bytes > free:
        short = StorageFull(f"{cid} declares {plan.bytes} bytes but {where} has only {free} bytes free")
    elif vfs.f_files and plan.entries > vfs.f_favail:
        short = StorageFull(f"{cid} declares {plan.entries} files and directories "
                            f"but {where} has only {vfs.f_favail} free inodes")
    if short is not None:
        # The destination's disk, not the repo's: unpinning would not help.
        short.hint = f"free space on the disk that holds {where}, or write the object to another disk"
        raise short


def export_to_path(source: Source, cid: CID, dest: Path | str, *, prefetch: int = 0,
                   max_size: int | None = None, max_entries: int = DEFAULT_MAX_ENTRIES,
                   cancel: CancelFlag | None = None, umask: int | None = None,
                   filler: LeafFiller | None = None) -> ExportPlan:
    """Write the file or directory tree at `cid` to `dest`; return its plan.

    Planned first (`plan_export`): refused with ExportRefused (over
    `max_size` bytes or `max_entries` entries) or StorageFull (more than
    the destination's free space or inodes) before anything is written.
    Files are written to a temp file beside their destination and renamed
    into place, so a crash never leaves a partial file under its real name.
    An existing file at `dest` is replaced; directories are created or
    merged into. On any failure (cancel included) the files and directories
    this export created are removed again. `prefetch`: as in `read_file`
    (a thread-safe source). `umask`: masks the modes (default: this
    process's). `filler`: raw leaves of dag-pb files are written by it, not
    read from `source` (see the module doc).
    """
    dest = Path(dest)
    root_block = _getter(source)(cid)  # read once for the plan and the walk
    plan = plan_export(source, cid, max_entries=max_entries, cancel=cancel, root_block=root_block)
    if max_size is not None and plan.bytes > max_size:
        raise ExportRefused(f"{cid} holds {plan.bytes} bytes, more than the limit of {max_size}")
    _check_space(cid, plan, dest)
    mask = current_umask() if umask is None else umask
    created: list[Path] = []
    try:
        _export_tree(source, cid, dest, prefetch, cancel, mask, created, root_block, filler)
    except BaseException:
        _remove_created(created)
        raise
    return plan


def _cached_root(get: Callable[[CID], bytes], root: CID, block: bytes | None) -> Callable[[CID], bytes]:
    if block is None:
        return get
    key = _key(root)
    return lambda cid: block if _key(cid) == key else get(cid)


def _export_tree(source: Source, cid: CID, dest: Path, prefetch: int, cancel: CancelFlag | None,
                 mask: int, created: list[Path], root_block: bytes, filler: LeafFiller | None = None) -> None:
    dir_modes: list[tuple[Path, int]] = []
    dirty: set[Path] = set()  # directories whose new names must be made durable
    if filler is None:
        _walk_tree(source, cid, dest, prefetch, cancel, mask, created, root_block, dir_modes, dirty, None)
    else:
        files = _FilePipeline(filler, cancel, created, dirty)
        try:
            _walk_tree(source, cid, dest, prefetch, cancel, mask, created, root_block, dir_modes, dirty, files)
            files.finish()
        finally:
            files.close()
    # The files' and new directories' names, durable before the modes are
    # set (a directory may become unreadable, and fsync needs to open it).
    dirty.update(p.parent for p in created)
    try:
        for directory in sorted(dirty, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(directory)
    except OSError as exc:
        raise InvalidInput(f"cannot write {dest}: {exc.strerror or exc}") from None
    for path, mode in reversed(dir_modes):  # last: a read-only directory is filled first
        os.chmod(path, mode)


def _walk_tree(source: Source, cid: CID, dest: Path, prefetch: int, cancel: CancelFlag | None,
               mask: int, created: list[Path], root_block: bytes, dir_modes: list[tuple[Path, int]],
               dirty: set[Path], files: "_FilePipeline | None") -> None:
    get = _cached_root(_getter(source), cid, root_block)
    stack: list[tuple[CID, Path]] = [(cid, dest)]
    while stack:
        if cancel is not None:
            cancel.check()
        node_cid, path = stack.pop()
        block = get(node_cid)
        st = _stat_block(node_cid, block)
        if st.kind == "symlink":
            raise InvalidInput(f"{path}: UnixFS symlinks are not exported")
        if st.kind in ("file", "raw"):
            _make_dirs(path.parent, created, mask)
            existed = os.path.lexists(path)
            mode = _file_mode(st.mode, 0o666, mask)
            if files is not None and st.kind == "file":
                files.submit(functools.partial(_fill_file, source, node_cid, block, st.size or 0, path,
                                               files.filler, mode=mode), path, existed)
                continue
            _write_file(source, node_cid, path, prefetch, cancel=cancel, mode=mode)
            dirty.add(path.parent)
            if not existed:  # a file replaced stays replaced: only new ones are undone
                created.append(path)
            continue
        node, fs = _decode_pb(node_cid, block)
        _make_dirs(path, created, mask)
        if st.mode is not None:
            dir_modes.append((path, _file_mode(st.mode, 0o777, mask)))
        children = [(c, path / name) for name, c in _dir_links(get, node_cid, node, fs, cancel)]
        stack.extend(reversed(children))


def _file_mode(recorded: int | None, default: int, mask: int) -> int:
    """Permission bits only: a DAG may not make setuid files or sticky dirs."""
    return ((default if recorded is None else recorded) & 0o777) & ~mask


def _make_dirs(path: Path, created: list[Path], mask: int) -> None:
    missing = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for p in reversed(missing):
        try:
            p.mkdir()
            os.chmod(p, 0o777 & ~mask)  # the caller's umask, not this process's (a node's)
        except FileExistsError:
            if not p.is_dir():
                raise InvalidInput(f"cannot create {p}: a file is in the way") from None
            continue
        except OSError as exc:
            raise InvalidInput(f"cannot create {p}: {exc.strerror or exc}") from None
        created.append(p)


def _remove_created(created: list[Path]) -> None:
    """Undo an export: newest first, so each directory is empty when its turn comes."""
    for path in reversed(created):
        try:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o700)
                path.rmdir()
            else:
                path.unlink()
        except OSError:
            pass


def _write_file(source: Source, cid: CID, path: Path, prefetch: int = 0, *,
                cancel: CancelFlag | None = None, mode: int = 0o644) -> None:
    """Write one file through a temp file beside it (persist.durable); the
    caller fsyncs its directory once the whole tree is written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with durable_file(path, mode=stat_mod.S_IMODE(mode), sync_dir=False,
                          prefix=".shoal-", suffix=".part") as f:
            # Staged in 4 MiB aligned runs and written past the page cache
            # (shoal.store.persist.direct_io: the fsync on close waits for the disk anyway).
            writer = DirectWriter(f.fileno())
            for piece in read_file(source, cid, prefetch=prefetch):
                if cancel is not None:
                    cancel.check()
                writer.write(piece)
            writer.close_tail()
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None


def _fill_file(source: Source, cid: CID, root_block: bytes, size: int, path: Path, filler: LeafFiller, cancel: CancelFlag, *,
               mode: int) -> None:
    """Write one dag-pb file through a temp file the filler puts its raw leaves into.

    The temp file is owner-writable until filled (the filler may open it by
    name from another process), then gets its real mode before the fsync.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with durable_temp(path, mode=stat_mod.S_IMODE(mode) | 0o600, sync_dir=False,
                          prefix=".shoal-", suffix=".part") as (f, tmp):
            fd = f.fileno()
            os.ftruncate(fd, size)

            def leaves() -> Iterator[Leaf]:
                for piece in file_layout(source, cid, cancel, root_block=root_block):
                    if isinstance(piece, Inline):
                        _pwrite_all(fd, piece.data, piece.offset)
                    else:
                        yield piece

            filler.fill(str(tmp), leaves(), cancel)
            cancel.check()
            got = os.fstat(fd).st_size
            if got != size:  # a leaf longer than its parent said, written past the end
                raise MalformedBlock(f"{cid}: the file's leaves hold {got} bytes, its root says {size}")
            os.fchmod(fd, stat_mod.S_IMODE(mode))
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class _LinkedFlag(CancelFlag):
    """Set by itself (a sibling file failed) or through the export's own flag."""

    __slots__ = ("_parent",)

    def __init__(self, parent: CancelFlag | None) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or (self._parent is not None and self._parent.is_set())

    def check(self) -> None:
        if self._parent is not None:
            self._parent.check()
        super().check()


class _FilePipeline:
    """Fills up to `FILL_FILES` files of a tree at once, in worker threads.

    Files settle (recorded as created, their directory as dirty) in the
    order they were submitted; the first failure stops the others (their
    flag is set) and is raised once every thread has returned, so the undo
    sees every file that got its name.
    """

    def __init__(self, filler: LeafFiller, cancel: CancelFlag | None, created: list[Path],
                 dirty: set[Path]) -> None:
        self.filler = filler
        self._flag = _LinkedFlag(cancel)
        self._created = created
        self._dirty = dirty
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future[None], Path, bool]] = deque()

    def submit(self, work: Callable[[CancelFlag], None], path: Path, existed: bool) -> None:
        while len(self._pending) >= FILL_FILES:
            self._settle()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(FILL_FILES, thread_name_prefix="shoal-fill")
        self._pending.append((self._pool.submit(work, self._flag), path, existed))

    def _settle(self) -> None:
        fut, path, existed = self._pending.popleft()
        try:
            fut.result()
        except BaseException:
            self._flag.set("another file of this export failed")
            raise
        self._dirty.add(path.parent)
        if not existed:  # a file replaced stays replaced: only new ones are undone
            self._created.append(path)

    def finish(self) -> None:
        while self._pending:
            self._settle()

    def close(self) -> None:
        """Stop and wait for what is still running (after a failure); record what got its name."""
        if self._pending:
            self._flag.set("another file of this export failed")
        while self._pending:
            try:
                self._settle()
            except BaseException:
                pass
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
