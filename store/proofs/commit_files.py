"""The bytes an object's storage commitment covers, and its files on disk.

Synchronous (worker threads call it; no network). Three jobs:

1. Say which bytes of an object the Merkle commitment (shoal.store.proofs.commitment) covers,
   and read any segment of them from the local blockstore:
   - a file: its content bytes (exporter.read_file), so the commitment does
     not depend on how the file was chunked;
   - a directory: the concatenation of every block of its DAG in depth-first
     link order (root first), since a directory has no single byte stream
     and every one of those blocks must be kept.
   Reads go through `blockstore.get`, which hash-checks each block, so a
   holder with a corrupt or missing block cannot answer for its segments.
2. Keep the leaf-hash layer on disk, `<repo>/proofs/<cid>.leaves` (32 bytes
   per 2 KiB segment, 1.6 % of the object), written temp + fsync + rename +
   fsync dir, and load the prover's tree from it. Next to it,
   `<cid>.commitment` records the 45-byte commitment the leaves were built
   for (by `Repo.add(..., commit=True)` during the put, or by
   `build_commitment`); with both present and consistent, `build_commitment`
   skips its pass over the object's bytes.
3. `PutProofFiles`: the same two files built during `Repo.add(..., commit=True)`,
   from the import's own pass over the bytes (shoal.store.proofs.piece_hashers
   helper processes, or an in-process MerkleBuilder).

Every file here is written through shoal.store.persist.durable; the record
always last, so a crash leaves at worst a leaf file without a record, which
`build_commitment` rebuilds, or a `*.tmp` file that `Repo.verify` removes.

Not here: signing, the network, policy.
"""

from __future__ import annotations

import bisect
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

from shoal.store.dag.walk import DagWalk
from shoal.store.persist.blockstore import Blockstore
from shoal.store.ipld.cid import CID, RAW
from shoal.store.errors import StoreError
from shoal.store.proofs.commitment import (
    DEFAULT_SEGMENT_SIZE, HASH_LEN, Commitment, MalformedProof, MerkleBuilder, MerkleTree, NodeSource,
    ShouldStop, SparseTree, check_stop,
)
from shoal.store.persist.durable import durable_file, make_dirs, publish

if TYPE_CHECKING:
    from shoal.store.dag.importer import ByteSink, PieceHasher
    from shoal.store.proofs.piece_hashers import PieceHashers

__all__ = ["ObjectBytes", "object_bytes", "leaves_file", "commitment_file", "build_commitment", "load_tree",
           "has_leaves", "PROOFS_DIR", "recorded_commitment", "committed_length", "stored_dag_bytes",
           "remove_leaves", "PutProofFiles", "COMMIT_PROCESS_ABOVE"]

PROOFS_DIR = "proofs"
_READ_PIECE = 1 << 20

# `Repo.add(..., commit=True)` hashes a file of at least this many bytes whose
# chunks are whole pieces (the default profile) in helper processes that
# give each block's digest and the commitment's leaves from one pass
# (shoal.store.proofs.piece_hashers); any other file gets an in-process MerkleBuilder
# on the reading thread, which hashes its bytes a second time. A helper
# costs ~40 ms to start. None turns the helpers off.
COMMIT_PROCESS_ABOVE: int | None = 16 * 1024 * 1024


def leaves_file(repo_path: Path, cid: CID | str) -> Path:
    """`<repo>/proofs/<cid>.leaves`: the raw concatenated leaf hashes, 32 bytes per segment."""
    return Path(repo_path) / PROOFS_DIR / f"{cid}.leaves"


def commitment_file(repo_path: Path, cid: CID | str) -> Path:
    """`<repo>/proofs/<cid>.commitment`: `Commitment.encode()` of the object's bytes."""
    return Path(repo_path) / PROOFS_DIR / f"{cid}.commitment"


