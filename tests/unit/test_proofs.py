"""Proofs of storage: tree rules, challenges, proofs, and their statistics.

Objects here are small (64-256 B segments, so 32-128 KiB pieces) so the
10,000-flip, 100,000-challenge and Monte Carlo tests run in seconds; the
rules do not depend on the sizes. Leaves are checked against two references
that share no code with the builder: hashlib (a piece's last leaf is its
SHA-256) and a recursive 4-ary split for the tree shape.
"""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.store.proofs import sha256_chain
from shoal.store.errors import StoreError
from shoal.store.proofs.challenge import _uniform, challenge_indices, default_k, detection_probability
from shoal.store.proofs.commitment import (
    DEFAULT_SEGMENT_SIZE, PIECE_SEGMENTS, Commitment, LeafHashes, MalformedProof, MerkleBuilder,
    MerkleTree, SparseTree, commit, commitment_from_pieces, node_hash, piece_leaves, segment_reader,
)
from shoal.store.proofs.proof import (
    Proof, _aux_positions, make_proof, prior_indices, prove_indices, verify_proof,
)
from shoal.store.proofs.tree_shape import piece_nodes

HOLDER = bytes.fromhex("0024080112") + bytes(range(33))  # shaped like an Ed25519 PeerId
OTHER = HOLDER[:-1] + b"\xff"


def _leaves(data: bytes, s: int) -> list[bytes]:
    """The leaves, piece by piece (each piece's last leaf checked against hashlib)."""
    piece = s * PIECE_SEGMENTS
    out: list[bytes] = []
    for off in range(0, len(data), piece):
        leaves = piece_leaves(data[off : off + piece], s)
        assert leaves[-1] == hashlib.sha256(data[off : off + piece]).digest()
        out += leaves
    return out


def _reference_root(data: bytes, s: int) -> bytes:
    """Independent recursive reference: split at the largest power of 4 < n."""

    def mth(hs: list[bytes]) -> bytes:
        if len(hs) == 1:
            return hs[0]
        k = 1
        while k * 4 < len(hs):
            k *= 4
        return node_hash(*(mth(hs[i : i + k]) for i in range(0, len(hs), k)))

    leaves = _leaves(data, s)
    return mth(leaves) if leaves else hashlib.sha256(b"").digest()


def _setup(length: int, s: int, seed: int = 0) -> tuple[bytes, Commitment, MerkleTree]:
    data = random.Random(seed).randbytes(length)
    c = commit(data, s)
    return data, c, MerkleTree.from_segments(segment_reader(data, s), c)


# ---------------------------------------------------------------- tree rules


def _state(prefix: bytes) -> bytes:
    """SHA-256's chaining value after `prefix` (whole blocks), by the pure-Python code."""
    return sha256_chain._py_resume(sha256_chain.IV, 0, prefix, False)


def test_known_small_trees() -> None:
    s = 64
    a, b, c = b"a" * 64, b"b" * 64, b"cc"
    one = hashlib.sha256(a).digest()
    assert commit(a, s).root == one  # one segment: the root is the piece's digest
    la, lb, lc = _state(a), _state(a + b), hashlib.sha256(a + b + c).digest()
    assert piece_leaves(a + b + c, s) == [la, lb, lc]
    assert commit(a + b, s).root == hashlib.sha256(b"\x01" + la + hashlib.sha256(a + b).digest()).digest()
    assert commit(a + b + c, s).root == hashlib.sha256(b"\x01" + la + lb + lc).digest()
    assert commit(a + b + c, s).length == 130
    # five leaves: four make a node, the lone fifth is promoted, not duplicated
    five = bytes(range(64)) * 5
    ls = _leaves(five, s)
    assert commit(five, s).root == node_hash(node_hash(*ls[:4]), ls[4])


def test_pieces_restart_the_chain() -> None:
    """A piece's leaves depend only on that piece: each starts from the IV."""
    s = 64
    piece = s * PIECE_SEGMENTS
    data = random.Random(5).randbytes(2 * piece + 100)
    leaves = _leaves(data, s)
    assert len(leaves) == 2 * PIECE_SEGMENTS + 2
    assert leaves[PIECE_SEGMENTS] == _state(data[piece : piece + s])
    assert leaves[PIECE_SEGMENTS - 1] == hashlib.sha256(data[:piece]).digest()
    assert leaves[-1] == hashlib.sha256(data[2 * piece :]).digest()
    assert commit(data, s).root == _reference_root(data, s)


