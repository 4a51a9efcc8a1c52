"""Replication's synchronous parts: offers and agreements, the tables,
commitments over a repo's objects, and proofs built from the blockstore."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import pytest

from shoal.p2p.replication.agreements import Agreements
from shoal.p2p.replication.signed import Offer, agreement_bytes, offer_signing_bytes
from shoal.p2p.replication.audit import _check, deadline_for, prove, verify_local
from shoal.store.proofs.commit_files import (
    build_commitment, has_leaves, leaves_file, load_tree, object_bytes,
)
from shoal.p2p.errors import ProtocolError
from shoal.p2p.secure.identity import Identity
from shoal.p2p.wire.messages import AuditProof
from shoal.p2p.replication.repair_policy import Outcome, Replica, State, after_audit
from shoal.store.ipld.cid import block_key
from shoal.store.errors import BlockNotFound, StoreError
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.proofs.challenge import default_k
from shoal.store.proofs.commitment import commit
from shoal.store.proofs.proof import verify_proof, Proof
from shoal.store.persist.repo import Repo
from tests.helpers import random_bytes

SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=4096, max_links=4)
ALICE = Identity.from_seed(hashlib.sha256(b"alice").digest())
BOB = Identity.from_seed(hashlib.sha256(b"bob").digest())


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


# -- offers and agreements ---------------------------------------------------------


def test_offer_round_trip_and_strictness() -> None:
    offer = Offer(b"manifest-bytes", 3, (ALICE.peer_id.to_bytes(), BOB.peer_id.to_bytes()))
    raw = offer.encode()
    assert Offer.decode(raw) == offer
    for bad in (b"", b"\x90", raw + b"\x00", Offer(b"m", 0, ()).encode(), Offer(b"m", 65, ()).encode()):
        with pytest.raises(ProtocolError):
            Offer.decode(bad)


def test_signatures_bind_offer_and_parties() -> None:
    offer = Offer(b"m", 2, (ALICE.peer_id.to_bytes(),)).encode()
    sig = ALICE.sign(offer_signing_bytes(offer))
    assert ALICE.peer_id.verify(sig, offer_signing_bytes(offer))
    assert not BOB.peer_id.verify(sig, offer_signing_bytes(offer))
    a = agreement_bytes(offer, ALICE.peer_id.to_bytes(), BOB.peer_id.to_bytes())
    b = agreement_bytes(offer, BOB.peer_id.to_bytes(), ALICE.peer_id.to_bytes())
    assert a != b
    assert BOB.peer_id.verify(BOB.sign(a), a) and not BOB.peer_id.verify(BOB.sign(a), b)


# -- tables ----------------------------------------------------------------------------


def test_tables_survive_reopen_and_refuse_replayed_nonces(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with Repo.init(path) as repo:
        db = Agreements(repo.index)
        db.put_object("bafkqaaa", "owner", b"m", "me", 3, 100)
        db.set_holder("bafkqaaa", "peerA", Replica(State.PENDING))
        db.set_holder("bafkqaaa", "peerA", Replica(State.OK))
        v = after_audit(Replica(State.OK), Outcome.INVALID)
        db.record_audit("bafkqaaa", "peerA", "invalid", 66, "bad proof", v.replica)
        assert db.use_nonce(b"n" * 32, "bafkqaaa")
        assert not db.use_nonce(b"n" * 32, "bafkqaaa")
        db.put_object("bafkqaab", "holder", b"m2", "other", 2, 40)
    with Repo.open(path) as repo:
        db = Agreements(repo.index)
        row = db.holder("bafkqaaa", "peerA")
        assert row is not None and row.replica.state is State.LOST and row.replica.proven_loss
        assert row.last_audit_ok is False and row.as_json()["last_audit"] == {"time": row.last_audit_time, "ok": False}
        assert not db.use_nonce(b"n" * 32, "bafkqaaa")  # replay refused across restarts
        assert db.held_bytes() == 40  # only what we hold for others counts toward the quota
        assert [a.outcome for a in db.audits("bafkqaaa")] == ["invalid"]
        assert [o.cid for o in db.objects(("owner",))] == ["bafkqaaa"]


# -- commitments and proofs over the blockstore ------------------------------------------


def test_file_commitment_is_over_file_bytes_and_proofs_verify(repo: Repo, tmp_path: Path) -> None:
    data = random_bytes(50_000, 1)
    (tmp_path / "f.bin").write_bytes(data)
    cid = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    c = build_commitment(repo.blockstore, repo.path, cid)
    assert c == commit(data)  # independent of the chunking
    assert has_leaves(repo.path, cid, c) and leaves_file(repo.path, cid).stat().st_size == 32 * c.n_segments
    tree = load_tree(repo.path, cid, c)
    k = default_k()
    nonce = b"\x07" * 32
    proof = prove(repo.blockstore, cid, tree, nonce, BOB.peer_id, k)
    assert verify_proof(c, nonce, BOB.peer_id.to_bytes(), k, proof)
    assert not verify_proof(c, nonce, ALICE.peer_id.to_bytes(), k, proof)  # indices differ per holder
    assert verify_local(repo.blockstore, cid, tree, ALICE.peer_id, k) == ""

    msg = AuditProof(1, bytes(cid), nonce, proof.encode(), BOB.sign(proof.signing_bytes()))
    assert _check(c, nonce, BOB.peer_id, k, msg) == ""
    forged = AuditProof(1, bytes(cid), nonce, proof.encode(), ALICE.sign(proof.signing_bytes()))
    assert "signature" in _check(c, nonce, BOB.peer_id, k, forged)
    seg = bytearray(proof.segments[0])
    seg[0] ^= 1
    bad = Proof(proof.nonce, proof.root, proof.holder_id, proof.indices, (bytes(seg),) + proof.segments[1:], proof.nodes)
    tampered = AuditProof(1, bytes(cid), nonce, bad.encode(), BOB.sign(bad.signing_bytes()))
    assert "does not verify" in _check(c, nonce, BOB.peer_id, k, tampered)
    assert "malformed" in _check(c, nonce, BOB.peer_id, k, AuditProof(1, bytes(cid), nonce, b"junk", b"\0" * 64))


def test_lost_block_means_no_proof(repo: Repo, tmp_path: Path) -> None:
    data = random_bytes(60_000, 2)
    (tmp_path / "f.bin").write_bytes(data)
    cid = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    c = build_commitment(repo.blockstore, repo.path, cid)
    tree = load_tree(repo.path, cid, c)
    leaves = [k for k in repo.blockstore.keys() if k != block_key(cid)]
    for key in leaves[: len(leaves) // 5 + 1]:
        repo.blockstore.delete_key(key)
    with pytest.raises(BlockNotFound):
        prove(repo.blockstore, cid, tree, b"\x01" * 32, BOB.peer_id, default_k())
    assert "damaged" in verify_local(repo.blockstore, cid, tree, BOB.peer_id, default_k())


def test_directory_commitment_covers_every_block(repo: Repo, tmp_path: Path) -> None:
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(random_bytes(20_000, 3))
    (d / "sub" / "b.bin").write_bytes(random_bytes(9_000, 4))
    cid = repo.add(d, profile=SMALL).cid
    c = build_commitment(repo.blockstore, repo.path, cid)
    total = sum(repo.blockstore.size_of_key(k) for k in repo.blockstore.keys())
    assert c.length == total  # each block once
    view = object_bytes(repo.blockstore, cid)
    assert view.read(0, view.length) == b"".join(view.stream())
    assert view.read(c.length - 10, 100) == b"".join(view.stream())[-10:]
    tree = load_tree(repo.path, cid, c)
    proof = prove(repo.blockstore, cid, tree, b"\x02" * 32, BOB.peer_id, 66)
    assert verify_proof(c, b"\x02" * 32, BOB.peer_id.to_bytes(), 66, proof)


def test_damaged_leaf_file_is_refused(repo: Repo, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(random_bytes(30_000, 5))
    cid = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    c = build_commitment(repo.blockstore, repo.path, cid)
    path = leaves_file(repo.path, cid)
    raw = bytearray(path.read_bytes())
    raw[5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError):
        load_tree(repo.path, cid, c)


def test_deadline_grows_with_size_and_is_capped() -> None:
    assert deadline_for(0) == 5.0
    assert deadline_for(10 << 30) > deadline_for(1 << 30) > deadline_for(0)
    assert deadline_for(1 << 50) == 600.0


def test_seeded_monte_carlo_detection_of_a_ten_percent_loss() -> None:
    """k = 66 audits catch a holder missing 10 % of segments >= 99.9 % of the time."""
    import random

    from shoal.store.proofs.challenge import challenge_indices

    rng = random.Random(1234)
    n = 5000
    lost = set(rng.sample(range(n), n // 10))
    root = hashlib.sha256(b"root").digest()
    trials = 20_000
    escaped = sum(
        1 for _ in range(trials)
        if not lost.intersection(challenge_indices(rng.randbytes(32), root, BOB.peer_id.to_bytes(), default_k(), n))
    )
    rate = escaped / trials
    assert rate < 0.002, rate  # expected 0.9^66 = 0.00095