class ObjectBytes:
    """Random access to the committed bytes of one object."""

    def __init__(self, length: int, read: Callable[[int, int], bytes], stream: Callable[[], Iterator[bytes]]) -> None:
        self.length = length
        self._read = read
        self._stream = stream

    def read(self, offset: int, length: int) -> bytes:
        return self._read(offset, length)

    def stream(self) -> Iterator[bytes]:
        return self._stream()

    def segment_reader(self, segment_size: int) -> Callable[[int], bytes]:
        """`read_segment(i)` for shoal.store.proofs.proof.make_proof."""
        return lambda i: self._read(i * segment_size, segment_size)


class _RecentBlocks:
    """`get` with a tiny LRU: a proof reads sorted segments, so consecutive
    segments mostly fall in the same 1 MiB block; re-reading and re-hashing
    it for each 2 KiB segment would cost ~500x the bytes."""

    def __init__(self, store: Blockstore, size: int = 4) -> None:
        self._store = store
        self._size = size
        self._recent: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, cid: CID) -> bytes:
        key = bytes(cid)
        data = self._recent.get(key)
        if data is None:
            data = self._store.get(cid)
            self._recent[key] = data
            while len(self._recent) > self._size:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        return data

    def has(self, cid: CID) -> bool:
        return self._store.has(cid)

    def size(self, cid: CID) -> int:
        return self._store.size(cid)


def object_bytes(backing: Blockstore, cid: CID) -> ObjectBytes:
    """The committed bytes of `cid` (BlockNotFound / HashMismatch if damaged).

    Blocks are still hash-checked when first read; a few recent ones are
    kept for the life of this object (one proof), never longer.
    """
    from shoal.store.dag import exporter  # not at the top: every command loads this module (via the repo)
    store: Any = _RecentBlocks(backing)
    st = exporter.stat(store, cid)
    if st.kind in ("file", "raw"):
        size = int(st.size or 0)

        def read(offset: int, length: int) -> bytes:
            return b"".join(exporter.read_file(store, cid, offset, length))

        return ObjectBytes(size, read, lambda: exporter.read_file(store, cid))
    layout = _dag_layout(store, cid)
    starts = [s for s, _, _ in layout]
    total = layout[-1][0] + layout[-1][2] if layout else 0

    def read_dag(offset: int, length: int) -> bytes:
        out = bytearray()
        end = min(total, offset + length)
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        while offset < end and i < len(layout):
            start, block_cid, size = layout[i]
            data = store.get(block_cid)
            out += data[offset - start : min(size, end - start)]
            offset = start + size
            i += 1
        return bytes(out)

    def stream_dag() -> Iterator[bytes]:
        for _, block_cid, _ in layout:
            yield store.get(block_cid)

    return ObjectBytes(total, read_dag, stream_dag)


def _dag_layout(store: Blockstore, root: CID) -> list[tuple[int, CID, int]]:
    """(offset, cid, size) of every block, depth-first in link order, each block once."""
    from shoal.store.dag import exporter
    out: list[tuple[int, CID, int]] = []
    pos = 0
    walk = DagWalk([root])
    for cid in walk:
        if cid.codec.name == RAW:
            size = store.size(cid)
        else:
            data = store.get(cid)
            size = len(data)
            walk.push(exporter.iter_links(cid, data))
        out.append((pos, cid, size))
        pos += size
    return out


def has_leaves(repo_path: Path, cid: CID | str, commitment: Commitment) -> bool:
    try:
        return leaves_file(repo_path, cid).stat().st_size == HASH_LEN * commitment.n_segments
    except OSError:
        return False


def committed_length(store: Blockstore, cid: CID) -> int:
    """How many bytes the commitment of `cid` covers, without reading them.

    A file: the size its root declares (nothing checks yet that its blocks
    add up to it; the pass over the bytes does). A directory: the bytes of
    its blocks, each once. Raises StoreError if a block is missing.
    """
    from shoal.store.dag import exporter
    recent: Any = _RecentBlocks(store)
    st = exporter.stat(recent, cid)
    if st.kind in ("file", "raw"):
        return int(st.size or 0)
    layout = _dag_layout(recent, cid)
    return layout[-1][0] + layout[-1][2] if layout else 0