@pytest.mark.parametrize("length", [1, 64, 64 * 255, 64 * 256, 64 * 257, 64 * 512, 64 * 512 + 1, 64 * 1600 + 7])
def test_commitment_from_piece_nodes(length: int) -> None:
    """What the put's helpers send back (two level-4 nodes a piece) folds to the same root."""
    s = 64
    data = random.Random(length).randbytes(length)
    piece = s * PIECE_SEGMENTS
    nodes: list[bytes] = []
    for off in range(0, length, piece):
        flat = b"".join(piece_leaves(data[off : off + piece], s))
        got = piece_nodes(flat)
        nodes += [got[i : i + 32] for i in range(0, len(got), 32)]
    assert commitment_from_pieces(nodes, length, s) == commit(data, s)
    with pytest.raises(ValueError):
        commitment_from_pieces(nodes + nodes[:1], length, s)


def test_empty_object() -> None:
    c = commit(b"", 64)
    assert c.root == hashlib.sha256(b"").digest() and c.length == 0 and c.n_segments == 0
    assert challenge_indices(bytes(32), c.root, HOLDER, 66, 0) == []
    p = Proof(bytes(32), c.root, HOLDER, (), (), ())
    assert verify_proof(c, bytes(32), HOLDER, 66, p)
    assert verify_proof(c, bytes(32), HOLDER, 66, Proof.decode(p.encode(), c))


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=40_000),
    s=st.sampled_from([64, 128, 192]),
    cuts=st.lists(st.integers(1, 9000), max_size=20),
)
def test_streaming_builder_matches_reference(data: bytes, s: int, cuts: list[int]) -> None:
    sink: list[bytes] = []
    b = MerkleBuilder(s, leaf_sink=sink.append)
    pos = 0
    for cut in cuts:
        b.update(data[pos : pos + cut])
        pos += cut
    b.update(data[pos:])
    c = b.finish()
    assert c.root == _reference_root(data, s)
    assert c.length == len(data) and c.segment_size == s
    leaves = LeafHashes(b"".join(sink), c)
    assert len(leaves) == c.n_segments
    assert MerkleTree.from_leaf_hashes(leaves).levels[-1][0] == c.root if data else True


