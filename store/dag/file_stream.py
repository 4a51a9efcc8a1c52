"""One file's bytes into leaves and a balanced tree, streaming.

The chunker yields one chunk at a time; leaves are hashed and stored in a
thread pool (hashlib releases the GIL on big buffers) with at most
`in_flight` chunks in flight, consumed in order; each tree level holds at
most `max_links` pending child summaries (shoal.store.dag.dag_writer), so
peak memory is bounded by chunk size * in-flight count, whatever the file
size. Fixed-size chunks of a regular stream are read into a ring of
page-aligned buffers (`pooled_chunks`) rather than fresh `bytes`: hashed
and written to the disk (O_DIRECT) from where the read put them. A
same-pass commitment builder is fed here too (see shoal.store.dag.importer).
"""

from __future__ import annotations

import mmap
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Callable, Iterable, Iterator

from shoal.store.chunking.chunker import Chunker, FixedChunker
from shoal.store.chunking.profiles import Profile
from shoal.store.dag.dag_writer import BalancedLayout, ByteSink, DagNode, DagWriter, PieceHasher
from shoal.store.persist.direct_io import ALIGN

__all__ = ["Progress", "pieces_apply", "import_stream", "leaves", "pooled_chunks", "chunks_for"]

Progress = Callable[[int], None]

# Chunks smaller than this are hashed inline: a thread hop costs more.
_INLINE_HASH_BELOW = 64 * 1024


def pieces_apply(profile: Profile, chunker: Chunker | None, piece_size: int) -> bool:
    """True if a file imported this way can be hashed by a `PieceHasher`:
    raw leaves, the plain fixed-size chunker, chunks of exactly one piece."""
    chunker = chunker or FixedChunker(profile.chunk_size)
    return (profile.raw_leaves and type(chunker) is FixedChunker and chunker.size == piece_size
            and piece_size % ALIGN == 0)


def leaves(chunks: Iterable[bytes | memoryview], writer: DagWriter, pool: ThreadPoolExecutor | None,
            in_flight: int, builder: ByteSink | None = None,
            hasher: PieceHasher | None = None) -> Iterator[DagNode]:
    """Leaves in chunk order, hashed concurrently with bounded look-ahead;
    `builder`, if given, gets each chunk in order as it is read; `hasher`,
    if given, hashes them (chunks from its ring)."""
    pending: deque[Future[DagNode]] = deque()
    any_chunk = False
    index = 0
    try:
        for chunk in chunks:
            if not chunk:
                continue  # chunkers should not yield these; they add nothing
            any_chunk = True
            if pool is None or len(chunk) < _INLINE_HASH_BELOW:
                done: Future[DagNode] = Future()
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


def pooled_chunks(stream: BinaryIO, size: int, slots: int,
                   ring: mmap.mmap | None = None) -> Iterator[memoryview]:
    """Fixed-size chunks read straight into a ring of `slots` page-aligned buffers.

    Why: a chunk read into a fresh `bytes` costs an allocation (page faults
    on this VM's fresh pages) and, for an O_DIRECT block write, a copy into
    an aligned staging buffer. Read into an mmap slot instead, the chunk is
    hashed and written to the disk from where the read put it (one copy in
    all: the page cache's into the slot). The slot is reused `slots` chunks
    later, so the consumer must be done with a chunk by then: `leaves`
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


def chunks_for(stream: BinaryIO, chunker: Chunker, in_flight: int, pooled: bool) -> Iterable[bytes | memoryview]:
    """The chunk stream: pooled aligned buffers for the plain fixed-size
    chunker on a readable stream (when `pooled`), else the chunker's own."""
    if (pooled and type(chunker) is FixedChunker and chunker.size % ALIGN == 0
            and hasattr(stream, "readinto")):
        return pooled_chunks(stream, chunker.size, in_flight + 1)
    return chunker.chunks(stream)


def import_stream(stream: BinaryIO, writer: DagWriter, chunker: Chunker,
                   pool: ThreadPoolExecutor | None, in_flight: int,
                   progress: Progress | None, builder: "ByteSink | PieceHasher | None" = None) -> DagNode:
    layout = BalancedLayout(writer.profile.max_links, writer.file_parent)
    hasher: PieceHasher | None = None
    sink: ByteSink | None = None
    if isinstance(builder, PieceHasher):
        hasher = builder
    else:
        sink = builder
    if hasher is not None:
        if not (pieces_apply(writer.profile, chunker, hasher.piece_size) and hasattr(stream, "readinto")):
            raise ValueError("a PieceHasher needs raw leaves of exactly its piece size from a readable file")
        chunks: Iterable[bytes | memoryview] = pooled_chunks(
            stream, hasher.piece_size, in_flight + 1, hasher.ring(in_flight + 1))
    else:
        chunks = chunks_for(stream, chunker, in_flight, pooled=pool is not None and sink is None)
    for leaf in leaves(chunks, writer, pool, in_flight, sink, hasher):
        layout.add(leaf)
        if progress is not None:
            progress(leaf.content)
    return layout.finish()
