"""Giving replicas back, without sockets.

Holder side: `Holder.on_release_request` driven directly (owner, stranger,
unknown CID, bad signature, a pin the holder's user made). Owner side:
`ReplicationOwner.release_object` / `place` with `_reach` replaced by in-process
connections to holder services (or by None: unreachable), so the whole
pending -> done machine, the retries and the stop of audits run for real on
real repos and tables. Plus the pure helpers in repair_policy.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import trio

from shoal.p2p.replication.signed import Offer, offer_signing_bytes, release_bytes
from shoal.store.proofs.commit_files import build_commitment
from shoal.p2p.net.connection import RequestFailed
from shoal.p2p.errors import Released
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.wire.messages import (
    AuditChallenge, Error, ErrorCode, Message, ReleaseRequest, ReleaseResponse, StoreRequest,
    StoreResponse,
)
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.replication.repair_policy import (
    Replica, State, release_delay, release_settled, surplus,
)
from shoal.p2p.replication.owner import ReplicationOwner
from shoal.store.ipld.cid import CID
from shoal.store.proofs.manifest import Manifest
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.persist.repo import Repo
from tests.helpers import random_bytes

SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=4096, max_links=4)
OWNER = Identity.from_seed(hashlib.sha256(b"release-owner").digest())
H1 = Identity.from_seed(hashlib.sha256(b"release-h1").digest())
H2 = Identity.from_seed(hashlib.sha256(b"release-h2").digest())
H3 = Identity.from_seed(hashlib.sha256(b"release-h3").digest())
STRANGER = Identity.from_seed(hashlib.sha256(b"release-stranger").digest())
DATA = random_bytes(40_000, 77)


class FakeConn:
    """What a handler sees of a connection: the authenticated remote peer."""

    def __init__(self, peer: PeerId) -> None:
        self.remote_peer = peer


class LocalConn:
    """A PeerConnection stand-in that hands requests straight to a holder's
    handlers (as `node` would), raising RequestFailed for ERROR as the real
    one does. `sent` records what went over it."""

    def __init__(self, holder: ReplicationOwner, me: PeerId) -> None:
        self.holder = holder
        self.me = me
        self.sent: list[Message] = []

    async def request(self, make: Callable[[int], Message], timeout: float = 30) -> list[Message]:
        msg = make(1)
        self.sent.append(msg)
        handlers: dict[type, Any] = {ReleaseRequest: self.holder.holder.on_release_request,
                                     StoreRequest: self.holder.holder.on_store_request}
        replies: list[Message] = await handlers[type(msg)](FakeConn(self.me), msg)
        for r in replies:
            if isinstance(r, Error):
                raise RequestFailed(r.message, r.code)
        return replies


@pytest.fixture
def repos(tmp_path: Path) -> Iterator[Callable[[str], Repo]]:
    opened: list[Repo] = []

    def make(name: str) -> Repo:
        repo = Repo.init(tmp_path / name)
        opened.append(repo)
        return repo

    yield make
    for repo in opened:
        repo.close()


def add_object(repo: Repo, tmp_path: Path) -> CID:
    path = tmp_path / "obj.bin"
    path.write_bytes(DATA)
    return repo.add(path, profile=SMALL).cid


def signed_manifest(repo: Repo, cid: CID) -> Manifest:
    c = build_commitment(repo.blockstore, repo.path, cid)
    m = Manifest(str(cid), c.length, "fixed", SMALL.name, c, OWNER.peer_id.to_bytes(), int(time.time()))
    return m.with_signature(OWNER.sign(m.signing_bytes()))


def store_request(manifest: Manifest, cid: CID, holders: tuple[bytes, ...]) -> StoreRequest:
    offer = Offer(manifest.encode(), 3, (OWNER.peer_id.to_bytes(),) + holders).with_owner_sig(1, OWNER.sign).encode()
    return StoreRequest(3, bytes(cid), manifest.commitment.length, offer, OWNER.sign(offer_signing_bytes(offer)))


async def holder_service(repo: Repo, tmp_path: Path, me: Identity, *, user_pinned: bool) -> tuple[ReplicationOwner, CID]:
    """A holder that took OWNER's object through a real StoreRequest.

    The blocks are already local (so the pull is a no-op); with
    `user_pinned` the holder's user had pinned the object before the
    replica was taken, otherwise the pin is the one taken for the agreement.
    """
    cid = add_object(repo, tmp_path)
    if not user_pinned:
        repo.pin_rm(cid)  # blocks stay until gc
    service = ReplicationOwner(Node(repo, me, NodeOptions()))
    [r] = await service.holder.on_store_request(FakeConn(OWNER.peer_id),  # type: ignore[arg-type]
                                                 store_request(signed_manifest(repo, cid), cid, (me.peer_id.to_bytes(),)))
    assert isinstance(r, StoreResponse) and r.accepted, r
    assert repo.index.is_pinned(str(cid))
    return service, cid


def release_msg(cid: CID, holder: Identity, signer: Identity = OWNER) -> ReleaseRequest:
    return ReleaseRequest(5, bytes(cid), signer.sign(release_bytes(bytes(cid), signer.peer_id.to_bytes(),
                                                                   holder.peer_id.to_bytes())))


# -- holder side ---------------------------------------------------------------------------


async def test_owner_release_drops_the_agreement_pin_and_marks_released(repos: Any, tmp_path: Path) -> None:
    repo = repos("h1")
    service, cid = await holder_service(repo, tmp_path, H1, user_pinned=False)
    assert service.db.held_bytes() > 0
    [r] = await service.holder.on_release_request(FakeConn(OWNER.peer_id), release_msg(cid, H1))  # type: ignore[arg-type]
    assert isinstance(r, ReleaseResponse) and r.unpinned and r.root_cid == bytes(cid) and r.request_id == 5
    assert not repo.index.is_pinned(str(cid))
    obj = service.db.get_object(str(cid))
    assert obj is not None and obj.is_released and obj.pin_taken is None
    assert all(a["released"] for a in service.db.agreements(str(cid)))
    assert service.db.held_bytes() == 0  # the quota is free at once
    assert service.db.objects(("holder", "deputy")) == []  # no owner watch, no deputy duty
    assert repo.gc().removed_blocks > 0  # the holder's normal gc frees the blocks
    # The owner's retry after a lost answer gets the same answer, changes nothing.
    [again] = await service.holder.on_release_request(FakeConn(OWNER.peer_id), release_msg(cid, H1))  # type: ignore[arg-type]
    assert isinstance(again, ReleaseResponse)
    # Audits of a released replica are refused as policy, not admitted as a loss.
    [a] = await service.holder.on_audit_challenge(  # type: ignore[arg-type]
        FakeConn(OWNER.peer_id), AuditChallenge(7, bytes(cid), b"\x01" * 32, 66, 5000))
    assert isinstance(a, Error) and a.code == ErrorCode.REFUSED


async def test_stranger_unknown_cid_and_forged_signature_change_nothing(repos: Any, tmp_path: Path) -> None:
    repo = repos("h1")
    service, cid = await holder_service(repo, tmp_path, H1, user_pinned=False)
    before = service.db.get_object(str(cid))

    [r] = await service.holder.on_release_request(FakeConn(STRANGER.peer_id),  # type: ignore[arg-type]
                                                   release_msg(cid, H1, signer=STRANGER))
    assert isinstance(r, Error) and r.code == ErrorCode.REFUSED
    # The owner's own signature, but sent by someone else: still the wrong peer.
    [r] = await service.holder.on_release_request(FakeConn(STRANGER.peer_id), release_msg(cid, H1))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.REFUSED
    # From the owner's connection but signed for another holder.
    [r] = await service.holder.on_release_request(FakeConn(OWNER.peer_id), release_msg(cid, H2))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.REFUSED and "signed" in r.message
    other = bytes(CID.decode("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"))
    [r] = await service.holder.on_release_request(FakeConn(OWNER.peer_id),  # type: ignore[arg-type]
                                                   ReleaseRequest(5, other, OWNER.sign(b"x")))
    assert isinstance(r, Error) and r.code == ErrorCode.NOT_FOUND

    assert repo.index.is_pinned(str(cid))
    assert service.db.get_object(str(cid)) == before
    assert not any(a["released"] for a in service.db.agreements(str(cid)))


async def test_a_pin_the_holders_user_made_before_is_kept(repos: Any, tmp_path: Path) -> None:
    repo = repos("h1")
    service, cid = await holder_service(repo, tmp_path, H1, user_pinned=True)
    obj = service.db.get_object(str(cid))
    assert obj is not None and obj.pin_taken is None  # the pin was never ours
    [r] = await service.holder.on_release_request(FakeConn(OWNER.peer_id), release_msg(cid, H1))  # type: ignore[arg-type]
    assert isinstance(r, ReleaseResponse) and not r.unpinned
    assert repo.index.is_pinned(str(cid))
    assert service.db.get_object(str(cid)).is_released  # type: ignore[union-attr]
    assert repo.gc().removed_blocks == 0


async def test_a_pin_the_holders_user_made_again_later_is_kept(repos: Any, tmp_path: Path) -> None:
    repo = repos("h1")
    service, cid = await holder_service(repo, tmp_path, H1, user_pinned=False)
    await trio.sleep(0.01)
    repo.pin_add(cid)  # `shoal pin add` on the holder while the agreement runs
    [r] = await service.holder.on_release_request(FakeConn(OWNER.peer_id), release_msg(cid, H1))  # type: ignore[arg-type]
    assert isinstance(r, ReleaseResponse) and not r.unpinned
    assert repo.index.is_pinned(str(cid))


async def test_a_released_deputy_steps_down_and_refuses_a_deputys_re_offer(repos: Any, tmp_path: Path) -> None:
    repo = repos("h1")
    service, cid = await holder_service(repo, tmp_path, H1, user_pinned=False)
    service.db.set_role(str(cid), "deputy")  # the owner was gone; we took over
    service.db.set_holder(str(cid), str(H2.peer_id), Replica(State.LOST), "deputy's view")
    [r] = await service.holder.on_release_request(FakeConn(OWNER.peer_id), release_msg(cid, H1))  # type: ignore[arg-type]
    assert isinstance(r, ReleaseResponse)
    obj = service.db.get_object(str(cid))
    assert obj is not None and obj.role == "holder" and obj.is_released
    assert service.db.objects(("owner", "deputy")) == []  # out of the audit and repair loops
    async with trio.open_nursery() as nursery:
        service._nursery = nursery
        await service._ensure_placed(str(cid))  # a repair pass finds nothing to do
        await service._check_all()
    assert service.db.holders(str(cid)) == []
    # Another holder acting as deputy (it missed the release) offers it back: refused.
    manifest = Manifest.decode(obj.manifest)
    offer = Offer(manifest.encode(), 3, (OWNER.peer_id.to_bytes(), H2.peer_id.to_bytes())).with_owner_sig(
        2, OWNER.sign).encode()
    req = StoreRequest(4, bytes(cid), manifest.commitment.length, offer, H2.sign(offer_signing_bytes(offer)))
    [s] = await service.holder.on_store_request(FakeConn(H2.peer_id), req)  # type: ignore[arg-type]
    assert isinstance(s, StoreResponse) and not s.accepted and "released" in s.reason
    assert not repo.index.is_pinned(str(cid))


async def test_the_owner_may_place_a_released_object_again(repos: Any, tmp_path: Path) -> None:
    repo = repos("h1")
    service, cid = await holder_service(repo, tmp_path, H1, user_pinned=False)
    await service.holder.on_release_request(FakeConn(OWNER.peer_id), release_msg(cid, H1))  # type: ignore[arg-type]
    [s] = await service.holder.on_store_request(  # type: ignore[arg-type]
        FakeConn(OWNER.peer_id), store_request(signed_manifest(repo, cid), cid, (H1.peer_id.to_bytes(),)))
    assert isinstance(s, StoreResponse) and s.accepted
    obj = service.db.get_object(str(cid))
    assert obj is not None and not obj.is_released and obj.pin_taken is not None
    assert repo.index.is_pinned(str(cid))


# -- owner side --------------------------------------------------------------------------


class Swarm:
    """An owner service and in-process holders; `down` holders are unreachable."""

    def __init__(self, owner: ReplicationOwner, holders: dict[PeerId, ReplicationOwner]) -> None:
        self.owner = owner
        self.holders = holders
        self.down: set[PeerId] = set()
        self.conns: dict[PeerId, LocalConn] = {}

        async def reach(peer: PeerId) -> Any:
            if peer in self.down or peer not in self.holders:
                return None
            return self.conns.setdefault(peer, LocalConn(self.holders[peer], OWNER.peer_id))

        owner._reach = reach  # type: ignore[method-assign]

    def sent(self, peer: PeerId, kind: type) -> int:
        conn = self.conns.get(peer)
        return 0 if conn is None else sum(1 for m in conn.sent if isinstance(m, kind))


async def owner_with_holders(repos: Any, tmp_path: Path, names: list[Identity]) -> tuple[Swarm, CID]:
    """OWNER owns an object replicated to every identity in `names` (all ok)."""
    owner_repo = repos("owner")
    cid = add_object(owner_repo, tmp_path)
    owner = ReplicationOwner(Node(owner_repo, OWNER, NodeOptions()))
    manifest = signed_manifest(owner_repo, cid)
    owner.db.put_object(str(cid), "owner", manifest.encode(), str(OWNER.peer_id), len(names) + 1,
                        manifest.commitment.length)
    owner.db.set_holder(str(cid), str(OWNER.peer_id), Replica(State.OK), "owner")
    holders: dict[PeerId, ReplicationOwner] = {}
    for ident in names:
        service, _ = await holder_service(repos(f"holder-{ident.peer_id}"), tmp_path, ident, user_pinned=False)
        holders[ident.peer_id] = service
        owner.db.set_holder(str(cid), str(ident.peer_id), Replica(State.OK))
    return Swarm(owner, holders), cid


def states(owner: ReplicationOwner, cid: CID) -> dict[str, str]:
    return {r.peer_id: r.state for r in owner.db.releases(str(cid))}


async def test_pin_rm_releases_every_holder_pending_then_done_and_audits_stop(repos: Any, tmp_path: Path) -> None:
    swarm, cid = await owner_with_holders(repos, tmp_path, [H1, H2])
    owner = swarm.owner
    # A holder that refused the store never took anything: nothing to give back.
    owner.db.set_holder(str(cid), str(H3.peer_id), Replica(State.FAILED, refused=True), "refused")
    swarm.down.add(H2.peer_id)
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        doc = await owner.release_object(cid)
        assert doc is not None and doc["state"] == "released"
        # Recorded before anything was sent: both pending, the owner's own copy done.
        assert states(owner, cid) == {str(H1.peer_id): "pending", str(H2.peer_id): "pending",
                                      str(OWNER.peer_id): "done"}
    assert states(owner, cid)[str(H1.peer_id)] == "done"
    assert not swarm.holders[H1.peer_id].node.repo.index.is_pinned(str(cid))
    row = owner.db.release(str(cid), str(H2.peer_id))
    assert row is not None and row.state == "pending" and row.attempts == 1 and row.next_try > time.time()
    assert "unreachable" in row.detail
    assert str(H3.peer_id) not in states(owner, cid)
    assert owner.db.holders(str(cid)) == []  # nobody counts, nobody is audited

    # Audits and repairs stop at once: no loop lists it, a forced audit refuses, a pass places nothing.
    assert owner.db.objects(("owner", "deputy")) == []
    with pytest.raises(Released):
        await owner.audit_object(str(cid))
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        await owner._check_all()  # H2 not yet due: no resend either
    assert owner.db.holders(str(cid)) == [] and swarm.sent(H2.peer_id, ReleaseRequest) == 0

    status = await owner.routes.status({"cid": str(cid)})
    assert status["replicas_wanted"] == 0 and status["replicas_ok"] == 0 and status["released"]
    assert status["releases_pending"] == 1
    shown = {h["peer_id"]: h["state"] for h in status["holders"]}
    assert shown == {str(H1.peer_id): "released", str(H2.peer_id): "releasing", str(OWNER.peer_id): "released"}
    assert {"cid", "role", "owner", "size", "commitment_ready", "distinct_prefixes"} <= set(status)

    # H2 comes back; once its retry is due, the background pass releases it.
    swarm.down.clear()
    _make_due(owner, cid, H2.peer_id)
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        await owner._check_all()
    assert states(owner, cid)[str(H2.peer_id)] == "done"
    assert not swarm.holders[H2.peer_id].node.repo.index.is_pinned(str(cid))
    assert (await owner.routes.status({"cid": str(cid)}))["releases_pending"] == 0
    # Done is done: later passes send nothing more.
    sent = swarm.sent(H2.peer_id, ReleaseRequest)
    _make_due(owner, cid, H2.peer_id)
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        await owner._check_all()
    assert swarm.sent(H2.peer_id, ReleaseRequest) == sent


def _make_due(owner: ReplicationOwner, cid: CID, peer: PeerId) -> None:
    with owner.db.index.transaction() as db:
        db.execute("UPDATE repl_releases SET next_try = 0 WHERE cid = ? AND peer_id = ?", (str(cid), str(peer)))


async def test_retries_are_rate_limited_and_survive_a_restart(repos: Any, tmp_path: Path) -> None:
    swarm, cid = await owner_with_holders(repos, tmp_path, [H1])
    owner = swarm.owner
    swarm.down.add(H1.peer_id)
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        await owner.release_object(cid)
    assert owner.db.release(str(cid), str(H1.peer_id)).attempts == 1  # type: ignore[union-attr]
    # The release bucket is empty: a due retry waits for a token.
    owner.releases.bucket.tokens = 0.0
    owner.releases.bucket.updated = time.monotonic() + 3600  # no refill during the test
    _make_due(owner, cid, H1.peer_id)
    swarm.down.clear()
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        await owner._check_all()
    assert states(owner, cid)[str(H1.peer_id)] == "pending" and swarm.sent(H1.peer_id, ReleaseRequest) == 0
    # A restarted owner (fresh service on the same repo) still owes it, and pays.
    again = ReplicationOwner(Node(owner.node.repo, OWNER, NodeOptions()))
    Swarm(again, swarm.holders)
    async with trio.open_nursery() as nursery:
        again._nursery = nursery
        await again._check_all()
    assert states(again, cid)[str(H1.peer_id)] == "done"


async def test_busy_holder_is_retried_but_a_refusal_ends_the_release(repos: Any, tmp_path: Path) -> None:
    swarm, cid = await owner_with_holders(repos, tmp_path, [H1, H2])
    owner = swarm.owner

    class Busy(LocalConn):
        async def request(self, make: Callable[[int], Message], timeout: float = 30) -> list[Message]:
            raise RequestFailed("busy", ErrorCode.BUSY)

    class Refusing(LocalConn):
        async def request(self, make: Callable[[int], Message], timeout: float = 30) -> list[Message]:
            raise RequestFailed("not yours", ErrorCode.REFUSED)

    swarm.conns[H1.peer_id] = Busy(swarm.holders[H1.peer_id], OWNER.peer_id)
    swarm.conns[H2.peer_id] = Refusing(swarm.holders[H2.peer_id], OWNER.peer_id)
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        await owner.release_object(cid)
    assert states(owner, cid)[str(H1.peer_id)] == "pending"
    assert states(owner, cid)[str(H2.peer_id)] == "refused"
    shown = {h["peer_id"]: h["state"] for h in (await owner.routes.status({"cid": str(cid)}))["holders"]}
    assert shown[str(H2.peer_id)] == "release_refused" and shown[str(H1.peer_id)] == "releasing"
    assert "cannot release" in owner.db.release(str(cid), str(H2.peer_id)).detail  # type: ignore[union-attr]


async def test_lowering_the_count_releases_the_lowest_ranked_holder_only(repos: Any, tmp_path: Path) -> None:
    swarm, cid = await owner_with_holders(repos, tmp_path, [H1, H2])
    owner = swarm.owner
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        doc = await owner.place(cid, 2)
    # No peer is connected, so every weight is 0 and the rank falls back to id order.
    lowest = min((H1.peer_id, H2.peer_id), key=lambda p: p.to_bytes())
    kept = H2.peer_id if lowest == H1.peer_id else H1.peer_id
    assert doc["released"] == [str(lowest)] and doc["wanted"] == 2
    assert states(owner, cid) == {str(lowest): "done"}
    assert not swarm.holders[lowest].node.repo.index.is_pinned(str(cid))
    assert swarm.holders[kept].node.repo.index.is_pinned(str(cid))
    ok = {h.peer_id for h in owner.db.holders(str(cid)) if h.replica.state is State.OK}
    assert ok == {str(OWNER.peer_id), str(kept)}  # exactly 2; the owner's own copy is never released
    obj = owner.db.get_object(str(cid))
    assert obj is not None and obj.replicas_wanted == 2 and not obj.is_released
    # The remaining holder was told the new holder list; nothing new was placed.
    assert swarm.sent(kept, StoreRequest) >= 1 and swarm.sent(lowest, StoreRequest) == 0
    # Down to one: the last holder goes too, the owner keeps its copy.
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        doc = await owner.place(cid, 1)
    assert doc["released"] == [str(kept)]
    assert {h.peer_id for h in owner.db.holders(str(cid))} == {str(OWNER.peer_id)}


async def test_put_again_after_pin_rm_replicates_anew(repos: Any, tmp_path: Path) -> None:
    swarm, cid = await owner_with_holders(repos, tmp_path, [H1])
    owner = swarm.owner
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        await owner.release_object(cid)
    assert states(owner, cid)[str(H1.peer_id)] == "done"
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        doc = await owner.place(cid, 2)
    assert "released" not in doc
    obj = owner.db.get_object(str(cid))
    assert obj is not None and not obj.is_released and obj.replicas_wanted == 2
    assert owner.db.releases(str(cid)) == []  # finished releases are forgotten
    assert [o.cid for o in owner.db.objects(("owner",))] == [str(cid)]  # back in the loops


async def test_a_store_answered_after_the_release_is_given_back_too(repos: Any, tmp_path: Path) -> None:
    swarm, cid = await owner_with_holders(repos, tmp_path, [H1])
    owner = swarm.owner
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        await owner.release_object(cid)
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        # A placement started before the unpin finishes now: H1 took it again.
        assert await owner._released_meanwhile(str(cid), H1.peer_id, accepted=True, started=time.time() - 5)
        assert states(owner, cid)[str(H1.peer_id)] == "pending"  # owed again
    assert owner.db.holders(str(cid)) == []
    assert states(owner, cid)[str(H1.peer_id)] == "done"


def test_migration_two_counts_pre_release_holdings_as_agreement_pins(tmp_path: Path) -> None:
    """A repo written before releases existed: its held objects can be released."""
    from shoal.p2p.replication.agreements import COMPONENT, MIGRATIONS, Agreements
    from shoal.store.persist.index import Index

    path = tmp_path / "old"
    with Repo.init(path) as repo:
        index: Index = repo.index
        with index.transaction() as db:
            db.execute("DELETE FROM schema_components WHERE component = ?", (COMPONENT,))
            for table in ("repl_releases", "repl_objects", "repl_holders", "repl_agreements", "repl_audits",
                          "repl_nonces", "repl_ec", "repl_ec_shards", "repl_ec_maps"):
                db.execute(f"DROP TABLE IF EXISTS {table}")
        index.apply_schema(COMPONENT, MIGRATIONS[:1])
        with index.transaction() as db:
            db.execute("INSERT INTO repl_objects (cid, role, manifest, owner, replicas_wanted, size, offer, created) "
                       "VALUES ('bafyX', 'holder', x'00', 'o', 2, 10, NULL, 1.0)")
            db.execute("INSERT INTO pins (cid, recursive, created) VALUES ('bafyX', 1, 123.5)")
        adb = Agreements(index)
        obj = adb.get_object("bafyX")
        assert obj is not None and obj.pin_taken == 123.5 and not obj.is_released
        with pytest.raises(sqlite3.IntegrityError):
            with index.transaction() as db:
                db.execute("INSERT INTO repl_releases (cid, peer_id, state, next_try, since) "
                           "VALUES ('c', 'p', 'maybe', 0, 0)")


# -- pure helpers --------------------------------------------------------------------------


def test_release_delay_backs_off_and_is_capped() -> None:
    assert release_delay(0, 1.0) == 1.0 and release_delay(3, 1.0) == 8.0
    assert release_delay(3, 0.5) == 4.0
    assert release_delay(40, 1.0) == 600.0 and release_delay(10_000, 1.0) == 600.0
    assert release_delay(-1, 1.0) == 1.0


def test_which_answers_settle_a_release() -> None:
    assert not release_settled(None)  # no answer: retry
    assert not release_settled(ErrorCode.BUSY) and not release_settled(ErrorCode.INTERNAL)
    assert not release_settled(999)  # unknown codes are treated as failures, retried
    for code in (ErrorCode.NOT_FOUND, ErrorCode.REFUSED, ErrorCode.UNKNOWN_TYPE, ErrorCode.MALFORMED):
        assert release_settled(code)


def test_surplus_takes_the_lowest_ranked_first() -> None:
    ranked = ["low", "mid", "high"]
    assert surplus(ranked, 4) == [] and surplus(ranked, 3) == ["low"]
    assert surplus(ranked, 2) == ["low", "mid"] and surplus(ranked, 1) == ranked
    assert surplus(ranked, 0) == ranked and surplus([], 1) == []


async def test_a_surplus_holder_whose_store_finishes_after_its_release_is_released_again(
        repos: Any, tmp_path: Path) -> None:
    swarm, cid = await owner_with_holders(repos, tmp_path, [H1, H2])
    owner = swarm.owner
    started = time.time()  # a store to the lowest-ranked holder is in flight ...
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        doc = await owner.place(cid, 2)  # ... when the count is lowered
    victim = PeerId.from_string(doc["released"][0])
    assert states(owner, cid)[str(victim)] == "done"
    async with trio.open_nursery() as nursery:
        owner._nursery = nursery
        # The store answers "accepted" only now: it must not come back as a holder.
        assert await owner._released_meanwhile(str(cid), victim, accepted=True, started=started)
    assert str(victim) not in {h.peer_id for h in owner.db.holders(str(cid))}
    assert states(owner, cid)[str(victim)] == "done" and swarm.sent(victim, ReleaseRequest) == 2
    # A store that began after an old release is an ordinary placement.
    assert not await owner._released_meanwhile(str(cid), victim, accepted=True, started=time.time() + 1)
