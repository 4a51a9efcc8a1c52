"""Build UnixFS DAGs from files and directory trees, streaming.

The layout is exactly that of `ipfs-unixfs-importer` 17.1.1 with the
balanced layout, so the same bytes and profile give the same root CID:

- leaves are raw blocks (`raw_leaves`) or dag-pb nodes holding a UnixFS File
  with the chunk as Data;
- leaves are grouped `max_links` at a time under a UnixFS File parent whose
  blocksizes are the file bytes below each link and whose links have an
  empty name and Tsize = cumulative block bytes below; the parents are
  grouped again the same way until one node is left;
- a file of at most one chunk is that chunk's leaf (the empty file is the
  leaf of the empty chunk); in deeper trees a lone leaf still gets a parent;
- a directory is a UnixFS Directory whose links are sorted by name bytes.

Streaming: the chunker yields one chunk at a time; leaves are hashed and
stored in a thread pool (hashlib releases the GIL on big buffers) with at
most `2 * workers` chunks in flight, consumed in order; each tree level
holds at most `max_links` pending child summaries. Peak memory is therefore
bounded by chunk size * in-flight count, whatever the file size. `workers`
is one per core, or the store's staging `concurrency` if larger (flatfs: 8,
whose writers never wait for a sync round; see shoal.store.persist.flatfs "Staging").
Blocks are stored through the store's staging session, closed before the
import returns: every block is in place then, or the import raises.

Fixed-size chunks of a regular stream are read into a ring of page-aligned
buffers (`_pooled_chunks`) rather than fresh `bytes`: hashed and written to
the disk (O_DIRECT) from where the read put them, with no allocation and no
staging copy per chunk.

Symlinks inside an imported directory are followed by default (files and
directories; kubo's `--dereference-symlinks`): a Hugging Face cache snapshot
(`models--org--name/snapshots/<commit>/`) is nothing but symlinks into
`../../blobs/`, and a model folder must import as the files it shows. The
entry keeps the symlink's name and gets the target's content. Loop-safe: a
symlink to a directory on the current path (an ancestor, or itself) is
refused with InvalidInput, and a directory or file reached twice (two
symlinks to one target, hard links) is imported once and linked twice, so a
tree of symlinks fanning out to shared targets costs its distinct inodes,
not its expansion. A dangling symlink is refused. With
`follow_symlinks=False` (`put --no-follow`) any symlink inside the tree is
refused, as storing UnixFS symlinks would export links that point
anywhere. A symlink given as the top-level path itself is always followed,
since the user named it.

Chunkers per file: `chunker` may be a `shoal.store.chunking.chunker.PerFileChunker`
("auto", the CLI's default), which picks the tensor-aware chunker for each
file that parses as safetensors and the profile's fixed chunker for every
other file, so those keep the CIDs `ipfs add` gives.

A directory whose node the JS importer would shard (its size estimate
passes the profile's `hamt_threshold_bytes`) becomes a UnixFS HAMT built by
`shoal.store.ipld.hamt`; the one call site is `_build_directory`.

Storage commitment in the same pass (opt-in, one file): given a `builder`,
either
- a `ByteSink` (anything with `update(bytes)`, e.g. a
  `shoal.store.proofs.commitment.MerkleBuilder`): the importer hands it every chunk in file
  order on the reading thread, right after handing the chunk to a worker; or
- a `PieceHasher` (shoal.store.proofs.piece_hashers): for raw leaves of exactly its
  piece size, the importer reads the chunks into the hasher's shared ring
  and takes each leaf's digest from it instead of hashing the chunk itself,
  so each byte is hashed once for both the CID and the commitment.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import mmap
import os
import stat as stat_mod
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple, Protocol, runtime_checkable

from shoal.store.ipld import dagpb, unixfs, varint
from shoal.store.persist.blockstore import Blockstore
from shoal.store.chunking.chunker import Chunker, FixedChunker
from shoal.store.chunking.choice import PerFileChunker
from shoal.store.persist.direct_io import ALIGN
from shoal.store.ipld.cid import (
    CID, DAG_PB, RAW, DAG_PB_CODE, RAW_CODE, cid_for_digest, cid_from_bytes,
)
from shoal.store.errors import InvalidInput
from shoal.store.chunking.profiles import DEFAULT_PROFILE, Profile
from shoal.store.proofs.commitment import Commitment

__all__ = ["ImportResult", "import_file", "import_path", "import_bytes", "ByteSink", "PieceHasher",
           "pieces_apply"]


class ByteSink(Protocol):
    """What a same-pass commitment builder needs from the importer."""

    def update(self, data: bytes | memoryview) -> object: ...


@runtime_checkable
class PieceHasher(Protocol):
    """Hashes whole chunks read into its own buffer (see the module docstring)."""

    piece_size: int

    def ring(self, slots: int) -> mmap.mmap: ...

    def digest(self, index: int, chunk: memoryview) -> bytes: ...


def pieces_apply(profile: Profile, chunker: Chunker | None, piece_size: int) -> bool:
    """True if a file imported this way can be hashed by a `PieceHasher`:
    raw leaves, the plain fixed-size chunker, chunks of exactly one piece."""
    chunker = chunker or FixedChunker(profile.chunk_size)
    return (profile.raw_leaves and type(chunker) is FixedChunker and chunker.size == piece_size
            and piece_size % ALIGN == 0)


Progress = Callable[[int], None]

# Chunks smaller than this are hashed inline: a thread hop costs more.
_INLINE_HASH_BELOW = 64 * 1024
_DIR_DATA = unixfs.encode(unixfs.UnixFSData(unixfs.DataType.DIRECTORY))
_EMPTY_DIR_BLOCK = dagpb.encode(dagpb.PBNode((), _DIR_DATA))


@dataclass(frozen=True)
class ImportResult:
    """What an import produced.

    `size` is the file bytes imported (summed over a tree); `tsize` the
    root's cumulative block bytes (IPFS Tsize: a repeated block counts each
    time it occurs in the DAG); `blocks` the DAG's nodes counted the same way.
    """

    cid: CID
    size: int
    tsize: int
    blocks: int
    commitment: Commitment | None = None  # set by Repo.add(..., commit=True) for a file
    # The block keys of the DAG (block_key of every node), as written: the
    # repo records them as the pin's block set without walking the DAG again.
    keys: frozenset[str] = frozenset()


class _Node(NamedTuple):
    """A finished subtree, all its parent needs to link to it.

    A tuple of plain values, not a dataclass holding a CID object: an import
    of 100k files keeps one per file (and a block key per block) until the
    end. The garbage collector stops tracking a tuple of atomic values (so
    full collections skip it) but never an object like a CID; tracked, they
    made every full collection walk all of them while holding the GIL: 0.3 s pauses that stalled a node's event loop
    during a large put (issue 12 item 15).
    """

    cid_bytes: bytes
    tsize: int  # cumulative block bytes below and including this node
    content: int  # file bytes below (a parent's blocksize for it)
    blocks: int
    kind: str = "file"  # "file", "dir" (has entries) or "emptydir"

    @property
    def cid(self) -> CID:
        return cid_from_bytes(self.cid_bytes)


def _key_of(digest: bytes) -> str:
    """`block_key` of a sha2-256 CID, from its digest (no CID object needed)."""
    return base64.b32encode(b"\x12\x20" + digest).decode().rstrip("=")


def _maker(codec: str, version: int) -> Callable[[bytes], CID]:
    return lambda digest: cid_for_digest(codec, digest, version)


def _cid_bytes(codec_code: int, version: int, digest: bytes) -> bytes:
    if version == 0:
        return b"\x12\x20" + digest
    return b"\x01" + varint.encode(codec_code) + b"\x12\x20" + digest


def file_leaf_block(chunk: bytes | memoryview) -> bytes:
    """dag-pb leaf holding `chunk` as a UnixFS File, built with one copy.

    Equal to dagpb.encode(PBNode(data=unixfs.encode(File, data=chunk))),
    which the unit tests check.
    """
    n = len(chunk)
    if n == 0:
        inner_head, inner_tail = b"\x08\x02", b"\x18\x00"
    else:
        inner_head = b"\x08\x02\x12" + varint.encode(n)
        inner_tail = b"\x18" + varint.encode(n)
    inner_len = len(inner_head) + n + len(inner_tail)
    return b"".join((b"\x0a", varint.encode(inner_len), inner_head, chunk, inner_tail))


class _DagWriter:
    """Encodes, hashes and stores the blocks of one profile's DAGs.

    Blocks go through the store's staging session (`Blockstore.stager`):
    they may still be settling when `leaf` returns; `close` waits for them
    and raises if any failed, so a returned import has every block in place.
    """

    def __init__(self, blockstore: Blockstore, profile: Profile) -> None:
        self.blockstore = blockstore
        self.stager = blockstore.stager()
        self._stage = self.stager.stage
        self.profile = profile
        self.raw_leaves = profile.raw_leaves
        self._raw_cid = _maker(RAW, 1)
        self._pb_cid = _maker(DAG_PB, profile.cid_version)
        self.written: list[str] = []  # key of every block stored (or found stored); appended from worker threads

    def close(self, failed: bool = False) -> None:
        """Wait until every block staged is in place; raise the first failure
        unless the import has `failed` already (then its error is the one to report)."""
        try:
            self.stager.close()
        except Exception:
            if not failed:
                raise

    def leaf(self, chunk: bytes | memoryview, index: int = -1, hasher: PieceHasher | None = None) -> _Node:
        """Hash and store one chunk's leaf; safe to call from worker threads.

        With a `hasher`, chunk `index` of the file is a view of its ring and
        the hasher gives the digest. Keeps no reference to `chunk` (it may
        be a reused read buffer)."""
        if self.raw_leaves:
            if hasher is not None:
                digest = hasher.digest(index, chunk)  # type: ignore[arg-type]
            else:
                digest = hashlib.sha256(chunk).digest()
            self._stage(self._raw_cid(digest), chunk)
            self.written.append(_key_of(digest))
            return _Node(_cid_bytes(RAW_CODE, 1, digest), len(chunk), len(chunk), 1)
        block = file_leaf_block(chunk)
        return self._store_pb(block, len(chunk), 0, 1)

    def _store_pb(self, block: bytes, content: int, below: int, blocks: int,
                  kind: str = "file") -> _Node:
        digest = hashlib.sha256(block).digest()
        self._stage(self._pb_cid(digest), block)
        self.written.append(_key_of(digest))
        version = self.profile.cid_version
        return _Node(_cid_bytes(DAG_PB_CODE, version, digest),
                     len(block) + below, content, blocks, kind)

    def file_parent(self, children: list[_Node]) -> _Node:
        """A UnixFS File node over `children` (zero-byte children dropped, as JS does)."""
        kept = [c for c in children if c.content > 0]
        sizes = tuple(c.content for c in kept)
        data = unixfs.encode(unixfs.UnixFSData(unixfs.DataType.FILE, blocksizes=sizes))
        links = tuple(dagpb.PBLink(c.cid_bytes, "", c.tsize) for c in kept)
        block = dagpb.encode(dagpb.PBNode(links, data))
        return self._store_pb(block, sum(sizes), sum(c.tsize for c in kept),
                              1 + sum(c.blocks for c in kept))

    def directory(self, entries: list[tuple[bytes, _Node]]) -> _Node:
        """A flat UnixFS Directory; `entries` must be sorted by name bytes."""
        links = tuple(dagpb.PBLink(c.cid_bytes, name.decode("utf-8", "surrogateescape"), c.tsize)
                      for name, c in entries)
        block = dagpb.encode(dagpb.PBNode(links, _DIR_DATA))
        return self._store_pb(block, sum(c.content for _, c in entries),
                              sum(c.tsize for _, c in entries),
                              1 + sum(c.blocks for _, c in entries),
                              "dir" if entries else "emptydir")

    def sharded_directory(self, entries: list[tuple[bytes, _Node]]) -> _Node:
        """A UnixFS HAMT-sharded directory (shoal.store.ipld.hamt), as the JS importer shards it."""
        from shoal.store.ipld import hamt

        written: list[_Node] = []

        def store(block: bytes) -> bytes:
            written.append(self._store_pb(block, 0, 0, 1))
            return written[-1].cid_bytes

        built = hamt.build((hamt.HamtEntry(name, c.cid_bytes, c.tsize) for name, c in entries),
                           store, self.profile.hamt_fanout)
        root = written[-1]  # shards are written children first, the root last
        return _Node(root.cid_bytes, built.tsize, sum(c.content for _, c in entries),
                     built.nodes + sum(c.blocks for _, c in entries), "dir")


class _Balanced:
    """Streaming form of the JS balanced layout: one pending list per level."""

    def __init__(self, max_links: int, make_parent: Callable[[list[_Node]], _Node]) -> None:
        if max_links < 2:
            raise InvalidInput("max_links must be at least 2")
        self.max_links = max_links
        self.make_parent = make_parent
        self.levels: list[list[_Node]] = [[]]

    def add(self, node: _Node, level: int = 0) -> None:
        while True:
            if level == len(self.levels):
                self.levels.append([])
            pending = self.levels[level]
            pending.append(node)
            if len(pending) < self.max_links:
                return
            node = self.make_parent(pending)
            self.levels[level] = []
            level += 1

    def finish(self) -> _Node:
        """Close every level; a level that ends with one node and nothing above is the root."""
        level = 0
        while True:
            pending = self.levels[level]
            top = level == len(self.levels) - 1
            if top and len(pending) == 1:
                return pending[0]
            if pending:
                node = self.make_parent(pending)
                self.levels[level] = []
                if top:
                    return node
                self.levels[level + 1].append(node)
            level += 1


def _leaves(chunks: Iterable[bytes | memoryview], writer: _DagWriter, pool: ThreadPoolExecutor | None,
            in_flight: int, builder: ByteSink | None = None,
            hasher: PieceHasher | None = None) -> Iterator[_Node]:
    """Leaves in chunk order, hashed concurrently with bounded look-ahead;
    `builder`, if given, gets each chunk in order as it is read; `hasher`,
    if given, hashes them (chunks from its ring)."""
    pending: deque[Future[_Node]] = deque()
    any_chunk = False
    index = 0
    try:
        for chunk in chunks:
            if not chunk:
                continue  # chunkers should not yield these; they add nothing
            any_chunk = True
            if pool is None or len(chunk) < _INLINE_HASH_BELOW:
                done: Future[_Node] = Future()
                done.set_result(writer.leaf(chunk, index, hasher))
                pending.append(done)
            else:
                pending.append(pool.submit(writer.leaf, chunk, index, hasher))
            index += 1
            if builder is not None:
                builder.update(chunk)  # after the submit: the worker starts on the chunk meanwhile
            while len(pending) >= in_flight or (pending and pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        if not any_chunk:
            yield writer.leaf(b"")  # the empty file is the leaf of the empty chunk
    finally:
        for fut in pending:
            fut.cancel()


def _pooled_chunks(stream: BinaryIO, size: int, slots: int,
                   ring: mmap.mmap | None = None) -> Iterator[memoryview]:
    """Fixed-size chunks read straight into a ring of `slots` page-aligned buffers.

    Why: a chunk read into a fresh `bytes` costs an allocation (page faults
    on this VM's fresh pages) and, for an O_DIRECT block write, a copy into
    an aligned staging buffer. Read into an mmap slot instead, the chunk is
    hashed and written to the disk from where the read put it (one copy in
    all: the page cache's into the slot). The slot is reused `slots` chunks
    later, so the consumer must be done with a chunk by then: `_leaves`
    holds at most `in_flight - 1` chunks when it asks for the next one, and
    the caller passes `slots = in_flight + 1`. Nothing downstream may keep
    a chunk: the writer hashes it and the store writes it before returning,
    and a commitment builder (which might keep one) gets plain chunks instead.
    `ring`, if given, is the buffer to use (a `PieceHasher`'s shared one).
    """
    if ring is None:
        ring = mmap.mmap(-1, size * slots)
    views = [memoryview(ring)[i * size:(i + 1) * size] for i in range(slots)]
    readinto = stream.readinto  # type: ignore[attr-defined]
    turn = 0
    while True:
        view = views[turn]
        got = 0
        while got < size:
            n = readinto(view[got:])
            if not n:
                break
            got += n
        if not got:
            return
        yield view if got == size else view[:got]
        if got < size:
            return
        turn = (turn + 1) % slots


def _chunks_for(stream: BinaryIO, chunker: Chunker, in_flight: int, pooled: bool) -> Iterable[bytes | memoryview]:
    """The chunk stream: pooled aligned buffers for the plain fixed-size
    chunker on a readable stream (when `pooled`), else the chunker's own."""
    if (pooled and type(chunker) is FixedChunker and chunker.size % ALIGN == 0
            and hasattr(stream, "readinto")):
        return _pooled_chunks(stream, chunker.size, in_flight + 1)
    return chunker.chunks(stream)


def _import_stream(stream: BinaryIO, writer: _DagWriter, chunker: Chunker,
                   pool: ThreadPoolExecutor | None, in_flight: int,
                   progress: Progress | None, builder: "ByteSink | PieceHasher | None" = None) -> _Node:
    layout = _Balanced(writer.profile.max_links, writer.file_parent)
    hasher: PieceHasher | None = None
    sink: ByteSink | None = None
    if isinstance(builder, PieceHasher):
        hasher = builder
    else:
        sink = builder
    if hasher is not None:
        if not (pieces_apply(writer.profile, chunker, hasher.piece_size) and hasattr(stream, "readinto")):
            raise ValueError("a PieceHasher needs raw leaves of exactly its piece size from a readable file")
        chunks: Iterable[bytes | memoryview] = _pooled_chunks(
            stream, hasher.piece_size, in_flight + 1, hasher.ring(in_flight + 1))
    else:
        chunks = _chunks_for(stream, chunker, in_flight, pooled=pool is not None and sink is None)
    for leaf in _leaves(chunks, writer, pool, in_flight, sink, hasher):
        layout.add(leaf)
        if progress is not None:
            progress(leaf.content)
    return layout.finish()


def _workers(writer: _DagWriter) -> int:
    """Threads that hash and store leaves: one per core, or more if the store asks.

    A durable store spends part of a leaf's time waiting for the disk, not
    hashing; its staging session says how many writes to overlap.
    """
    cpu = max(1, min(8, os.cpu_count() or 1))
    wanted = getattr(writer.stager, "concurrency", 0)
    return max(cpu, min(64, wanted if isinstance(wanted, int) else 0))


def _result(node: _Node, writer: "_DagWriter") -> ImportResult:
    return ImportResult(node.cid, node.content, node.tsize, node.blocks,
                        keys=frozenset(writer.written))


def import_file(stream: BinaryIO, blockstore: Blockstore, profile: Profile = DEFAULT_PROFILE,
                chunker: Chunker | None = None, progress: Progress | None = None,
                builder: "ByteSink | PieceHasher | None" = None) -> ImportResult:
    """Import one byte stream as a UnixFS file; return its root.

    `progress(n)` is called with the number of bytes just processed (an
    increment, not a running total), in order, from the calling thread.
    `builder`, if given, is fed the file's bytes in the same pass (the
    caller finishes it); see the module docstring.
    """
    writer = _DagWriter(blockstore, profile)
    chunker = chunker or FixedChunker(profile.chunk_size)
    workers = _workers(writer)
    with _closing(writer), ThreadPoolExecutor(workers, thread_name_prefix="shoal-import") as pool:
        node = _import_stream(stream, writer, chunker, pool, 2 * workers, progress, builder)
    return _result(node, writer)


@contextlib.contextmanager
def _closing(writer: _DagWriter) -> Iterator[None]:
    """Close the writer's staging session on the way out, failed or not."""
    try:
        yield
    except BaseException:
        writer.close(failed=True)
        raise
    writer.close()


def import_bytes(data: bytes, blockstore: Blockstore, profile: Profile = DEFAULT_PROFILE,
                 chunker: Chunker | None = None) -> ImportResult:
    """Convenience for small in-memory payloads (tests, metadata)."""
    import io

    return import_file(io.BytesIO(data), blockstore, profile, chunker)


def import_path(path: Path | str, blockstore: Blockstore, profile: Profile = DEFAULT_PROFILE,
                chunker: "Chunker | PerFileChunker | None" = None, progress: Progress | None = None,
                builder: "ByteSink | PieceHasher | None" = None, *,
                follow_symlinks: bool = True) -> ImportResult:
    """Import a regular file or a directory tree (empty files and dirs included).

    `builder` (a regular file only; InvalidInput for a directory) is fed the
    file's bytes in the same pass, as in `import_file`. `chunker` may pick
    per file (PerFileChunker); `follow_symlinks`: see the module docstring.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    writer = _DagWriter(blockstore, profile)
    fixed = FixedChunker(profile.chunk_size)
    workers = _workers(writer)
    with _closing(writer), ThreadPoolExecutor(workers, thread_name_prefix="shoal-import") as pool:
        ctx = _TreeContext(writer, chunker or fixed, fixed, pool, 2 * workers, progress, follow_symlinks)
        if stat_mod.S_ISREG(st.st_mode):
            node = ctx.file(path, builder)
        elif builder is not None:
            raise InvalidInput(f"{path}: a commitment during import covers one regular file")
        elif stat_mod.S_ISDIR(st.st_mode):
            ctx.on_path.add((st.st_dev, st.st_ino))
            with deferred_full_gc():
                node = ctx.directory(path)
        else:
            raise InvalidInput(f"{path} is neither a regular file nor a directory")
    return _result(node, writer)


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
class _TreeContext:
    writer: _DagWriter
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
    done: dict[tuple[int, int], _Node] = field(default_factory=dict)

    def _chunker_for(self, path: Path) -> Chunker:
        if isinstance(self.chunker, PerFileChunker):
            return self.chunker.for_file(path) or self.fixed
        return self.chunker

    def file(self, path: Path, builder: "ByteSink | PieceHasher | None" = None) -> _Node:
        chunker = self._chunker_for(path)
        try:
            with open(path, "rb") as f:
                return _import_stream(f, self.writer, chunker, self.pool,
                                      self.in_flight, self.progress, builder)
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None

    def directory(self, path: Path) -> _Node:
        try:
            with os.scandir(path) as it:
                dirents = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise InvalidInput(f"cannot list {path}: {exc.strerror or exc}") from None
        entries: list[tuple[bytes, _Node]] = []
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
        return _build_directory(self.writer, entries)


def _split_strategy(profile: Profile) -> str:
    """How the JS importer measures a directory for sharding, per profile."""
    explicit = getattr(profile, "shard_split_strategy", None)
    if isinstance(explicit, str):
        return explicit
    return "links-bytes" if profile.cid_version == 0 else "block-bytes"


def estimated_directory_size(entries: list[tuple[bytes, _Node]], profile: Profile) -> int:
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

    running = 0 if links_bytes else 1 + len(varint.encode(len(_DIR_DATA))) + len(_DIR_DATA)
    peak = running
    for name, child in entries:
        if child.kind == "dir":
            peak = max(peak, running + cost(name, len(child.cid_bytes), len(_EMPTY_DIR_BLOCK)))
        else:
            running += cost(name, len(child.cid_bytes), child.tsize)
    return max(peak, running)


def _build_directory(writer: _DagWriter, entries: list[tuple[bytes, _Node]]) -> _Node:
    """The single place that chooses a flat or a sharded (HAMT) directory."""
    if estimated_directory_size(entries, writer.profile) > writer.profile.hamt_threshold_bytes:
        return writer.sharded_directory(entries)
    return writer.directory(entries)
