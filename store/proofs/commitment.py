"""Proofs of storage, part 1: the Merkle commitment over an object's bytes and its builder.

Why this exists: an owner that placed a replica on a peer wants to check, later
and cheaply, that the peer still holds every byte, without keeping the data
itself. The owner keeps a `Commitment` (root, length, segment size: 45 bytes);
an audit sends a fresh nonce, both sides derive the same k segment indices,
and the holder answers with those segments plus the Merkle nodes needed to
recompute the root.

Tree rules (version 2, fixed; changing any of them changes every root):
- Pieces: the object's bytes cut every `PIECE_SEGMENTS` (512) segments, i.e.
  every 1 MiB at the default 2 KiB segment, which is the default chunk size:
  a piece is exactly one raw leaf block of a default put.
- Segments: each piece cut every `segment_size` bytes (a multiple of 64);
  only the object's last segment may be short (never padded);
  n = ceil(length / segment_size), segment j is bytes [j*s, (j+1)*s).
- Leaf of segment j: the SHA-256 state (chaining value, 8 words big-endian)
  after hashing its piece from the piece's start to the end of segment j;
  for the last segment of a piece, SHA-256(piece) itself. So a piece's
  leaves are the states one SHA-256 of the piece passes through, and its
  last leaf is that block's multihash digest (store/proofs/sha256_chain.py).
- Inner = SHA-256(0x01 ‖ children), arity 4 (`ARITY`): level by level,
  group the nodes four by four from the left; a last group of 2 or 3 is
  hashed as it is, a last group of one node is promoted unchanged (no
  duplication, so no CVE-2012-2459-style second preimages). This is RFC
  6962 §2.1's rule with four children: split at the largest power of 4
  below n. Why 4: an inner hash costs ~0.8 us of interpreter work whatever
  its size, a binary tree has n - 1 of them (0.3-0.45 CPU-s per GiB at
  2 KiB segments, a third of the commitment) and a 4-ary tree n / 3; a
  proof carries 3 siblings per level instead of 1 over half the levels,
  ~1.5x the path bytes, still far under the segments' own share.
- Empty object: n = 0, root = SHA-256(b"") (as RFC 6962), no challenges.

Why chaining values and not SHA-256(0x00 ‖ segment) (version 1, and
DESIGN.md's sketch): the put hashes every block for its CID anyway, and a
segment's own hash made the commitment hash each byte twice. With chaining
values the put hashes each byte once for both (bench/put.py, "## put" in
bench/RESULTS.md). What a proof shows is unchanged: to answer for segment j
the holder sends it and the leaf before it (j - 1, authenticated by the
same multi-proof; the IV at a piece's start); the verifier resumes SHA-256
from that state over the segment and must land on leaf j. Landing there
with other bytes is a preimage attack on SHA-256's compression function.
The 0x00 leaf prefix is not needed: the verifier fixes every leaf's depth
from n and j, so no inner node can pose as a leaf (the attack RFC 6962's
prefix prevents needs a verifier that takes the tree's shape from the proof).

Segment size: 2 KiB (`DEFAULT_SEGMENT_SIZE`). Proofs cross the network on
every audit of every replica, forever, so the wire budget (<= 256 KiB per
audit at k = 66) decides: a proof carries k segments, so 4 KiB segments
alone are 264 KiB; 2 KiB proofs are ~176 KiB for 1 GiB objects
(bench/audit.py). bench/segment_size.py has the version 1 figures that
chose it.

This module builds the commitment and the prover's trees: `MerkleBuilder`
(streaming, one pass), `commit`, `MerkleTree`, `SparseTree` over a leaf
file. Its neighbours: shoal.store.proofs.challenge derives an audit's
segment indices and how many to ask; shoal.store.proofs.proof encodes,
makes and verifies the proofs (and bounds their size).

What this module does not do: I/O, networking, signing. Proofs and manifests
are signed later by the p2p identity; `Proof.signing_bytes()` says what to
sign. The prover reads only the challenged segments, plus the leaf layer
(`LeafHashes`, 32 B per segment, written during the commit pass by the
caller); without it, `MerkleTree.from_segments` re-hashes the data.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from shoal.store.proofs import sha256_chain
from shoal.store.cancel import Cancelled
from shoal.store.errors import ProofError
from shoal.store.proofs.tree_shape import ARITY as ARITY
from shoal.store.proofs.tree_shape import HASH_LEN as HASH_LEN
from shoal.store.proofs.tree_shape import NODE_PREFIX
from shoal.store.proofs.tree_shape import PIECE_LEVEL as PIECE_LEVEL
from shoal.store.proofs.tree_shape import PIECE_SEGMENTS as PIECE_SEGMENTS
from shoal.store.proofs.tree_shape import node_hash as node_hash
from shoal.store.proofs.tree_shape import next_level, piece_nodes, reduce_flat

DEFAULT_SEGMENT_SIZE = 2048
MAX_SEGMENT_SIZE = 1 << 24

_NODE = NODE_PREFIX
_EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


class MalformedProof(ProofError):
    """Bytes that are not a well-formed proof or commitment.

    Placeholder until the lead adds a ProofError family to store/errors.py.
    """


ShouldStop = Callable[[], bool]
"""Long hashing loops (a commitment pass, loading a prover's tree) run in
worker threads, which cannot be interrupted from outside: they call this
between pieces and raise shoal.store.cancel.Cancelled once it says so, so a
cancelled request or a node shutting down frees its thread within one piece."""


def check_stop(should_stop: "ShouldStop | None") -> None:
    """Raise Cancelled if `should_stop` says so (None: never)."""
    if should_stop is not None and should_stop():
        raise Cancelled("stopped before the work was done")


def check_segment_size(segment_size: int) -> None:
    """ValueError unless `segment_size` can cut pieces (a multiple of 64)."""
    if not 0 < segment_size <= MAX_SEGMENT_SIZE or segment_size % sha256_chain.BLOCK:
        raise ValueError("segment size must be a multiple of 64 bytes, at most 16 MiB")


def piece_size(segment_size: int) -> int:
    """Bytes per piece for a segment size (1 MiB at 2 KiB)."""
    return segment_size * PIECE_SEGMENTS


def piece_leaves(piece: bytes | bytearray | memoryview, segment_size: int) -> list[bytes]:
    """The leaves of one piece (see the tree rules), one 32-byte value each."""
    raw = sha256_chain.piece_leaves(piece, segment_size)
    return [raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN)]


def _split(flat: bytes) -> list[bytes]:
    return [flat[i : i + HASH_LEN] for i in range(0, len(flat), HASH_LEN)]


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    """The level above (see store/proofs/tree_shape.py)."""
    return _split(next_level(b"".join(level)))


def reduce_nodes(nodes: Sequence[bytes]) -> bytes:
    """Root over a run of sibling nodes that starts a level (lone nodes promoted).

    Leaves [0, m) give the root of their subtree; the level-4 nodes of all
    pieces in order (two per full piece: 512 = 2 x 4^4) give the object's
    root, since every piece starts at a multiple of 512 leaves.
    """
    if not nodes:
        raise ValueError("no nodes")
    return reduce_flat(b"".join(nodes))


def n_segments(length: int, segment_size: int) -> int:
    """Number of segments (leaves) of an object of `length` bytes."""
    return -(-length // segment_size)


# ---------------------------------------------------------------- commitment

_COMMIT = struct.Struct(">B32sQI")
_COMMIT_VERSION = 2


@dataclass(frozen=True)
class Commitment:
    """All the verifier keeps per object: 45 bytes once encoded."""

    root: bytes
    length: int
    segment_size: int

    def __post_init__(self) -> None:
        if len(self.root) != HASH_LEN:
            raise MalformedProof("commitment root must be 32 bytes")
        if not 0 <= self.length < 1 << 64:
            raise MalformedProof("commitment length out of range")
        try:
            check_segment_size(self.segment_size)
        except ValueError:
            raise MalformedProof("commitment segment size out of range") from None
        if self.length == 0 and self.root != _EMPTY_ROOT:
            raise MalformedProof("an empty object has the empty root")
        if n_segments(self.length, self.segment_size) > 1 << 62:
            raise MalformedProof("too many segments")

    @property
    def n_segments(self) -> int:
        return n_segments(self.length, self.segment_size)

    def segment_length(self, index: int) -> int:
        """Exact byte length of segment `index` (only the last may be short)."""
        n = self.n_segments
        if not 0 <= index < n:
            raise IndexError(index)
        if index < n - 1:
            return self.segment_size
        return self.length - (n - 1) * self.segment_size

    def ends_piece(self, index: int) -> bool:
        """True if segment `index` is its piece's last (its leaf is a digest)."""
        return index % PIECE_SEGMENTS == PIECE_SEGMENTS - 1 or index == self.n_segments - 1

    def encode(self) -> bytes:
        return _COMMIT.pack(_COMMIT_VERSION, self.root, self.length, self.segment_size)

    @classmethod
    def decode(cls, data: bytes) -> "Commitment":
        if len(data) != _COMMIT.size:
            raise MalformedProof("commitment must be 45 bytes")
        version, root, length, seg = _COMMIT.unpack(data)
        if version != _COMMIT_VERSION:
            raise MalformedProof(f"unknown commitment version {version}")
        return cls(root, length, seg)


class MerkleBuilder:
    """Streaming commitment builder: O(log n) memory plus one piece, one pass.

    Feed it the object's bytes in order, in buffers of any size. Whole pieces
    found in a buffer are hashed where they lie; others are gathered in a
    one-piece buffer first (so 1 MiB-aligned chunk streams are never copied).
    It keeps, per level, the nodes of the group still open (< 4 each).
    `leaf_sink`, if given, receives the leaves (concatenated, in order) so
    the caller can save the `LeafHashes` file next to the object.
    """

    def __init__(
        self,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        leaf_sink: Callable[[bytes], object] | None = None,
    ) -> None:
        check_segment_size(segment_size)
        self.segment_size = segment_size
        self._piece = piece_size(segment_size)
        self._sink = leaf_sink
        self._buf = bytearray()
        self._pending: list[list[bytes]] = []  # per level: nodes of the open group
        self._short = False
        self._length = 0
        self._done = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise ValueError("builder already finished")
        mv = memoryview(data).cast("B")
        self._length += len(mv)
        p = self._piece
        if self._buf:
            need = p - len(self._buf)
            self._buf += mv[:need]
            mv = mv[need:]
            if len(self._buf) < p:
                return
            self._add_piece(self._buf)
            self._buf = bytearray()
        full = len(mv) - len(mv) % p
        for off in range(0, full, p):
            self._add_piece(mv[off : off + p])
        if full < len(mv):
            self._buf += mv[full:]

    def _add_piece(self, piece: bytes | bytearray | memoryview) -> None:
        raw = sha256_chain.piece_leaves(piece, self.segment_size)
        if self._sink is not None:
            self._sink(raw)
        self._add_leaves([raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN)])

    def add_leaf_hashes(self, leaves: Sequence[bytes]) -> None:
        """Fold leaves computed elsewhere (e.g. read back from a saved
        `LeafHashes` file) as if their segments had been passed to `update`.

        Each leaf stands for one *full* segment, so the bytes fed so far must
        end on a piece boundary; the result is the same root and the same
        `leaf_sink` bytes as `update` over those segments would give (the
        length counts full segments: compare roots when the last is short).
        """
        if self._done:
            raise ValueError("builder already finished")
        if self._buf:
            raise ValueError("leaf hashes must start on a piece boundary")
        leaves = list(leaves)
        if any(len(h) != HASH_LEN for h in leaves):
            raise ValueError("a leaf hash is 32 bytes")
        if leaves:
            if self._sink is not None:
                self._sink(b"".join(leaves))
            self._length += len(leaves) * self.segment_size
            self._add_leaves(leaves)

    def _add_leaves(self, leaves: list[bytes]) -> None:
        """Fold whole pieces of leaves (the last may be short, then no more come)."""
        for first in range(0, len(leaves), PIECE_SEGMENTS):
            piece = leaves[first : first + PIECE_SEGMENTS]
            if self._short:
                raise ValueError("leaves after a short piece")
            self._short = len(piece) < PIECE_SEGMENTS
            for node in _split(piece_nodes(b"".join(piece))):
                self._push(PIECE_LEVEL, node)

    def _push(self, level: int, node: bytes) -> None:
        """Append a node at `level`; every 4th one completes its parent."""
        pending = self._pending
        while len(pending) <= level:
            pending.append([])
        pending[level].append(node)
        while len(pending[level]) == ARITY:
            parent = node_hash(*pending[level])
            pending[level].clear()
            level += 1
            if len(pending) <= level:
                pending.append([])
            pending[level].append(parent)

    def finish(self) -> Commitment:
        if self._done:
            raise ValueError("builder already finished")
        if self._buf:
            self._add_piece(self._buf)
            self._buf = bytearray()
        self._done = True
        pending = self._pending
        if not any(pending):
            return Commitment(_EMPTY_ROOT, 0, self.segment_size)
        # Close the trailing groups bottom up, as the level-by-level rule does.
        level = 0
        while True:
            group = pending[level]
            if level == len(pending) - 1 and len(group) == 1:
                return Commitment(group[0], self._length, self.segment_size)
            if group:
                node = group[0] if len(group) == 1 else node_hash(*group)
                if level + 1 == len(pending):
                    pending.append([])
                pending[level + 1].append(node)
            level += 1


