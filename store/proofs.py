"""Proofs of storage: a Merkle commitment over an object's bytes, challenges, proofs.

Why this exists: an owner that placed a replica on a peer wants to check, later
and cheaply, that the peer still holds every byte, without keeping the data
itself. The owner keeps a `Commitment` (root, length, segment size: 45 bytes);
an audit sends a fresh nonce, both sides derive the same k segment indices,
and the holder answers with those segments plus the Merkle nodes needed to
recompute the root.

Tree rules (fixed; changing any of them changes every root):
- Segments: the object's bytes cut every `segment_size` bytes; the last
  segment may be short (never padded); n = ceil(length / segment_size).
- Leaf = SHA-256(0x00 ‖ segment); inner = SHA-256(0x01 ‖ left ‖ right)
  (domain separation, so a leaf can never pass for an inner node).
- Non-power-of-two n: RFC 6962 §2.1 — split at the largest power of two
  smaller than n. Level by level this is: pair nodes left to right and
  promote a lone last node unchanged to the next level (no duplication, so no
  CVE-2012-2459-style second preimages).
- Empty object: n = 0, root = SHA-256(b"") (as RFC 6962), no challenges.

Segment size: 2 KiB (`DEFAULT_SEGMENT_SIZE`), chosen by bench/segment_size.py
(CPU seconds per GiB, CPython 3, SHA extensions; plain SHA-256 = 0.60 s/GiB):

    segment   build s/GiB  x plain   proof @k=66, 1 GiB / 1 TiB
    1 KiB        1.47       2.46        94 KiB / 115 KiB
    2 KiB        1.15       1.92       158 KiB / 179 KiB
    4 KiB        0.88       1.47       288 KiB / 308 KiB
    8 KiB        0.75       1.25       550 KiB / 570 KiB
    16 KiB       0.68       1.13      1076 KiB / 1096 KiB

No size meets both budgets in pure Python (proof <= 256 KiB per audit at
k = 66, build <= 1.25x plain hashing): 4 KiB segments alone are 264 KiB of
data per audit, while 8 KiB is the smallest size near 1.25x. Proofs cross
the network on every audit of every replica, forever; the commitment is
built once per put, off the hot path. So the wire budget wins, and 2 KiB is
the largest power of two that keeps proofs within 256 KiB up to 1 TiB
objects, with headroom for k ~ 90. Cost: the commitment adds ~1.15 CPU-s
per GiB to a put, 1.9x a plain SHA-256 of the same bytes (the per-leaf
interpreter overhead is ~0.9x of that on top of hashing the bytes once). With the 0x00 prefix primed in a copied hasher the
2,048-byte update is at hashlib's GIL-release threshold, so a caller may
overlap it with chunking in a thread. (Measured, that overlap does not
happen: ~1/3 of the cost is interpreter work under the GIL, the put is
itself GIL-bound, and releasing and re-taking the GIL around every ~1 us
hash convoys with the other threads; so `Repo.add(..., commit=True)` builds
the commitment in a helper process instead, see store/repo.py.) Smaller (1 KiB) proofs would cost
another +0.3 s/GiB.

What this module does not do: I/O, networking, signing. Proofs and manifests
are signed later by the p2p identity; `Proof.signing_bytes()` says what to
sign. The prover reads only the challenged segments, plus the leaf-hash
layer (`LeafHashes`, 32 B per segment, written during the commit pass by the
caller); without it, `MerkleTree.from_segments` re-hashes the data.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

from .errors import ProofError

DEFAULT_SEGMENT_SIZE = 2048
MAX_SEGMENT_SIZE = 1 << 24
MAX_HOLDER_ID = 128  # bytes; libp2p Ed25519 peer ids are 38
MAX_K = 4096  # a 1 % loss at 99.9 % needs 688; more is abuse
HASH_LEN = 32

_LEAF = b"\x00"
_NODE = b"\x01"
_EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256
_LEAF_PRIMED = hashlib.sha256(_LEAF)
_GIL_KEEP = 2047  # hashlib releases the GIL for updates of >= 2,048 bytes


class MalformedProof(ProofError):
    """Bytes that are not a well-formed proof or commitment.

    Placeholder until the lead adds a ProofError family to store/errors.py.
    """


def leaf_hash(segment: bytes | bytearray | memoryview) -> bytes:
    """Hash of one segment, domain separated from inner nodes."""
    return _sha256(_LEAF + segment).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node."""
    return _sha256(_NODE + left + right).digest()


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    it = iter(level)
    nxt = [_sha256(_NODE + a + b).digest() for a, b in zip(it, it)]
    if len(level) % 2:
        nxt.append(level[-1])
    return nxt