def test_builder_memory_is_logarithmic() -> None:
    b = MerkleBuilder(64)
    for _ in range(500):
        b.update(bytes(997))
    assert len(b._buf) < 64 * PIECE_SEGMENTS  # at most one piece waits
    assert sum(len(level) for level in b._pending) <= 3 * len(b._pending)
    assert len(b._pending) <= 4 + (500 * 997 // 64).bit_length() // 2 + 1


def test_commitment_encoding() -> None:
    _, c, _ = _setup(1000, 64)
    raw = c.encode()
    assert len(raw) < 64
    assert Commitment.decode(raw) == c
    with pytest.raises(MalformedProof):
        Commitment.decode(raw[:-1])
    with pytest.raises(MalformedProof):
        Commitment.decode(b"\x01" + raw[1:])  # version 1: SHA-256(0x00 ‖ segment) leaves, binary tree
    with pytest.raises(MalformedProof):
        Commitment.decode(b"\x03" + raw[1:])
    with pytest.raises(StoreError):
        Commitment(bytes(32), 0, 64)  # an empty object must have the empty root


def test_leaf_hashes_must_match() -> None:
    data, c, _ = _setup(1000, 64)
    raw = b"".join(_leaves(data, 64))
    with pytest.raises(MalformedProof):
        LeafHashes(raw[:-32], c)
    bad = bytearray(raw)
    bad[5] ^= 1
    with pytest.raises(MalformedProof):
        MerkleTree.from_leaf_hashes(LeafHashes(bytes(bad), c))


def test_segment_size_default() -> None:
    assert DEFAULT_SEGMENT_SIZE == 2048


# ---------------------------------------------------------------- challenges


def test_default_k_and_detection() -> None:
    assert default_k() == 66
    assert default_k(0.01) == 688
    assert 0.999 <= detection_probability(0.10, 66) and detection_probability(0.10, 65) < 0.999
    assert detection_probability(0.0, 100) == 0.0
    assert detection_probability(0.10, 5) == pytest.approx(1 - 0.9**5)


def test_indices_depend_on_every_input() -> None:
    root = bytes(range(32))
    base = challenge_indices(bytes(32), root, HOLDER, 66, 1 << 20)
    assert len(base) == 66 and all(0 <= i < 1 << 20 for i in base)
    assert challenge_indices(bytes(32), root, HOLDER, 66, 1 << 20) == base
    assert challenge_indices(b"\x01" + bytes(31), root, HOLDER, 66, 1 << 20) != base
    assert challenge_indices(bytes(32), bytes(32), HOLDER, 66, 1 << 20) != base
    assert challenge_indices(bytes(32), root, OTHER, 66, 1 << 20) != base
    first = hashlib.sha256(bytes(32) + root + HOLDER + (0).to_bytes(8, "big")).digest()
    assert base[0] == int.from_bytes(first[:8], "big") % (1 << 20)


def test_rejection_sampling_edge_cases() -> None:
    rnd = random.Random(7)
    assert set(challenge_indices(bytes(32), bytes(32), HOLDER, 200, 1)) == {0}
    for k in (1, 10, 63, 64):  # n = 2^k: 2^64 is a multiple, nothing is ever rejected
        for _ in range(50):
            d = rnd.randbytes(32)
            assert _uniform(d, 1 << k) == int.from_bytes(d[:8], "big") % (1 << k)
    # n = 2^63 + 1: the largest multiple below 2^64 is n itself, so about half
    # of the draws are rejected and re-hashed with a counter.
    n = (1 << 63) + 1
    rejected = 0
    for _ in range(400):
        d = rnd.randbytes(32)
        v = int.from_bytes(d[:8], "big")
        out = _uniform(d, n)
        assert 0 <= out < n
        if v >= n:
            rejected += 1
            again = hashlib.sha256(d + (1).to_bytes(4, "big")).digest()
            w = int.from_bytes(again[:8], "big")
            if w < n:
                assert out == w
        else:
            assert out == v
    assert 120 < rejected < 280
    huge = challenge_indices(bytes(32), bytes(32), HOLDER, 100, 1 << 64)
    assert all(0 <= i < 1 << 64 for i in huge)
    with pytest.raises(ValueError):
        challenge_indices(bytes(32), bytes(32), HOLDER, 1, (1 << 64) + 1)
    with pytest.raises(ValueError):
        challenge_indices(bytes(31), bytes(32), HOLDER, 1, 10)


@pytest.mark.parametrize("n", [37, 1000])
def test_challenge_indices_are_uniform(n: int) -> None:
    bins = 37
    counts = [0] * bins
    draws = 74_000
    rnd = random.Random(n)
    root = rnd.randbytes(32)
    for _ in range(draws // 1000):
        for i in challenge_indices(rnd.randbytes(32), root, HOLDER, 1000, n):
            counts[i * bins // n] += 1
    # Expected counts per bin follow from how many indices fall into each bin.
    expected = [draws * (((b + 1) * n + bins - 1) // bins - (b * n + bins - 1) // bins) / n for b in range(bins)]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(counts, expected))
    df = bins - 1
    # ~ 6 sigma of a chi-square with df degrees of freedom: false alarm < 1e-6.
    assert chi2 < df + 6 * math.sqrt(2 * df), chi2


# ---------------------------------------------------------------- proofs


@pytest.mark.parametrize("length,s,k", [(1, 64, 5), (64, 64, 3), (65, 64, 10), (1000, 64, 66), (65536, 64, 100),
                                        (64 * 512 * 3 + 5, 64, 300)])
def test_valid_proofs_verify(length: int, s: int, k: int) -> None:
    data, c, tree = _setup(length, s)
    nonce = bytes(range(32))
    p = make_proof(segment_reader(data, s), tree, nonce, HOLDER, k)
    assert verify_proof(c, nonce, HOLDER, k, p)
    q = Proof.decode(p.encode(), c, max_k=k)
    assert q == p and verify_proof(c, nonce, HOLDER, k, q)
    assert len(p.signing_bytes()) > len(p.encode())


def test_short_last_segment_length_is_exact() -> None:
    data, c, tree = _setup(400, 64)  # 7 segments, the last one 16 bytes
    assert c.segment_length(6) == 16
    nonce = bytes(32)
    p = prove_indices(segment_reader(data, 64), tree, [6], nonce, HOLDER)
    padded = Proof(p.nonce, p.root, p.holder_id, p.indices, (p.segments[0] + bytes(48),), p.nodes, p.priors)
    assert not verify_proof(c, nonce, HOLDER, 1, padded)


def test_priors_are_the_leaves_before_unchallenged_neighbours() -> None:
    n = PIECE_SEGMENTS
    assert prior_indices([0, n, 2 * n]) == []  # piece starts resume from the IV
    assert prior_indices([1, 2, 5, n + 1]) == [0, 4, n]
    data, c, tree = _setup(64 * 2 * n, 64)
    p = prove_indices(segment_reader(data, 64), tree, [3, n + 1], bytes(32), HOLDER)
    assert p.priors == (tree.node(0, 2), tree.node(0, n))
    # a proof without its priors, or with a wrong one, proves nothing
    for priors in ((), (p.priors[0],), (p.priors[1], p.priors[0])):
        q = Proof(p.nonce, p.root, p.holder_id, p.indices, p.segments, p.nodes, priors)
        assert not verify_proof(c, bytes(32), HOLDER, 0, q)


def test_prover_reads_only_challenged_segments() -> None:
    data, c, _ = _setup(40_000, 64)
    sink: list[bytes] = []
    b = MerkleBuilder(64, leaf_sink=sink.append)
    b.update(data)
    assert b.finish() == c
    tree = MerkleTree.from_leaf_hashes(LeafHashes(b"".join(sink), c))
    real = segment_reader(data, 64)
    reads: list[int] = []

    def read(i: int) -> bytes:
        reads.append(i)
        return real(i)

    nonce = bytes(32)
    p = make_proof(read, tree, nonce, HOLDER, 66)
    assert sorted(reads) == sorted(set(challenge_indices(nonce, c.root, HOLDER, 66, c.n_segments)))
    assert verify_proof(c, nonce, HOLDER, 66, p)


@pytest.mark.parametrize("n", [1, 2, 31, 32, 33, 100, 1025])
@pytest.mark.parametrize("height", [0, 1, 3])
def test_sparse_tree_gives_the_same_proofs(n: int, height: int) -> None:
    data, c, full = _setup(n * 64 - 3, 64, seed=n)
    leaves = LeafHashes(b"".join(full.levels[0]), c)
    sparse = SparseTree(leaves.read, c, height=height, batch=64)
    read = segment_reader(data, 64)
    for t in range(5):
        nonce = bytes([t]) * 32
        p = make_proof(read, sparse, nonce, HOLDER, 20)
        assert p == make_proof(read, full, nonce, HOLDER, 20)
        assert verify_proof(c, nonce, HOLDER, 20, p)
    bad = bytearray(leaves.raw)
    bad[-1] ^= 1
    with pytest.raises(MalformedProof):
        SparseTree(LeafHashes(bytes(bad), c).read, c, height=height)


def test_shared_nodes_are_sent_once() -> None:
    assert _aux_positions([0, 1], 4) == [(0, 2), (0, 3)]
    assert _aux_positions([0, 3], 4) == [(0, 1), (0, 2)]
    assert _aux_positions([0, 5], 8) == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 6), (0, 7)]
    assert _aux_positions([0], 16) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert _aux_positions([4], 5) == [(1, 0)]  # the promoted leaf needs only the left subtree
    assert _aux_positions(list(range(16)), 16) == []


def test_other_nonce_or_holder_is_rejected() -> None:
    data, c, tree = _setup(100_000, 64)
    nonce = bytes(32)
    p = make_proof(segment_reader(data, 64), tree, nonce, HOLDER, 20)
    assert verify_proof(c, nonce, HOLDER, 20, p)
    assert not verify_proof(c, b"\x01" + bytes(31), HOLDER, 20, p)
    assert not verify_proof(c, nonce, OTHER, 20, p)
    assert not verify_proof(c, nonce, HOLDER, 21, p)
    # relabelling a proof with the other holder's id does not help either
    relabelled = Proof(p.nonce, p.root, OTHER, p.indices, p.segments, p.nodes, p.priors)
    assert not verify_proof(c, nonce, OTHER, 20, relabelled)
    other_obj = commit(data[:-1], 64)
    assert not verify_proof(other_obj, nonce, HOLDER, 20, p)


def test_decode_is_bounded() -> None:
    data, c, tree = _setup(1000, 64)
    nonce = bytes(32)
    raw = make_proof(segment_reader(data, 64), tree, nonce, HOLDER, 10).encode()
    with pytest.raises(MalformedProof):
        Proof.decode(raw, c, max_k=3)  # more segments than the audit asked for
    with pytest.raises(MalformedProof):
        Proof.decode(raw + b"\x00", c)
    with pytest.raises(MalformedProof):
        Proof.decode(raw[:-1], c)
    # hostile count: 2^32-1 segments claimed in a tiny message
    hdr = 4 + 32 + 32 + 1 + len(HOLDER)
    hostile = raw[:hdr] + b"\xff\xff\xff\xff" + raw[hdr + 4 :]
    with pytest.raises(MalformedProof):
        Proof.decode(hostile, c)
    with pytest.raises(MalformedProof):
        Proof.decode(b"XXXX" + raw[4:], c)


def _flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_ten_thousand_bit_flips_in_encoded_proofs_are_rejected() -> None:
    data, c, tree = _setup(37 * 64 - 19, 64)  # 37 segments, the last short
    rnd = random.Random(1)
    nonce = rnd.randbytes(32)
    k = 8
    raw = make_proof(segment_reader(data, 64), tree, nonce, HOLDER, k).encode()
    for _ in range(10_000):
        bad = _flip(raw, rnd.randrange(len(raw) * 8))
        try:
            p = Proof.decode(bad, c, max_k=k)
        except MalformedProof:
            continue
        assert not verify_proof(c, nonce, HOLDER, k, p)


def test_ten_thousand_bit_flips_in_proof_fields_are_rejected() -> None:
    data, c, tree = _setup(37 * 64 - 19, 64)
    rnd = random.Random(2)
    nonce = rnd.randbytes(32)
    k = 8
    p = make_proof(segment_reader(data, 64), tree, nonce, HOLDER, k)
    assert p.nodes and p.segments and p.priors
    for trial in range(10_000):
        field = trial % 4
        segments, nodes, indices, priors = p.segments, p.nodes, p.indices, p.priors
        if field == 0:
            i = rnd.randrange(len(segments))
            seg = _flip(segments[i], rnd.randrange(len(segments[i]) * 8))
            segments = segments[:i] + (seg,) + segments[i + 1 :]
        elif field == 1:
            i = rnd.randrange(len(nodes))
            nodes = nodes[:i] + (_flip(nodes[i], rnd.randrange(256)),) + nodes[i + 1 :]
        elif field == 2:
            i = rnd.randrange(len(indices))
            indices = indices[:i] + (indices[i] ^ (1 << rnd.randrange(64)),) + indices[i + 1 :]
        else:
            i = rnd.randrange(len(priors))
            priors = priors[:i] + (_flip(priors[i], rnd.randrange(256)),) + priors[i + 1 :]
        q = Proof(p.nonce, p.root, p.holder_id, indices, segments, nodes, priors)
        assert not verify_proof(c, nonce, HOLDER, k, q)


def test_honest_holder_passes_100k_challenges() -> None:
    data, c, tree = _setup(4096 * 64, 64)
    read = segment_reader(data, 64)
    rnd = random.Random(3)
    challenges = 0
    for _ in range(1000):
        nonce = rnd.randbytes(32)
        p = make_proof(read, tree, nonce, HOLDER, 100)
        assert verify_proof(c, nonce, HOLDER, 100, Proof.decode(p.encode(), c, max_k=100))
        challenges += 100
    assert challenges == 100_000


def _binomial_interval(n: int, p: float, alpha: float) -> tuple[int, int]:
    """Smallest [lo, hi] with P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2."""
    pmf = [math.comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(n + 1)] if n <= 2000 else None
    if pmf is None:
        logs = [math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * math.log(p) + (n - x) * math.log1p(-p) for x in range(n + 1)]
        pmf = [math.exp(v) for v in logs]
    acc, lo = 0.0, 0
    while acc + pmf[lo] <= alpha / 2:
        acc += pmf[lo]
        lo += 1
    acc, hi = 0.0, n
    while acc + pmf[hi] <= alpha / 2:
        acc += pmf[hi]
        hi -= 1
    return lo, hi


@pytest.mark.parametrize("k", [66, 22])
def test_monte_carlo_escape_rate_matches_formula(k: int) -> None:
    """Holders that lost 10 % of segments, 5,000 seeded audits each.

    The holder answers what it can and forges zeros for the lost segments;
    an audit 'escapes' if the forged proof verifies. The count must fall in
    the exact binomial interval for (1 - 0.1)^k at a 1e-6 false-alarm rate.
    """
    s, n = 64, 1000
    data, c, tree = _setup(n * s, s, seed=k)
    rnd = random.Random(1000 + k)
    lost = set(rnd.sample(range(n), n // 10))
    real = segment_reader(data, s)

    def read(i: int) -> bytes:
        return bytes(s) if i in lost else real(i)

    audits = 5000
    escapes = 0
    for _ in range(audits):
        nonce = rnd.randbytes(32)
        p = make_proof(read, tree, nonce, HOLDER, k)
        escapes += verify_proof(c, nonce, HOLDER, k, p)
    p_escape = 0.9**k
    lo, hi = _binomial_interval(audits, p_escape, 1e-6)
    assert lo <= escapes <= hi, (escapes, audits * p_escape, lo, hi)


# ---------------------------------------------------------------- precomputed leaves


@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 64 * 7, 64 * 512, 64 * 512 + 3, 64 * 1024, 64 * 1536 + 1])
def test_add_leaf_hashes_matches_commit(length: int) -> None:
    """Leaves of whole pieces folded from outside give the same root and leaf_sink bytes."""
    s = 64
    piece = s * PIECE_SEGMENTS
    data = random.Random(length).randbytes(length)
    whole = length - length % piece
    sunk: list[bytes] = []
    b = MerkleBuilder(s, leaf_sink=sunk.append)
    b.add_leaf_hashes(_leaves(data[:whole], s))
    b.update(data[whole:])
    ref_sunk: list[bytes] = []
    ref = MerkleBuilder(s, leaf_sink=ref_sunk.append)
    ref.update(data)
    c = b.finish()
    assert c == ref.finish() == commit(data, s)
    assert c.root == _reference_root(data, s)
    assert b"".join(sunk) == b"".join(ref_sunk)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=8), st.integers(0, 2**32))
def test_add_leaf_hashes_interleaved_with_update(steps: list[tuple[bool, int]], seed: int) -> None:
    """Any mix of update() bytes and runs of whole pieces' leaves: same commitment."""
    s = 64
    piece = s * PIECE_SEGMENTS
    rng = random.Random(seed)
    b = MerkleBuilder(s)
    fed = bytearray()
    for as_leaves, pieces in steps:
        if as_leaves and len(fed) % piece == 0:
            more = rng.randbytes(pieces * piece)
            b.add_leaf_hashes(_leaves(more, s))
        else:
            more = rng.randbytes(pieces * 5000 + rng.randrange(100))
            b.update(more)
        fed += more
    assert b.finish() == commit(bytes(fed), s)


def test_add_leaf_hashes_refuses_misuse() -> None:
    b = MerkleBuilder(64)
    b.update(b"x" * 5)
    with pytest.raises(ValueError):
        b.add_leaf_hashes([bytes(32)])  # not on a piece boundary
    b.update(b"x" * (64 * PIECE_SEGMENTS - 5))
    with pytest.raises(ValueError):
        b.add_leaf_hashes([b"short"])
    b.add_leaf_hashes([])
    b.add_leaf_hashes([bytes(32)] * 3)  # a short piece: the object's last
    with pytest.raises(ValueError):
        b.add_leaf_hashes([bytes(32)])  # nothing may follow a short piece
    b.finish()
    with pytest.raises(ValueError):
        b.add_leaf_hashes([bytes(32)])


@pytest.mark.parametrize("s", [0, 1, 16, 100, 2047, (1 << 24) + 64])
def test_segment_sizes_that_cannot_cut_pieces_are_refused(s: int) -> None:
    with pytest.raises(ValueError):
        MerkleBuilder(s)
    with pytest.raises(MalformedProof):
        Commitment(hashlib.sha256(b"").digest(), 0, s)
