"""The holder's StoreRequest and AuditChallenge handlers, driven directly
(no sockets): signatures, quota, replayed nonces, lost data, strangers."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Iterator

import pytest

from shoal.p2p.replication.signed import Offer, offer_signing_bytes
from shoal.p2p.replication.audit import _check
from shoal.store.proofs.commit_files import build_commitment
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.wire.messages import (
    AuditChallenge, AuditProof, Error, ErrorCode, StoreRequest, StoreResponse,
)
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.replication.owner import ReplicationOwner
from shoal.store.ipld.cid import CID, block_key
from shoal.store.proofs.manifest import Manifest
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.persist.repo import Repo
from tests.helpers import random_bytes

SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=4096, max_links=4)
OWNER = Identity.from_seed(hashlib.sha256(b"owner").digest())
HOLDER = Identity.from_seed(hashlib.sha256(b"holder").digest())
STRANGER = Identity.from_seed(hashlib.sha256(b"stranger").digest())


class FakeConn:
    def __init__(self, peer: PeerId) -> None:
        self.remote_peer = peer


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


def signed_manifest(repo: Repo, cid: CID) -> Manifest:
    c = build_commitment(repo.blockstore, repo.path, cid)
    m = Manifest(str(cid), c.length, "fixed", SMALL.name, c, OWNER.peer_id.to_bytes(), int(time.time()))
    return m.with_signature(OWNER.sign(m.signing_bytes()))


def holding(repo: Repo, tmp_path: Path, quota: int | None = None) -> tuple[ReplicationOwner, CID, Manifest]:
    """A holder node that already holds an object of OWNER's under an agreement."""
    (tmp_path / "f.bin").write_bytes(random_bytes(40_000, 9))
    cid = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    manifest = signed_manifest(repo, cid)
    offer = Offer(manifest.encode(), 3, (OWNER.peer_id.to_bytes(), HOLDER.peer_id.to_bytes())).with_owner_sig(
        1, OWNER.sign).encode()
    service = ReplicationOwner(Node(repo, HOLDER, NodeOptions(quota_bytes=quota)))
    service.db.put_object(str(cid), "holder", manifest.encode(), str(OWNER.peer_id), 3,
                          manifest.commitment.length, offer)
    return service, cid, manifest


def challenge(cid: CID, nonce: bytes, k: int = 66) -> AuditChallenge:
    return AuditChallenge(7, bytes(cid), nonce, k, 5000)


async def test_owner_gets_a_valid_signed_proof_and_a_replay_is_refused(repo: Repo, tmp_path: Path) -> None:
    service, cid, manifest = holding(repo, tmp_path)
    nonce = b"\x11" * 32
    [reply] = await service.holder.on_audit_challenge(FakeConn(OWNER.peer_id), challenge(cid, nonce))  # type: ignore[arg-type]
    assert isinstance(reply, AuditProof) and reply.request_id == 7
    assert _check(manifest.commitment, nonce, HOLDER.peer_id, 66, reply) == ""
    [again] = await service.holder.on_audit_challenge(FakeConn(OWNER.peer_id), challenge(cid, nonce))  # type: ignore[arg-type]
    assert isinstance(again, Error) and again.code == ErrorCode.REFUSED and "replayed" in again.message


async def test_strangers_and_unknown_objects(repo: Repo, tmp_path: Path) -> None:
    service, cid, _ = holding(repo, tmp_path)
    [r] = await service.holder.on_audit_challenge(FakeConn(STRANGER.peer_id), challenge(cid, b"\x12" * 32))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.REFUSED
    other = repo.add(_write(tmp_path / "g.bin", 100), profile=SMALL).cid
    [r] = await service.holder.on_audit_challenge(FakeConn(OWNER.peer_id), challenge(other, b"\x13" * 32))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.NOT_FOUND


async def test_lost_blocks_are_admitted_not_guessed(repo: Repo, tmp_path: Path) -> None:
    service, cid, _ = holding(repo, tmp_path)
    for key in [k for k in repo.blockstore.keys() if k != block_key(cid)]:
        repo.blockstore.delete_key(key)
    [r] = await service.holder.on_audit_challenge(FakeConn(OWNER.peer_id), challenge(cid, b"\x14" * 32))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.NOT_FOUND


def store_request(manifest: Manifest, signer: Identity, holders: tuple[bytes, ...] = ()) -> StoreRequest:
    offer = Offer(manifest.encode(), 3, holders or (OWNER.peer_id.to_bytes(),)).with_owner_sig(1, OWNER.sign).encode()
    return StoreRequest(3, _cid_bytes(manifest), manifest.commitment.length,
                        offer, signer.sign(offer_signing_bytes(offer)))


def _cid_bytes(manifest: Manifest) -> bytes:
    from shoal.store.ipld.cid import parse_cid

    return bytes(parse_cid(manifest.root_cid))


async def test_store_request_checks_signatures_and_quota(repo: Repo, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(random_bytes(40_000, 10))
    cid = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    manifest = signed_manifest(repo, cid)
    service = ReplicationOwner(Node(repo, HOLDER, NodeOptions(quota_bytes=1000)))
    owner = FakeConn(OWNER.peer_id)

    # signed by someone who is neither the owner nor a listed holder
    [r] = await service.holder.on_store_request(FakeConn(STRANGER.peer_id), store_request(manifest, STRANGER))  # type: ignore[arg-type]
    assert isinstance(r, StoreResponse) and not r.accepted and "neither" in r.reason
    # the offer's signature must be the requester's
    [r] = await service.holder.on_store_request(owner, store_request(manifest, STRANGER))  # type: ignore[arg-type]
    assert isinstance(r, StoreResponse) and not r.accepted and "requester" in r.reason
    # a manifest not signed by its owner
    forged = manifest.with_signature(STRANGER.sign(manifest.signing_bytes()))
    [r] = await service.holder.on_store_request(owner, store_request(forged, OWNER))  # type: ignore[arg-type]
    assert isinstance(r, StoreResponse) and not r.accepted and "owner" in r.reason
    # all good, but 40 kB does not fit a 1000-byte quota
    [r] = await service.holder.on_store_request(owner, store_request(manifest, OWNER))  # type: ignore[arg-type]
    assert isinstance(r, StoreResponse) and not r.accepted and "quota" in r.reason
    assert service.db.get_object(str(cid)) is None  # nothing recorded for a refusal


def _write(path: Path, size: int) -> Path:
    path.write_bytes(random_bytes(size, size))
    return path


async def test_store_request_accepted_signs_the_agreement(repo: Repo, tmp_path: Path) -> None:
    from shoal.p2p.replication.signed import agreement_bytes

    (tmp_path / "f.bin").write_bytes(random_bytes(40_000, 11))
    cid = repo.add(tmp_path / "f.bin", profile=SMALL).cid  # already local: the pull is a no-op
    manifest = signed_manifest(repo, cid)
    service = ReplicationOwner(Node(repo, HOLDER, NodeOptions()))
    req = store_request(manifest, OWNER)
    [r] = await service.holder.on_store_request(FakeConn(OWNER.peer_id), req)  # type: ignore[arg-type]
    assert isinstance(r, StoreResponse) and r.accepted, r
    signed = agreement_bytes(req.manifest, OWNER.peer_id.to_bytes(), HOLDER.peer_id.to_bytes())
    assert HOLDER.peer_id.verify(r.agreement_sig, signed)
    row = service.db.get_object(str(cid))
    assert row is not None and row.role == "holder" and row.owner == str(OWNER.peer_id)
    assert [a["holder"] for a in service.db.agreements(str(cid))] == [str(HOLDER.peer_id)]