def n_segments(length: int, segment_size: int) -> int:
    """Number of segments (leaves) of an object of `length` bytes."""
    return -(-length // segment_size)


# ---------------------------------------------------------------- commitment

_COMMIT = struct.Struct(">B32sQI")
_COMMIT_VERSION = 1


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
        if not 0 < self.segment_size <= MAX_SEGMENT_SIZE:
            raise MalformedProof("commitment segment size out of range")
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
    """Streaming commitment builder: O(log n) memory, one pass over the bytes.

    Feed it the same buffers the chunker produces. It keeps a stack of
    perfect subtrees (heights strictly decreasing); whole power-of-two runs of
    leaves inside one `update` are reduced level by level in list
    comprehensions, which is what keeps CPython's per-leaf overhead low.
    `leaf_sink`, if given, receives the leaf hashes (concatenated, in order)
    so the caller can save the `LeafHashes` file next to the object.
    """

    def __init__(
        self,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        leaf_sink: Callable[[bytes], object] | None = None,
    ) -> None:
        if not 0 < segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError("segment size out of range")
        self.segment_size = segment_size
        self._sink = leaf_sink
        self._buf = bytearray()
        self._stack: list[tuple[int, bytes]] = []
        self._count = 0
        self._length = 0
        self._done = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise ValueError("builder already finished")
        mv = memoryview(data).cast("B")
        self._length += len(mv)
        s = self.segment_size
        if self._buf:
            need = s - len(self._buf)
            self._buf += mv[:need]
            mv = mv[need:]
            if len(self._buf) < s:
                return
            self._add_leaves([leaf_hash(self._buf)])
            self._buf.clear()
        full = len(mv) - len(mv) % s
        if full:
            # copy() of a primed hasher beats b"\x00" + segment: no 2 KiB concat
            fresh = _LEAF_PRIMED.copy
            leaves: list[bytes] = []
            append = leaves.append
            for i in range(0, full, s):
                h = fresh()
                h.update(mv[i : i + s])
                append(h.digest())
            self._add_leaves(leaves)
        if full < len(mv):
            self._buf += mv[full:]

    def update_keeping_gil(self, data: bytes | bytearray | memoryview) -> None:
        """`update`, for a caller that shares the GIL with busy threads.

        Same result. `update` hashes each 2 KiB segment in one call, which
        hashlib runs with the GIL released; re-taking it after every ~1 us
        hash means queueing behind the other threads each time (a convoy).
        Here each full segment goes through `segment_leaf_hashes`, which
        keeps the GIL (and is ~8 % faster uncontended, too).
        """
        if self._done:
            raise ValueError("builder already finished")
        mv = memoryview(data).cast("B")
        s = self.segment_size
        if self._buf:
            head = min(len(mv), s - len(self._buf))
            self.update(mv[:head])
            mv = mv[head:]
        full = len(mv) - len(mv) % s
        if full:
            self._length += full
            self._add_leaves(segment_leaf_hashes(mv[:full], s))
        if full < len(mv):
            self.update(mv[full:])

    def add_leaf_hashes(self, leaves: Sequence[bytes]) -> None:
        """Fold leaf hashes computed elsewhere (e.g. read back from a saved
        `LeafHashes` file) as if their segments had been passed to `update`.

        Each hash stands for one *full* segment, so the bytes fed so far must
        end on a segment boundary (no partial segment buffered); the caller
        feeds any unaligned head or tail through `update` in order. The
        result is the same commitment and the same `leaf_sink` bytes as
        `update` over those segments would give.
        """
        if self._done:
            raise ValueError("builder already finished")
        if self._buf:
            raise ValueError("leaf hashes must start on a segment boundary")
        leaves = list(leaves)
        if any(len(h) != HASH_LEN for h in leaves):
            raise ValueError("a leaf hash is 32 bytes")
        if leaves:
            self._length += len(leaves) * self.segment_size
            self._add_leaves(leaves)

    def _add_leaves(self, leaves: list[bytes]) -> None:
        if self._sink is not None:
            self._sink(b"".join(leaves))
        pos, total = 0, len(leaves)
        while pos < total:
            c = self._count
            align = c & -c if c else 1 << 62
            size = min(align, 1 << ((total - pos).bit_length() - 1))
            block = leaves[pos : pos + size]
            height = 0
            while len(block) > 1:
                block = _next_level(block)
                height += 1
            self._push(height, block[0])
            self._count += size
            pos += size

    def _push(self, height: int, h: bytes) -> None:
        stack = self._stack
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            h = node_hash(left, h)
            height += 1
        stack.append((height, h))

    def finish(self) -> Commitment:
        if self._done:
            raise ValueError("builder already finished")
        if self._buf:
            self._add_leaves([leaf_hash(self._buf)])
            self._buf.clear()
        self._done = True
        if not self._stack:
            return Commitment(_EMPTY_ROOT, 0, self.segment_size)
        acc = self._stack[-1][1]
        for _, h in reversed(self._stack[:-1]):
            acc = node_hash(h, acc)
        return Commitment(acc, self._length, self.segment_size)


def segment_leaf_hashes(data: bytes | bytearray | memoryview,
                        segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[bytes]:
    """Leaf hashes of `data`, a whole number of segments, keeping the GIL.

    Each segment goes into a copy of a hasher primed with 0x00 in two
    updates, both shorter than hashlib's GIL-release size (2,048 bytes), so
    the GIL is never dropped and re-taken per segment. Measured on CPython
    3.11: 0.86 s/GiB instead of 0.93 alone, and 1.7 instead of 3.2 s/GiB
    next to one busy Python thread.
    """
    mv = memoryview(data).cast("B")
    if len(mv) % segment_size:
        raise ValueError("data is not a whole number of segments")
    fresh = _LEAF_PRIMED.copy
    cut = min(segment_size - 1, _GIL_KEEP)
    leaves: list[bytes] = []
    append = leaves.append
    for i in range(0, len(mv), segment_size):
        h = fresh()
        h.update(mv[i : i + cut])
        h.update(mv[i + cut : i + segment_size])
        append(h.digest())
    return leaves


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
        leaves = []
        for i in range(commitment.n_segments):
            seg = read_segment(i)
            if len(seg) != commitment.segment_length(i):
                raise MalformedProof(f"segment {i} has the wrong length")
            leaves.append(leaf_hash(seg))
        return cls(leaves, commitment)

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]


class NodeSource(Protocol):
    """Where the prover gets tree nodes: level 0 = leaf hashes, level-wise
    pairing with the lone last node promoted (so node (l, i) is the root of
    leaves [i * 2^l, (i + 1) * 2^l) clipped to n)."""

    commitment: Commitment

    def node(self, level: int, index: int) -> bytes: ...


class SparseTree:
    """Prover tree for big objects: only levels >= `height` stay in memory.

    A node below `height` is recomputed on demand from at most 2^height
    stored leaf hashes (`read_leaves(first, count)` returns count * 32 bytes
    of the `LeafHashes` file), so an audit costs k reads of <= 1 KiB and
    ~k * 2^height inner hashes, and memory is ~64 / 2^height bytes per
    segment (1 MiB per GiB at 2 KiB segments and height 5) instead of the
    ~150 MiB per GiB a `MerkleTree` of Python bytes objects takes.
    Setup reads the leaf-hash file once (O(n) hashing, ~0.3 s/GiB).
    """

    def __init__(
        self,
        read_leaves: Callable[[int, int], bytes],
        commitment: Commitment,
        height: int = 5,
        batch: int = 1 << 15,
    ) -> None:
        n = commitment.n_segments
        if n == 0:
            raise MalformedProof("an empty object has no tree")
        self.commitment = commitment
        self.height = height
        self._read = read_leaves
        span = 1 << height
        batch = max(span, batch - batch % span)
        base: list[bytes] = []
        for first in range(0, n, batch):
            count = min(batch, n - first)
            leaves = self._leaves(first, count)
            for off in range(0, count, span):
                base.append(_reduce(leaves[off : off + span]))
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
        first = index << level
        count = min(1 << level, self.commitment.n_segments - first)
        return _reduce(self._leaves(first, count))


def _reduce(nodes: list[bytes]) -> bytes:
    while len(nodes) > 1:
        nodes = _next_level(nodes)
    return nodes[0]


def segment_reader(data: bytes | memoryview, segment_size: int) -> Callable[[int], bytes]:
    """`read_segment` over bytes in memory (or an mmap'd file)."""
    mv = memoryview(data)

    def read(i: int) -> bytes:
        return bytes(mv[i * segment_size : (i + 1) * segment_size])

    return read


# ---------------------------------------------------------------- challenges

_U64 = 1 << 64


def _uniform(digest: bytes, n: int) -> int:
    """Map a digest to [0, n) without modulo bias (rejection sampling).

    Take the first 8 bytes as a big-endian u64 v; accept v mod n if v is below
    the largest multiple of n that fits in 2^64, else re-hash
    SHA-256(previous digest ‖ counter as 4-byte BE), counter = 1, 2, ...
    The re-hash input is 36 bytes, shorter than any first-round input, so the
    two rounds can never collide. Rejection odds are < n / 2^64 per draw.
    """
    limit = _U64 - _U64 % n
    counter = 0
    while True:
        v = int.from_bytes(digest[:8], "big")
        if v < limit:
            return v % n
        counter += 1
        digest = _sha256(digest + counter.to_bytes(4, "big")).digest()


def challenge_indices(nonce: bytes, root: bytes, holder_id: bytes, k: int, n_segments: int) -> list[int]:
    """The k segment indices of one audit (with repeats, in draw order).

    index j = uniform(SHA-256(nonce ‖ root ‖ holder_id ‖ j as 8-byte BE), n).
    nonce and root are fixed at 32 bytes, so the only variable-length field is
    unambiguous. Unpredictable before the nonce, and different per holder.
    """
    if len(nonce) != HASH_LEN or len(root) != HASH_LEN:
        raise ValueError("nonce and root must be 32 bytes")
    if not 0 <= k <= MAX_K:
        raise ValueError("k out of range")
    if not 0 <= n_segments <= _U64:
        raise ValueError("n_segments out of range")
    if n_segments == 0:
        return []
    prefix = nonce + root + holder_id
    return [_uniform(_sha256(prefix + j.to_bytes(8, "big")).digest(), n_segments) for j in range(k)]


def detection_probability(loss_fraction: float, k: int) -> float:
    """P(at least one of k uniform challenges hits a lost segment) = 1 - (1-f)^k."""
    if not 0.0 <= loss_fraction <= 1.0 or k < 0:
        raise ValueError("loss fraction in [0, 1], k >= 0")
    return 1.0 - (1.0 - loss_fraction) ** k


def default_k(target_loss: float = 0.10, detection: float = 0.999) -> int:
    """Smallest k that catches a `target_loss` fraction with `detection` odds.

    default_k() == 66 (0.9^66 = 0.00095); default_k(0.01) == 688.
    """
    if not 0.0 < target_loss < 1.0 or not 0.0 < detection < 1.0:
        raise ValueError("target_loss and detection must be in (0, 1)")
    k = max(1, math.ceil(math.log1p(-detection) / math.log1p(-target_loss)))
    while k > 1 and detection_probability(target_loss, k - 1) >= detection:
        k -= 1
    while detection_probability(target_loss, k) < detection:
        k += 1
    return k


# ---------------------------------------------------------------- proofs


def _aux_positions(indices: Sequence[int], n: int) -> list[tuple[int, int]]:
    """(level, index) of the extra nodes a multi-proof carries, in wire order.

    Shared nodes are sent once: a sibling that is itself derivable from the
    challenged segments is never sent. Both sides run this same walk.
    """
    out: list[tuple[int, int]] = []
    known = list(indices)
    width, level = n, 0
    while width > 1:
        kset = set(known)
        nxt: list[int] = []
        for i in known:
            sib = i ^ 1
            if sib < width and sib not in kset:
                out.append((level, sib))
            p = i >> 1
            if not nxt or nxt[-1] != p:
                nxt.append(p)
        known, width, level = nxt, (width + 1) // 2, level + 1
    return out


def _root_from(indices: Sequence[int], leaves: Sequence[bytes], nodes: Sequence[bytes], n: int) -> bytes | None:
    """Root recomputed from leaves at sorted unique `indices` and the aux nodes.

    None if the node count is not exactly what the walk consumes.
    """
    values = dict(zip(indices, leaves))
    aux = iter(nodes)
    width = n
    try:
        while width > 1:
            nxt: dict[int, bytes] = {}
            for i in sorted(values):
                p = i >> 1
                if p in nxt:
                    continue
                left, right = i & ~1, (i & ~1) + 1
                if right >= width:
                    nxt[p] = values[left]
                    continue
                lh = values[left] if left in values else next(aux)
                rh = values[right] if right in values else next(aux)
                nxt[p] = _sha256(_NODE + lh + rh).digest()
            values, width = nxt, (width + 1) // 2
    except StopIteration:
        return None
    if next(aux, None) is not None:
        return None
    return values[0]


_PROOF_MAGIC = b"SHP1"
_SIGN_DOMAIN = b"shoal-proof-v1\x00"


@dataclass(frozen=True)
class Proof:
    """A holder's answer to one audit.

    `indices` are the sorted, de-duplicated challenged indices; they ride
    along only so the signed bytes name them — the verifier recomputes them
    and rejects any mismatch. `segments[i]` belongs to `indices[i]`; `nodes`
    are the multi-proof's extra hashes in `_aux_positions` order.
    """

    nonce: bytes
    root: bytes
    holder_id: bytes
    indices: tuple[int, ...]
    segments: tuple[bytes, ...]
    nodes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.nonce) != HASH_LEN or len(self.root) != HASH_LEN:
            raise MalformedProof("nonce and root must be 32 bytes")
        if len(self.holder_id) > MAX_HOLDER_ID:
            raise MalformedProof("holder id too long")
        if len(self.indices) != len(self.segments):
            raise MalformedProof("one segment per index")

    def encode(self) -> bytes:
        """Binary layout (big-endian):
        "SHP1" nonce[32] root[32] u8 len holder_id | u32 m | m x u64 index |
        m x u32 segment length | segment bytes | u32 c | c x 32-byte node.
        """
        parts = [
            _PROOF_MAGIC,
            self.nonce,
            self.root,
            bytes([len(self.holder_id)]),
            self.holder_id,
            struct.pack(">I", len(self.indices)),
            struct.pack(f">{len(self.indices)}Q", *self.indices),
            struct.pack(f">{len(self.segments)}I", *(len(s) for s in self.segments)),
            *self.segments,
            struct.pack(">I", len(self.nodes)),
            *self.nodes,
        ]
        return b"".join(parts)

    def signing_bytes(self) -> bytes:
        """What the holder's identity key signs: a domain tag plus the encoding.

        The encoding already binds nonce, root and holder id, so a signed
        proof cannot be replayed for another audit, object or holder.
        """
        return _SIGN_DOMAIN + self.encode()

    @classmethod
    def decode(cls, data: bytes, commitment: Commitment, max_k: int = MAX_K) -> "Proof":
        """Strict, bounded decode: counts and lengths are checked against what
        `commitment` and `max_k` allow and against the bytes actually present
        before anything is sliced, so a hostile length never allocates.
        """
        mv = memoryview(data)
        pos = 0

        def take(nbytes: int) -> memoryview:
            nonlocal pos
            if nbytes < 0 or pos + nbytes > len(mv):
                raise MalformedProof("proof truncated")
            out = mv[pos : pos + nbytes]
            pos += nbytes
            return out

        if bytes(take(4)) != _PROOF_MAGIC:
            raise MalformedProof("not a proof (bad magic)")
        nonce = bytes(take(32))
        root = bytes(take(32))
        hlen = take(1)[0]
        if hlen > MAX_HOLDER_ID:
            raise MalformedProof("holder id too long")
        holder = bytes(take(hlen))
        n = commitment.n_segments
        (m,) = struct.unpack(">I", take(4))
        if m > min(max_k, n):
            raise MalformedProof("too many segments in proof")
        indices = struct.unpack(f">{m}Q", take(8 * m))
        lengths = struct.unpack(f">{m}I", take(4 * m))
        if any(ln > commitment.segment_size for ln in lengths):
            raise MalformedProof("segment longer than the segment size")
        segments = tuple(bytes(take(ln)) for ln in lengths)
        (c,) = struct.unpack(">I", take(4))
        depth = max(1, (n - 1).bit_length()) if n else 0
        if c > m * depth:
            raise MalformedProof("too many nodes in proof")
        raw = take(32 * c)
        nodes = tuple(bytes(raw[i : i + 32]) for i in range(0, 32 * c, 32))
        if pos != len(mv):
            raise MalformedProof("trailing bytes after proof")
        return cls(nonce, root, holder, tuple(indices), segments, nodes)


