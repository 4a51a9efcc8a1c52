"""Proofs of storage: tree rules, challenges, proofs, and their statistics.

Objects here are tiny (16-64 B segments) so the 10,000-flip, 100,000-challenge
and Monte Carlo tests run in seconds; the rules do not depend on the sizes.
"""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import StoreError
from store.proofs import (
    DEFAULT_SEGMENT_SIZE,
    Commitment,
    LeafHashes,
    MalformedProof,
    MerkleBuilder,
    MerkleTree,
    Proof,
    SparseTree,
    _aux_positions,
    _uniform,
    challenge_indices,
    commit,
    default_k,
    detection_probability,
    leaf_hash,
    make_proof,
    node_hash,
    prove_indices,
    segment_reader,
    verify_proof,
)

HOLDER = bytes.fromhex("0024080112") + bytes(range(33))  # shaped like an Ed25519 PeerId
OTHER = HOLDER[:-1] + b"\xff"


def _rfc6962_root(data: bytes, s: int) -> bytes:
    """Independent recursive reference: split at the largest power of two < n."""
    leaves = [leaf_hash(data[i : i + s]) for i in range(0, len(data), s)]

    def mth(hs: list[bytes]) -> bytes:
        if len(hs) == 1:
            return hs[0]
        k = 1 << ((len(hs) - 1).bit_length() - 1)
        return node_hash(mth(hs[:k]), mth(hs[k:]))

    return mth(leaves) if leaves else hashlib.sha256(b"").digest()


def _setup(length: int, s: int, seed: int = 0) -> tuple[bytes, Commitment, MerkleTree]:
    data = random.Random(seed).randbytes(length)
    c = commit(data, s)
    return data, c, MerkleTree.from_segments(segment_reader(data, s), c)


# ---------------------------------------------------------------- tree rules


def test_known_small_trees() -> None:
    s = 4
    a, b, c = b"aaaa", b"bbbb", b"cc"
    la, lb, lc = (hashlib.sha256(b"\x00" + x).digest() for x in (a, b, c))
    assert commit(a, s).root == la  # one segment: the root is its leaf hash
    assert commit(a + b, s).root == hashlib.sha256(b"\x01" + la + lb).digest()
    # three leaves: the lone third is promoted, not duplicated
    assert commit(a + b + c, s).root == node_hash(node_hash(la, lb), lc)
    assert commit(a + b + c, s).length == 10


def test_empty_object() -> None:
    c = commit(b"", 16)
    assert c.root == hashlib.sha256(b"").digest() and c.length == 0 and c.n_segments == 0
    assert challenge_indices(bytes(32), c.root, HOLDER, 66, 0) == []
    p = Proof(bytes(32), c.root, HOLDER, (), (), ())
    assert verify_proof(c, bytes(32), HOLDER, 66, p)
    assert verify_proof(c, bytes(32), HOLDER, 66, Proof.decode(p.encode(), c))


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=3000),
    s=st.sampled_from([1, 3, 16, 64, 100]),
    cuts=st.lists(st.integers(1, 700), max_size=20),
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
    assert c.root == _rfc6962_root(data, s)
    assert c.length == len(data) and c.segment_size == s
    leaves = LeafHashes(b"".join(sink), c)
    assert len(leaves) == c.n_segments
    assert MerkleTree.from_leaf_hashes(leaves).levels[-1][0] == c.root if data else True


def test_builder_memory_is_logarithmic() -> None:
    b = MerkleBuilder(1)
    for _ in range(50):
        b.update(bytes(997))
    assert len(b._stack) <= (50 * 997).bit_length()


def test_commitment_encoding() -> None:
    _, c, _ = _setup(1000, 64)
    raw = c.encode()
    assert len(raw) < 64
    assert Commitment.decode(raw) == c
    with pytest.raises(MalformedProof):
        Commitment.decode(raw[:-1])
    with pytest.raises(MalformedProof):
        Commitment.decode(b"\x02" + raw[1:])
    with pytest.raises(StoreError):
        Commitment(bytes(32), 0, 64)  # an empty object must have the empty root


def test_leaf_hashes_must_match() -> None:
    data, c, _ = _setup(1000, 64)
    raw = b"".join(leaf_hash(data[i : i + 64]) for i in range(0, 1000, 64))
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