def commitment_from_pieces(nodes: Sequence[bytes], length: int, segment_size: int) -> Commitment:
    """The commitment from all pieces' `piece_nodes`, concatenated in order."""
    if length == 0:
        return Commitment(_EMPTY_ROOT, 0, segment_size)
    if len(nodes) != -(-n_segments(length, segment_size) // ARITY**PIECE_LEVEL):
        raise ValueError("wrong number of piece nodes")
    return Commitment(reduce_nodes(nodes), length, segment_size)


def commit(data: bytes | memoryview, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Commitment:
    """Commitment of bytes held in memory (tests, small objects)."""
    b = MerkleBuilder(segment_size)
    b.update(data)
    return b.finish()


# ---------------------------------------------------------------- prover tree


class LeafHashes:
    """The leaf layer, 32 B per segment: what a holder stores to prove cheaply.

    File format: the raw concatenation of the n leaf hashes, nothing else;
    its size must be exactly 32 * n for the commitment it belongs to.
    """

    def __init__(self, raw: bytes, commitment: Commitment) -> None:
        if len(raw) != HASH_LEN * commitment.n_segments:
            raise MalformedProof("leaf hash file does not match the commitment")
        self.raw = raw
        self.commitment = commitment

    def __len__(self) -> int:
        return len(self.raw) // HASH_LEN

    def read(self, first: int, count: int) -> bytes:
        """`read_leaves` for `SparseTree` (a file-backed reader does the same by seek)."""
        return self.raw[first * HASH_LEN : (first + count) * HASH_LEN]

    def hashes(self) -> list[bytes]:
        r = self.raw
        return [r[i : i + HASH_LEN] for i in range(0, len(r), HASH_LEN)]


class MerkleTree:
    """All levels of one object's tree, in memory, for the prover.

    Built from stored `LeafHashes` (n - 1 inner hashes of 65 bytes: ~0.2 s
    per GiB at 2 KiB segments) or, if they were lost, from the data itself.
    Memory ~290 B per segment as Python objects (~150 MiB per GiB at 2 KiB),
    so it suits small objects and tests; big objects use `SparseTree`. Refuses leaf hashes that do not reproduce the commitment.
    """

    def __init__(self, leaves: list[bytes], commitment: Commitment) -> None:
        if len(leaves) != commitment.n_segments:
            raise MalformedProof("leaf count does not match the commitment")
        levels = [leaves]
        while len(levels[-1]) > 1:
            levels.append(_next_level(levels[-1]))
        root = levels[-1][0] if leaves else _EMPTY_ROOT
        if root != commitment.root:
            raise MalformedProof("leaf hashes do not reproduce the committed root")
        self.levels = levels
        self.commitment = commitment

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: LeafHashes) -> "MerkleTree":
        return cls(leaf_hashes.hashes(), leaf_hashes.commitment)

    @classmethod
    def from_segments(cls, read_segment: Callable[[int], bytes], commitment: Commitment) -> "MerkleTree":
        """Recompute every leaf from the data (O(n) reads); the fallback path."""
        leaves: list[bytes] = []
        n, s = commitment.n_segments, commitment.segment_size
        for first in range(0, n, PIECE_SEGMENTS):
            segments = []
            for i in range(first, min(n, first + PIECE_SEGMENTS)):
                seg = read_segment(i)
                if len(seg) != commitment.segment_length(i):
                    raise MalformedProof(f"segment {i} has the wrong length")
                segments.append(seg)
            leaves.extend(piece_leaves(b"".join(segments), s))
        return cls(leaves, commitment)

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]