def stored_dag_bytes(store: Blockstore, cid: CID, should_stop: ShouldStop | None = None) -> int:
    """The bytes the DAG under `cid` really occupies: each distinct block once.

    A file that links one block many times declares far more bytes than it
    stores; work that reads the declared bytes (a commitment pass) is
    bounded against this number (shoal.p2p.replication.holder). Raises StoreError if a block
    is missing; reads only the dag-pb nodes (raw leaves are sized, not read).
    """
    from shoal.store.dag import exporter
    total = 0
    walk = DagWalk([cid])
    for block in walk:
        if walk.visited % 256 == 1:  # the first block, then every 256th
            check_stop(should_stop)
        if block.codec.name == RAW:
            total += store.size(block)
            continue
        data = store.get(block)
        total += len(data)
        # Last link first, as this walk always went: the sum does not care,
        # but on a DAG damaged in several places it picks which error is raised.
        walk.push(exporter.iter_links(block, data)[::-1])
    return total


def build_commitment(store: Blockstore, repo_path: Path, cid: CID,
                     segment_size: int = DEFAULT_SEGMENT_SIZE, *,
                     should_stop: ShouldStop | None = None, max_length: int | None = None) -> Commitment:
    """The object's commitment, with its leaf file saved durably.

    If the put already built both (`recorded_commitment`), no pass over the
    object's bytes; otherwise one pass, then the leaf file and the record.
    `should_stop` is checked between blocks (shoal.store.cancel.Cancelled);
    `max_length` ends the pass with MalformedProof as soon as more bytes than that
    come out, whatever the DAG declares (a holder passes the signed length).
    """
    recorded = recorded_commitment(store, repo_path, cid, segment_size, should_stop=should_stop)
    if recorded is not None:
        return recorded
    path = leaves_file(repo_path, cid)
    make_dirs(path.parent)
    with durable_file(path) as f:
        builder = MerkleBuilder(segment_size, leaf_sink=f.write)
        seen = 0
        for piece in object_bytes(store, cid).stream():
            check_stop(should_stop)
            seen += len(piece)
            if max_length is not None and seen > max_length:
                raise MalformedProof(f"{cid} has more than the {max_length} bytes its manifest states")
            builder.update(piece)
        commitment = builder.finish()
    _save_record(repo_path, cid, commitment)
    return commitment


def recorded_commitment(store: Blockstore, repo_path: Path, cid: CID,
                        segment_size: int = DEFAULT_SEGMENT_SIZE, *,
                        should_stop: ShouldStop | None = None) -> Commitment | None:
    """The commitment saved for a file object, if its record and leaf file agree.

    Checks: `<cid>.commitment` decodes, has this segment size and the file's
    length (from its root node; directories always take the full pass), the
    leaf file has exactly one hash per segment, and folding those hashes
    reproduces the recorded root (~0.25 s per GiB: inner hashes only, no
    data read). Anything else, e.g. a damaged leaf file, gives None, so the
    caller recomputes both from the data.
    """
    from shoal.store.dag import exporter
    try:
        commitment = Commitment.decode(commitment_file(repo_path, cid).read_bytes())
    except (OSError, StoreError):
        return None
    if commitment.segment_size != segment_size:
        return None
    try:
        st = exporter.stat(store, cid)
    except StoreError:
        return None
    if st.kind not in ("file", "raw") or int(st.size or 0) != commitment.length:
        return None
    if not has_leaves(repo_path, cid, commitment):
        return None
    builder = MerkleBuilder(segment_size)
    piece = HASH_LEN * (_READ_PIECE // HASH_LEN)
    try:
        with open(leaves_file(repo_path, cid), "rb") as f:
            while raw := f.read(piece):
                check_stop(should_stop)
                builder.add_leaf_hashes([raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN)])
    except OSError:
        return None
    if commitment.n_segments == 0:
        return commitment
    # Every leaf stands for a full segment here; the true last one may be
    # short, so compare the root only (the record holds the exact length).
    folded = builder.finish()
    return commitment if folded.root == commitment.root else None


