"""Directory trees into UnixFS directories: walking, symlinks, sharding.

What `import_path` does with a directory (the rules are in the
shoal.store.dag.importer docstring): entries in name-byte order, symlinks
followed (or refused with `follow_symlinks=False`), loops refused, a file
or directory reached twice imported once and linked twice, each file with
its own chunker when a PerFileChunker picks one, and the one place that
chooses a flat or a HAMT-sharded directory (`build_directory`, from the JS
importer's size estimate). `deferred_full_gc` keeps full garbage
collections from pausing the process while a large tree imports.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat as stat_mod
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from shoal.store.chunking.chunker import Chunker, FixedChunker
from shoal.store.chunking.choice import PerFileChunker
from shoal.store.chunking.profiles import Profile
from shoal.store.dag.dag_writer import DIR_DATA, EMPTY_DIR_BLOCK, ByteSink, DagNode, DagWriter, PieceHasher
from shoal.store.dag.file_stream import Progress, import_stream
from shoal.store.errors import InvalidInput
from shoal.store.ipld import dagpb, varint

__all__ = ["TreeContext", "deferred_full_gc", "estimated_directory_size", "build_directory"]


_gc_lock = threading.Lock()
_gc_deferrals = 0
_gc_saved_threshold: tuple[int, int, int] = (0, 0, 0)
_NO_FULL_GC = 1 << 30


@contextlib.contextmanager
def deferred_full_gc() -> Iterator[None]:
    """No full (generation 2) garbage collection while a directory imports.

    A tree of 100k files keeps an entry per file (and HAMT buckets) alive
    until its directory nodes are built. Each full collection walks every
    tracked object with the GIL held, so those collections grow with the
    import and stop every other thread for as long: 0.3-0.6 s pauses of a
    node's event loop during a large put. They cannot free the import's own
    objects anyway (all live), so they are deferred until no import runs;
    young collections (cheap, bounded) still run, and the import's objects
    are freed by reference counting when it returns. Process-wide, counted,
    so overlapping imports restore the threshold only when the last ends.
    """
    global _gc_deferrals, _gc_saved_threshold
    with _gc_lock:
        if _gc_deferrals == 0:
            _gc_saved_threshold = gc.get_threshold()
            gc.set_threshold(_gc_saved_threshold[0], _gc_saved_threshold[1], _NO_FULL_GC)
        _gc_deferrals += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_deferrals -= 1
            if _gc_deferrals == 0:
                gc.set_threshold(*_gc_saved_threshold)


@dataclass
class TreeContext:
    writer: DagWriter
    chunker: "Chunker | PerFileChunker"
    fixed: FixedChunker
    pool: ThreadPoolExecutor
    in_flight: int
    progress: Progress | None
    follow_symlinks: bool = True
    # (st_dev, st_ino) of the directories being imported, root to here: a
    # followed symlink to one of them is a loop.
    on_path: set[tuple[int, int]] = field(default_factory=set)
    # Files and directories already imported, by inode: reached again through
    # another symlink (or a hard link), they are linked, not read again.
    done: dict[tuple[int, int], DagNode] = field(default_factory=dict)

    def _chunker_for(self, path: Path) -> Chunker:
        if isinstance(self.chunker, PerFileChunker):
            return self.chunker.for_file(path) or self.fixed
        return self.chunker

    def file(self, path: Path, builder: "ByteSink | PieceHasher | None" = None) -> DagNode:
        chunker = self._chunker_for(path)
        try:
            with open(path, "rb") as f:
                return import_stream(f, self.writer, chunker, self.pool,
                                      self.in_flight, self.progress, builder)
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None

    def directory(self, path: Path) -> DagNode:
        try:
            with os.scandir(path) as it:
                dirents = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise InvalidInput(f"cannot list {path}: {exc.strerror or exc}") from None
        entries: list[tuple[bytes, DagNode]] = []
        for ent in dirents:
            child = Path(ent.path)
            if ent.is_symlink() and not self.follow_symlinks:
                raise InvalidInput(f"{child} is a symlink and --no-follow was given "
                                   "(drop --no-follow to import what it points to)")
            try:
                st = ent.stat(follow_symlinks=True)
            except OSError as exc:
                raise InvalidInput(f"{child}: broken symlink or unreadable entry "
                                   f"({exc.strerror or exc})") from None
            key = (st.st_dev, st.st_ino)
            node = self.done.get(key)
            if node is None:
                if stat_mod.S_ISDIR(st.st_mode):
                    if key in self.on_path:
                        raise InvalidInput(f"{child} is a symlink loop: it points to "
                                           f"{os.path.realpath(child)}, a directory that contains it")
                    self.on_path.add(key)
                    try:
                        node = self.directory(child)
                    finally:
                        self.on_path.discard(key)
                elif stat_mod.S_ISREG(st.st_mode):
                    node = self.file(child)
                else:
                    raise InvalidInput(f"{child} is not a regular file or directory")
                self.done[key] = node
            entries.append((os.fsencode(ent.name), node))
        return build_directory(self.writer, entries)


def _split_strategy(profile: Profile) -> str:
    """How the JS importer measures a directory for sharding, per profile."""
    explicit = getattr(profile, "shard_split_strategy", None)
    if isinstance(explicit, str):
        return explicit
    return "links-bytes" if profile.cid_version == 0 else "block-bytes"


def estimated_directory_size(entries: list[tuple[bytes, DagNode]], profile: Profile) -> int:
    """The largest size the JS importer's running estimate reaches for this directory.

    The JS importer checks the shard threshold after every entry it adds,
    and once sharded a directory stays sharded. Fed the usual way (each
    directory entry before its contents, in name order), a subdirectory
    first enters as an *empty* directory link, then is replaced by an
    unflushed directory that counts zero until the end. So the peak is the
    larger of the final sum (files and empty directories) and, for each
    non-empty subdirectory, the sum before it plus its empty-directory link.
    'links-bytes' (v0 profile) counts name + CID bytes per link;
    'block-bytes' (2025 profile) the exact serialized node size.
    """
    links_bytes = _split_strategy(profile) == "links-bytes"

    def cost(name: bytes, cid_len: int, tsize: int) -> int:
        if links_bytes:
            return len(name) + cid_len
        return dagpb.link_size(len(name), cid_len, tsize)

    running = 0 if links_bytes else 1 + len(varint.encode(len(DIR_DATA))) + len(DIR_DATA)
    peak = running
    for name, child in entries:
        if child.kind == "dir":
            peak = max(peak, running + cost(name, len(child.cid_bytes), len(EMPTY_DIR_BLOCK)))
        else:
            running += cost(name, len(child.cid_bytes), child.tsize)
    return max(peak, running)


def build_directory(writer: DagWriter, entries: list[tuple[bytes, DagNode]]) -> DagNode:
    """The single place that chooses a flat or a sharded (HAMT) directory."""
    if estimated_directory_size(entries, writer.profile) > writer.profile.hamt_threshold_bytes:
        return writer.sharded_directory(entries)
    return writer.directory(entries)