@pytest.mark.parametrize("length,s,k", [(1, 16, 5), (16, 16, 3), (17, 16, 10), (1000, 64, 66), (4096, 16, 100)])
def test_valid_proofs_verify(length: int, s: int, k: int) -> None:
    data, c, tree = _setup(length, s)
    nonce = bytes(range(32))
    p = make_proof(segment_reader(data, s), tree, nonce, HOLDER, k)
    assert verify_proof(c, nonce, HOLDER, k, p)
    q = Proof.decode(p.encode(), c, max_k=k)
    assert q == p and verify_proof(c, nonce, HOLDER, k, q)
    assert len(p.signing_bytes()) > len(p.encode())


def test_short_last_segment_length_is_exact() -> None:
    data, c, tree = _setup(100, 16)  # 7 segments, the last one 4 bytes
    assert c.segment_length(6) == 4
    nonce = bytes(32)
    p = prove_indices(segment_reader(data, 16), tree, [6], nonce, HOLDER)
    padded = Proof(p.nonce, p.root, p.holder_id, p.indices, (p.segments[0] + bytes(12),), p.nodes)
    assert not verify_proof(c, nonce, HOLDER, 1, padded)


def test_prover_reads_only_challenged_segments() -> None:
    data, c, _ = _setup(10_000, 16)
    sink: list[bytes] = []
    b = MerkleBuilder(16, leaf_sink=sink.append)
    b.update(data)
    assert b.finish() == c
    tree = MerkleTree.from_leaf_hashes(LeafHashes(b"".join(sink), c))
    real = segment_reader(data, 16)
    reads: list[int] = []

    def read(i: int) -> bytes:
        reads.append(i)
        return real(i)

    nonce = bytes(32)
    p = make_proof(read, tree, nonce, HOLDER, 66)
    assert sorted(reads) == sorted(set(challenge_indices(nonce, c.root, HOLDER, 66, c.n_segments)))
    assert verify_proof(c, nonce, HOLDER, 66, p)


@pytest.mark.parametrize("n", [1, 2, 31, 32, 33, 100, 1025])
@pytest.mark.parametrize("height", [0, 1, 5])
def test_sparse_tree_gives_the_same_proofs(n: int, height: int) -> None:
    data, c, full = _setup(n * 8 - 3, 8, seed=n)
    leaves = LeafHashes(b"".join(full.levels[0]), c)
    sparse = SparseTree(leaves.read, c, height=height, batch=64)
    read = segment_reader(data, 8)
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
    assert _aux_positions([0, 1], 4) == [(1, 1)]
    assert _aux_positions([0, 3], 4) == [(0, 1), (0, 2)]
    assert _aux_positions([4], 5) == [(2, 0)]  # the promoted leaf needs only the left subtree
    assert _aux_positions(list(range(8)), 8) == []


def test_other_nonce_or_holder_is_rejected() -> None:
    data, c, tree = _setup(100_000, 16)
    nonce = bytes(32)
    p = make_proof(segment_reader(data, 16), tree, nonce, HOLDER, 20)
    assert verify_proof(c, nonce, HOLDER, 20, p)
    assert not verify_proof(c, b"\x01" + bytes(31), HOLDER, 20, p)
    assert not verify_proof(c, nonce, OTHER, 20, p)
    assert not verify_proof(c, nonce, HOLDER, 21, p)
    # relabelling a proof with the other holder's id does not help either
    relabelled = Proof(p.nonce, p.root, OTHER, p.indices, p.segments, p.nodes)
    assert not verify_proof(c, nonce, OTHER, 20, relabelled)
    other_obj = commit(data[:-1], 16)
    assert not verify_proof(other_obj, nonce, HOLDER, 20, p)


def test_decode_is_bounded() -> None:
    data, c, tree = _setup(1000, 16)
    nonce = bytes(32)
    raw = make_proof(segment_reader(data, 16), tree, nonce, HOLDER, 10).encode()
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
    assert p.nodes and p.segments
    for trial in range(10_000):
        field = trial % 3
        if field == 0:
            i = rnd.randrange(len(p.segments))
            seg = _flip(p.segments[i], rnd.randrange(len(p.segments[i]) * 8))
            q = Proof(p.nonce, p.root, p.holder_id, p.indices, p.segments[:i] + (seg,) + p.segments[i + 1 :], p.nodes)
        elif field == 1:
            i = rnd.randrange(len(p.nodes))
            node = _flip(p.nodes[i], rnd.randrange(256))
            q = Proof(p.nonce, p.root, p.holder_id, p.indices, p.segments, p.nodes[:i] + (node,) + p.nodes[i + 1 :])
        else:
            i = rnd.randrange(len(p.indices))
            idx = p.indices[i] ^ (1 << rnd.randrange(64))
            q = Proof(p.nonce, p.root, p.holder_id, p.indices[:i] + (idx,) + p.indices[i + 1 :], p.segments, p.nodes)
        assert not verify_proof(c, nonce, HOLDER, k, q)


