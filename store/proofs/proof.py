"""Proofs of storage, part 3: the proof a holder sends, its codec and its check.

A proof answers one audit (shoal.store.proofs.challenge picks the
segments): the challenged segments, the leaf before each (so the verifier
resumes SHA-256 from it, see the tree rules in shoal.store.proofs.commitment),
and the multi-proof's extra Merkle nodes, each shared node sent once.
`Proof.encode` / `Proof.decode` are the wire format (strict, bounded: a
hostile count never allocates); `make_proof` answers an audit from a
prover's tree; `verify_proof` checks an answer against the commitment;
`max_proof_bytes` / `max_challenges` bound the encoding before any work.

Pure; no I/O, no signing (`Proof.signing_bytes()` says what the p2p
identity signs).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from shoal.store.proofs import sha256_chain
from shoal.store.proofs.challenge import MAX_K, challenge_indices
from shoal.store.proofs.commitment import Commitment, MalformedProof, NodeSource
from shoal.store.proofs.tree_shape import ARITY, HASH_LEN, NODE_PREFIX, PIECE_SEGMENTS, tree_depth

__all__ = ["MAX_HOLDER_ID", "Proof", "make_proof", "prove_indices", "prior_indices", "segment_leaves",
           "verify_proof", "max_proof_bytes", "max_challenges"]

MAX_HOLDER_ID = 128  # bytes; libp2p Ed25519 peer ids are 38

_NODE = NODE_PREFIX
_sha256 = hashlib.sha256

def _aux_positions(indices: Sequence[int], n: int) -> list[tuple[int, int]]:
    """(level, index) of the extra nodes a multi-proof carries, in wire order.

    Shared nodes are sent once: a sibling that is itself derivable from the
    known leaves is never sent. Both sides run this same walk: per level,
    for each group of 4 holding a known node, its other members (clipped to
    the level's width), left to right.
    """
    out: list[tuple[int, int]] = []
    known = sorted(set(indices))
    width, level = n, 0
    while width > 1:
        kset = set(known)
        groups = sorted({i // ARITY for i in known})
        for g in groups:
            for member in range(g * ARITY, min(g * ARITY + ARITY, width)):
                if member not in kset:
                    out.append((level, member))
        known, width, level = groups, -(-width // ARITY), level + 1
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
            for g in sorted({i // ARITY for i in values}):
                members = range(g * ARITY, min(g * ARITY + ARITY, width))
                hashes = [values[m] if m in values else next(aux) for m in members]
                nxt[g] = hashes[0] if len(hashes) == 1 else _sha256(_NODE + b"".join(hashes)).digest()
            values, width = nxt, -(-width // ARITY)
    except StopIteration:
        return None
    if next(aux, None) is not None:
        return None
    return values[0]


_PROOF_MAGIC = b"SHP2"
_PROOF_FIXED_BYTES = 4 + 32 + 32 + 1 + 4 + 4 + 4  # magic, nonce, root, id length, the three counts
_PER_SEGMENT_BYTES = 8 + 4  # its index and its length


def _max_aux_nodes(known: int, n: int) -> int:
    """At most how many multi-proof nodes `known` known leaves of n can need.

    Per level, every group of 4 that holds a known node sends at most its 3
    other members, and no level sends more nodes than it has; the groups
    holding a known node are at most the known count and at most the level's
    groups. Summed over the levels (tree_depth(n) of them).
    """
    total, width = 0, n
    while width > 1:
        groups = min(known, -(-width // ARITY))
        total += min(3 * groups, width - 1)
        width = -(-width // ARITY)
    return total


def max_proof_bytes(commitment: Commitment, k: int, holder_id_len: int) -> int:
    """An upper bound on `Proof.encode()` for any k challenges of this object.

    From the encoding: a fixed header and the holder id; per distinct index
    (at most min(k, n)) its index, length and segment; at most one prior
    leaf per index; and `_max_aux_nodes` over the indices and priors. No
    nonce can make a proof bigger than this, so a holder can check a count
    before doing any work.
    """
    n = commitment.n_segments
    m = min(max(0, k), n)
    if m == 0:
        return _PROOF_FIXED_BYTES + holder_id_len
    return (_PROOF_FIXED_BYTES + holder_id_len + m * (_PER_SEGMENT_BYTES + commitment.segment_size)
            + HASH_LEN * m + HASH_LEN * _max_aux_nodes(min(2 * m, n), n))


def max_challenges(commitment: Commitment, max_bytes: int, holder_id_len: int, hi: int = MAX_K) -> int:
    """The largest k <= hi whose worst-case proof fits in `max_bytes`.

    `max_proof_bytes` grows with k, so a binary search finds it; 0 if not
    even one challenge fits (segments bigger than the cap).
    """
    lo_k, hi_k = 0, hi
    while lo_k < hi_k:
        mid = (lo_k + hi_k + 1) // 2
        if max_proof_bytes(commitment, mid, holder_id_len) <= max_bytes:
            lo_k = mid
        else:
            hi_k = mid - 1
    return lo_k


_SIGN_DOMAIN = b"shoal-proof-v2\x00"


def prior_indices(indices: Sequence[int]) -> list[int]:
    """Leaves a proof for sorted unique `indices` must carry besides them.

    Segment j's leaf is recomputed from the leaf before it (the state its
    piece's SHA-256 had reached), unless j starts a piece (then the IV); so
    every such j - 1 that is not itself challenged rides along, sorted.
    """
    chosen = set(indices)
    return sorted({j - 1 for j in indices if j % PIECE_SEGMENTS and j - 1 not in chosen})


@dataclass(frozen=True)
class Proof:
    """A holder's answer to one audit.

    `indices` are the sorted, de-duplicated challenged indices; they ride
    along only so the signed bytes name them — the verifier recomputes them
    and rejects any mismatch. `segments[i]` belongs to `indices[i]`;
    `priors` are the leaves at `prior_indices(indices)`; `nodes` are the
    multi-proof's extra hashes in `_aux_positions` order over the indices
    and the prior indices together.
    """

    nonce: bytes
    root: bytes
    holder_id: bytes
    indices: tuple[int, ...]
    segments: tuple[bytes, ...]
    nodes: tuple[bytes, ...]
    priors: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.nonce) != HASH_LEN or len(self.root) != HASH_LEN:
            raise MalformedProof("nonce and root must be 32 bytes")
        if len(self.holder_id) > MAX_HOLDER_ID:
            raise MalformedProof("holder id too long")
        if len(self.indices) != len(self.segments):
            raise MalformedProof("one segment per index")

    def encode(self) -> bytes:
        """Binary layout (big-endian):
        "SHP2" nonce[32] root[32] u8 len holder_id | u32 m | m x u64 index |
        m x u32 segment length | segment bytes | u32 p | p x 32-byte prior leaf |
        u32 c | c x 32-byte node.
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
            struct.pack(">I", len(self.priors)),
            *self.priors,
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

        def hashes(count: int) -> tuple[bytes, ...]:
            raw = take(32 * count)
            return tuple(bytes(raw[i : i + 32]) for i in range(0, 32 * count, 32))

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
        (p,) = struct.unpack(">I", take(4))
        if p > m:
            raise MalformedProof("too many prior leaves in proof")
        priors = hashes(p)
        (c,) = struct.unpack(">I", take(4))
        depth = tree_depth(n)
        if c > (m + p) * depth * (ARITY - 1):
            raise MalformedProof("too many nodes in proof")
        nodes = hashes(c)
        if pos != len(mv):
            raise MalformedProof("trailing bytes after proof")
        return cls(nonce, root, holder, tuple(indices), segments, nodes, priors)


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
    before = prior_indices(idx)
    priors = tuple(tree.node(0, i) for i in before)
    known = sorted(idx + before)
    nodes = tuple(tree.node(level, i) for level, i in _aux_positions(known, c.n_segments))
    return Proof(nonce, c.root, holder_id, tuple(idx), segments, nodes, priors)


def segment_leaves(commitment: Commitment, indices: Sequence[int], segments: Sequence[bytes],
                   priors: dict[int, bytes]) -> dict[int, bytes] | None:
    """Leaves of the segments at sorted `indices`, resumed from the leaf before
    each (computed here or taken from `priors`); None if a length is wrong."""
    s = commitment.segment_size
    values: dict[int, bytes] = {}
    for j, seg in zip(indices, segments):
        if len(seg) != commitment.segment_length(j):
            return None
        pos = j % PIECE_SEGMENTS
        if pos == 0:
            state = sha256_chain.IV
        else:
            got = values.get(j - 1, priors.get(j - 1))
            if got is None:
                return None
            state = got
        values[j] = sha256_chain.resume(state, pos * s, seg, commitment.ends_piece(j))
    return values


def verify_proof(commitment: Commitment, nonce: bytes, holder_id: bytes, k: int, proof: Proof) -> bool:
    """True iff `proof` answers this audit for this object and holder.

    Recomputes the indices itself (never trusts the prover's), requires each
    segment's exact length (the last may be short, by `commitment.length`),
    the exact prior-leaf and multi-proof node counts, and the committed root.
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
        return not proof.nodes and not proof.priors
    if not expected:
        return False  # k < 1 proves nothing about a non-empty object
    before = prior_indices(expected)
    if len(proof.priors) != len(before):
        return False
    if any(len(h) != HASH_LEN for h in proof.nodes + proof.priors):
        return False
    priors = dict(zip(before, proof.priors))
    values = segment_leaves(commitment, expected, proof.segments, priors)
    if values is None:
        return False
    values.update(priors)
    known = sorted(values)
    return _root_from(known, [values[i] for i in known], proof.nodes, n) == commitment.root