def make_proof(
    read_segment: Callable[[int], bytes],
    tree: NodeSource,
    nonce: bytes,
    holder_id: bytes,
    k: int,
) -> Proof:
    """Answer an audit: read only the challenged segments, take nodes from `tree`.

    `read_segment` may raise (e.g. BlockNotFound) if the holder lost data;
    that propagates, since there is no honest answer then.
    """
    c = tree.commitment
    idx = sorted(set(challenge_indices(nonce, c.root, holder_id, k, c.n_segments)))
    return prove_indices(read_segment, tree, idx, nonce, holder_id)


def prove_indices(
    read_segment: Callable[[int], bytes],
    tree: NodeSource,
    indices: Iterable[int],
    nonce: bytes,
    holder_id: bytes,
) -> Proof:
    """Proof for explicit indices (tests and tools; audits use `make_proof`)."""
    c = tree.commitment
    idx = sorted(set(indices))
    segments = tuple(read_segment(i) for i in idx)
    nodes = tuple(tree.node(level, i) for level, i in _aux_positions(idx, c.n_segments))
    return Proof(nonce, c.root, holder_id, tuple(idx), segments, nodes)


def verify_proof(commitment: Commitment, nonce: bytes, holder_id: bytes, k: int, proof: Proof) -> bool:
    """True iff `proof` answers this audit for this object and holder.

    Recomputes the indices itself (never trusts the prover's), requires each
    segment's exact length (the last may be short, by `commitment.length`),
    the exact multi-proof node count, and the committed root.
    """
    if proof.nonce != nonce or proof.root != commitment.root or proof.holder_id != holder_id:
        return False
    n = commitment.n_segments
    try:
        expected = sorted(set(challenge_indices(nonce, commitment.root, holder_id, k, n)))
    except ValueError:
        return False
    if list(proof.indices) != expected or len(proof.segments) != len(expected):
        return False
    if n == 0:
        return not proof.nodes
    if not expected:
        return False  # k < 1 proves nothing about a non-empty object
    for i, seg in zip(expected, proof.segments):
        if len(seg) != commitment.segment_length(i):
            return False
    if any(len(h) != HASH_LEN for h in proof.nodes):
        return False
    leaves = [leaf_hash(s) for s in proof.segments]
    return _root_from(expected, leaves, proof.nodes, n) == commitment.root