def test_honest_holder_passes_100k_challenges() -> None:
    data, c, tree = _setup(4096 * 16, 16)
    read = segment_reader(data, 16)
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
    s, n = 16, 1000
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


@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 64 * 7, 64 * 8 + 3, 64 * 33, 64 * 64 + 1])
def test_add_leaf_hashes_matches_commit(length: int) -> None:
    """Leaves folded from outside give the same root and the same leaf_sink bytes."""
    s = 64
    data = random.Random(length).randbytes(length)
    whole = length - length % s
    sunk: list[bytes] = []
    b = MerkleBuilder(s, leaf_sink=sunk.append)
    b.add_leaf_hashes([leaf_hash(data[i : i + s]) for i in range(0, whole, s)])
    b.update(data[whole:])
    ref_sunk: list[bytes] = []
    ref = MerkleBuilder(s, leaf_sink=ref_sunk.append)
    ref.update(data)
    c = b.finish()
    assert c == ref.finish() == commit(data, s)
    assert c.root == _rfc6962_root(data, s)
    assert b"".join(sunk) == b"".join(ref_sunk)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=12), st.integers(0, 2**32))
def test_add_leaf_hashes_interleaved_with_update(steps: list[tuple[bool, int]], seed: int) -> None:
    """Any mix of update() pieces and aligned runs of precomputed leaves: same commitment."""
    s = 16
    rng = random.Random(seed)
    b = MerkleBuilder(s)
    fed = bytearray()
    for as_leaves, n in steps:
        piece = rng.randbytes(n)
        if as_leaves and len(fed) % s == 0:
            piece = piece[: len(piece) - len(piece) % s]
            b.add_leaf_hashes([leaf_hash(piece[i : i + s]) for i in range(0, len(piece), s)])
        else:
            b.update(piece)
        fed += piece
    assert b.finish() == commit(bytes(fed), s)


def test_add_leaf_hashes_refuses_misuse() -> None:
    b = MerkleBuilder(16)
    b.update(b"x" * 5)
    with pytest.raises(ValueError):
        b.add_leaf_hashes([leaf_hash(b"y" * 16)])  # not on a segment boundary
    b.update(b"x" * 11)
    with pytest.raises(ValueError):
        b.add_leaf_hashes([b"short"])
    b.add_leaf_hashes([])
    b.finish()
    with pytest.raises(ValueError):
        b.add_leaf_hashes([leaf_hash(b"y" * 16)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), max_size=10), st.sampled_from([16, 64, 2048, 4096]), st.integers(0, 2**32))
def test_update_keeping_gil_matches_update(pieces: list[int], s: int, seed: int) -> None:
    """Same commitment and same leaf_sink bytes as `update`, for any piece sizes."""
    rng = random.Random(seed)
    sunk: list[bytes] = []
    ref_sunk: list[bytes] = []
    b = MerkleBuilder(s, leaf_sink=sunk.append)
    ref = MerkleBuilder(s, leaf_sink=ref_sunk.append)
    data = bytearray()
    for n in pieces:
        piece = rng.randbytes(n)
        b.update_keeping_gil(piece)
        ref.update(piece)
        data += piece
    c = b.finish()
    assert c == ref.finish() == commit(bytes(data), s)
    assert b"".join(sunk) == b"".join(ref_sunk)


def test_segment_leaf_hashes() -> None:
    from store.proofs import segment_leaf_hashes

    data = random.Random(3).randbytes(DEFAULT_SEGMENT_SIZE * 5)
    s = DEFAULT_SEGMENT_SIZE
    assert segment_leaf_hashes(data) == [leaf_hash(data[i : i + s]) for i in range(0, len(data), s)]
    assert segment_leaf_hashes(b"") == []
    with pytest.raises(ValueError):
        segment_leaf_hashes(data[:-1])