def load_tree(repo_path: Path, cid: CID | str, commitment: Commitment, *,
              should_stop: ShouldStop | None = None) -> NodeSource:
    """The prover's tree from the leaf file (MalformedProof if it does not match;
    Cancelled if `should_stop` says so while the leaves are read)."""
    if commitment.n_segments == 0:
        return MerkleTree([], commitment)
    path = leaves_file(repo_path, cid)
    fd = os.open(path, os.O_RDONLY)

    def read_leaves(first: int, count: int) -> bytes:
        return os.pread(fd, count * HASH_LEN, first * HASH_LEN)

    try:
        tree = SparseTree(read_leaves, commitment, should_stop=should_stop)
    except BaseException:
        os.close(fd)
        raise
    # The tree keeps reading leaves on demand, so the fd lives as long as it.
    return _OwnedTree(tree, fd)


class _OwnedTree:
    """A SparseTree plus the file descriptor it reads from (closed on collect)."""

    def __init__(self, tree: SparseTree, fd: int) -> None:
        self._tree = tree
        self._fd = fd
        self.commitment = tree.commitment

    def node(self, level: int, index: int) -> bytes:
        return self._tree.node(level, index)

    def __del__(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


def remove_leaves(repo_path: Path, cid: CID | str) -> None:
    commitment_file(repo_path, cid).unlink(missing_ok=True)
    leaves_file(repo_path, cid).unlink(missing_ok=True)




def _save_record(repo_path: Path, cid: CID, commitment: Commitment) -> None:
    """Write `<cid>.commitment` durably, after its leaf file (the record says the leaves are complete)."""
    with durable_file(commitment_file(repo_path, cid)) as f:
        f.write(commitment.encode())


class PutProofFiles:
    """The commitment and leaf-hash file of one `Repo.add(..., commit=True)`.

    Built while importing: by `PieceHashers` (helper processes that write
    the leaves into the temp file themselves) for a file of at least
    `COMMIT_PROCESS_ABOVE` bytes made of whole pieces, else by an
    in-process MerkleBuilder whose `leaf_sink` is the temp file. `save`
    publishes the leaf file under `<cid>.leaves` (it is fsync'd by
    `finish`), then writes `<cid>.commitment` durably. A crash mid-import
    leaves a `.put-*.tmp` file in `<repo>/proofs/` (not a block: gc keeps
    it; verify removes it once stale).
    """

    def __init__(self, repo_path: Path, size: int, pieces: bool) -> None:
        from shoal.store.proofs.piece_hashers import PieceHashers

        self.repo_path = Path(repo_path)
        directory = self.repo_path / PROOFS_DIR
        make_dirs(directory)
        fd, name = tempfile.mkstemp(prefix=".put-", suffix=".tmp", dir=directory)
        self.tmp: Path | None = Path(name)
        self._fd = fd
        self._file: IO[bytes] | None = None
        self._hashers: PieceHashers | None = None
        self._builder: MerkleBuilder | None = None
        if pieces and COMMIT_PROCESS_ABOVE is not None and size >= COMMIT_PROCESS_ABOVE:
            self._hashers = PieceHashers(fd, DEFAULT_SEGMENT_SIZE)
            self.sink: "ByteSink | PieceHasher" = self._hashers
        else:
            self._file = os.fdopen(fd, "wb", buffering=1 << 20)
            self._builder = MerkleBuilder(DEFAULT_SEGMENT_SIZE, leaf_sink=self._file.write)
            self.sink = self._builder

    def finish(self) -> Commitment | None:
        """The commitment, the leaf file synced; None if the helpers failed."""
        if self._hashers is not None:
            hashers, self._hashers = self._hashers, None
            commitment = hashers.finish()
            if commitment is not None:
                os.fsync(self._fd)
            return commitment
        assert self._builder is not None and self._file is not None
        commitment = self._builder.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return commitment

    def save(self, cid: CID, commitment: Commitment) -> None:
        """Publish the leaf file for `cid`, then its record (both durable on return)."""
        assert self.tmp is not None
        publish(self.tmp, leaves_file(self.repo_path, cid))
        self.tmp = None
        _save_record(self.repo_path, cid, commitment)

    def discard(self) -> None:
        """Drop whatever is left (no-op after `save`)."""
        if self._hashers is not None:
            self._hashers.abort()
            self._hashers = None
        if self._file is not None:
            if not self._file.closed:
                self._file.close()
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
