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
buffers (shoal.store.dag.file_stream) rather than fresh `bytes`: hashed and written to
the disk (O_DIRECT) from where the read put them, with no allocation and no
staging copy per chunk.

Where the code is: this module is the API (`import_file`, `import_bytes`,
`import_path`); shoal.store.dag.file_stream streams one file into leaves
and its balanced tree; shoal.store.dag.tree_import walks directory trees;
shoal.store.dag.dag_writer encodes and stores the blocks.

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

Chunkers per file: `chunker` may be a `shoal.store.chunking.choice.PerFileChunker`
("auto", the CLI's default), which picks the tensor-aware chunker for each
file that parses as safetensors and the profile's fixed chunker for every
other file, so those keep the CIDs `ipfs add` gives.

A directory whose node the JS importer would shard (its size estimate
passes the profile's `hamt_threshold_bytes`) becomes a UnixFS HAMT built by
`shoal.store.ipld.hamt`; the one call site is
shoal.store.dag.tree_import.build_directory.

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

import contextlib
import os
import stat as stat_mod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from shoal.store.chunking.chunker import Chunker, FixedChunker
from shoal.store.chunking.choice import PerFileChunker
from shoal.store.chunking.profiles import DEFAULT_PROFILE, Profile
from shoal.store.dag.dag_writer import ByteSink, DagNode, DagWriter, PieceHasher
from shoal.store.dag.file_stream import Progress, import_stream, pieces_apply
from shoal.store.dag.tree_import import TreeContext, deferred_full_gc
from shoal.store.errors import InvalidInput
from shoal.store.ipld.cid import CID
from shoal.store.persist.blockstore import Blockstore
from shoal.store.proofs.commitment import Commitment

# ByteSink, PieceHasher and pieces_apply are part of this API (the `builder`
# argument); they live beside the code that uses them.
__all__ = ["ImportResult", "import_file", "import_path", "import_bytes", "ByteSink", "PieceHasher",
           "pieces_apply"]


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


def _workers(writer: DagWriter) -> int:
    """Threads that hash and store leaves: one per core, or more if the store asks.

    A durable store spends part of a leaf's time waiting for the disk, not
    hashing; its staging session says how many writes to overlap.
    """
    cpu = max(1, min(8, os.cpu_count() or 1))
    wanted = getattr(writer.stager, "concurrency", 0)
    return max(cpu, min(64, wanted if isinstance(wanted, int) else 0))


def _result(node: DagNode, writer: "DagWriter") -> ImportResult:
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
    writer = DagWriter(blockstore, profile)
    chunker = chunker or FixedChunker(profile.chunk_size)
    workers = _workers(writer)
    with _closing(writer), ThreadPoolExecutor(workers, thread_name_prefix="shoal-import") as pool:
        node = import_stream(stream, writer, chunker, pool, 2 * workers, progress, builder)
    return _result(node, writer)


@contextlib.contextmanager
def _closing(writer: DagWriter) -> Iterator[None]:
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
    writer = DagWriter(blockstore, profile)
    fixed = FixedChunker(profile.chunk_size)
    workers = _workers(writer)
    with _closing(writer), ThreadPoolExecutor(workers, thread_name_prefix="shoal-import") as pool:
        ctx = TreeContext(writer, chunker or fixed, fixed, pool, 2 * workers, progress, follow_symlinks)
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