class NodeSource(Protocol):
    """Where the prover gets tree nodes: level 0 = leaf hashes, level-wise
    groups of 4 with a lone last node promoted (so node (l, i) is the root
    of leaves [i * 4^l, (i + 1) * 4^l) clipped to n)."""

    commitment: Commitment

    def node(self, level: int, index: int) -> bytes: ...


class SparseTree:
    """Prover tree for big objects: only levels >= `height` stay in memory.

    A node below `height` is recomputed on demand from at most 4^height
    stored leaf hashes (`read_leaves(first, count)` returns count * 32 bytes
    of the `LeafHashes` file), so an audit costs k reads of <= 2 KiB and
    ~k * 4^height / 3 inner hashes, and memory is ~43 / 4^height bytes per
    segment (~0.7 MiB per GiB at 2 KiB segments and height 3) instead of the
    ~150 MiB per GiB a `MerkleTree` of Python bytes objects takes.
    Setup reads the leaf-hash file once (O(n) hashing, ~0.1 s/GiB).
    """

    def __init__(
        self,
        read_leaves: Callable[[int, int], bytes],
        commitment: Commitment,
        height: int = 3,
        batch: int = 1 << 15,
        should_stop: ShouldStop | None = None,
    ) -> None:
        n = commitment.n_segments
        if n == 0:
            raise MalformedProof("an empty object has no tree")
        self.commitment = commitment
        self.height = height
        self._read = read_leaves
        span = ARITY**height
        batch = max(span, batch - batch % span)
        base: list[bytes] = []
        for first in range(0, n, batch):
            check_stop(should_stop)
            count = min(batch, n - first)
            leaves = self._leaves(first, count)
            for off in range(0, count, span):
                base.append(reduce_nodes(leaves[off : off + span]))
        levels = [base]
        while len(levels[-1]) > 1:
            levels.append(_next_level(levels[-1]))
        if levels[-1][0] != commitment.root:
            raise MalformedProof("leaf hashes do not reproduce the committed root")
        self._upper = levels

    def _leaves(self, first: int, count: int) -> list[bytes]:
        raw = self._read(first, count)
        if len(raw) != HASH_LEN * count:
            raise MalformedProof("leaf hash file is short")
        return [raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN)]

    def node(self, level: int, index: int) -> bytes:
        if level >= self.height:
            return self._upper[level - self.height][index]
        first = index * ARITY**level
        count = min(ARITY**level, self.commitment.n_segments - first)
        return reduce_nodes(self._leaves(first, count))


def segment_reader(data: bytes | memoryview, segment_size: int) -> Callable[[int], bytes]:
    """`read_segment` over bytes in memory (or an mmap'd file)."""
    mv = memoryview(data)

    def read(i: int) -> bytes:
        return bytes(mv[i * segment_size : (i + 1) * segment_size])

    return read
