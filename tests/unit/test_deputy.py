"""Deputy election on its own (shoal.p2p.replication.deputy), without sockets.

Three holders named in the owner's signed offer watch it; `reach` is a
stand-in saying who answers. After three failed checks of the owner the
lowest-id live holder becomes the deputy (and only it), its holder table is
seeded, and it steps down as soon as the owner answers again. A holder list
the owner did not sign elects nobody.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Iterator

import pytest

from shoal.p2p.net.connection import PeerConnection
from shoal.p2p.replication.agreements import Agreements
from shoal.p2p.replication.deputy import DeputyElection
from shoal.p2p.replication.repair_policy import MAX_TIMEOUTS_IN_A_ROW, State
from shoal.p2p.replication.signed import Offer
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.ipld.cid import CID
from shoal.store.persist.repo import Repo
from shoal.store.proofs.commit_files import build_commitment
from shoal.store.proofs.manifest import Manifest
from tests.helpers import random_bytes

pytestmark = pytest.mark.timeout(30)

SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=4096, max_links=4)
OWNER = Identity.from_seed(hashlib.sha256(b"deputy-owner").digest())
HOLDERS = sorted((Identity.from_seed(hashlib.sha256(b"deputy-holder-%d" % i).digest()) for i in range(3)),
                 key=lambda i: i.peer_id.to_bytes())


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


def _held(repo: Repo, tmp_path: Path, me: Identity, *, signed: bool = True) -> tuple[Agreements, CID]:
    """`me` holds an object of OWNER's under an offer naming every holder."""
    (tmp_path / "f.bin").write_bytes(random_bytes(20_000, 3))
    cid = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    c = build_commitment(repo.blockstore, repo.path, cid)
    m = Manifest(str(cid), c.length, "fixed", SMALL.name, c, OWNER.peer_id.to_bytes(), int(time.time()))
    manifest = m.with_signature(OWNER.sign(m.signing_bytes()))
    offer = Offer(manifest.encode(), 4, (OWNER.peer_id.to_bytes(), *(h.peer_id.to_bytes() for h in HOLDERS)))
    raw = offer.with_owner_sig(1, OWNER.sign).encode() if signed else offer.encode()
    db = Agreements(repo.index)
    db.put_object(str(cid), "holder", manifest.encode(), str(OWNER.peer_id), 4, c.length, raw)
    return db, cid


class Swarm:
    """Who answers `reach`; a sentinel object stands in for a live connection."""

    def __init__(self, up: set[PeerId]) -> None:
        self.up = up

    async def reach(self, peer: PeerId) -> PeerConnection | None:
        return object() if peer in self.up else None  # type: ignore[return-value]


async def test_lowest_live_holder_takes_over_after_three_misses_and_steps_down(repo: Repo, tmp_path: Path) -> None:
    me = HOLDERS[0]  # the lowest id
    db, cid = _held(repo, tmp_path, me)
    swarm = Swarm({h.peer_id for h in HOLDERS[1:]})  # the owner is gone
    woken: list[bool] = []
    election = DeputyElection(db, me.peer_id, swarm.reach, lambda: woken.append(True))
    for _ in range(MAX_TIMEOUTS_IN_A_ROW - 1):
        await election.check()
        assert db.get_object(str(cid)).role == "holder"  # type: ignore[union-attr]
    await election.check()
    assert db.get_object(str(cid)).role == "deputy"  # type: ignore[union-attr]
    states = {h.peer_id: h.replica.state for h in db.holders(str(cid))}
    assert states[str(OWNER.peer_id)] is State.LOST
    assert all(states[str(h.peer_id)] is State.OK for h in HOLDERS)
    assert woken == [True]  # the owner side looks for repairs at once

    swarm.up.add(OWNER.peer_id)  # the owner is back
    await election.check()
    assert db.get_object(str(cid)).role == "holder"  # type: ignore[union-attr]


async def test_a_higher_holder_stays_a_holder_while_the_lowest_is_live(repo: Repo, tmp_path: Path) -> None:
    me = HOLDERS[1]
    db, cid = _held(repo, tmp_path, me)
    election = DeputyElection(db, me.peer_id, Swarm({HOLDERS[0].peer_id, HOLDERS[2].peer_id}).reach, lambda: None)
    for _ in range(MAX_TIMEOUTS_IN_A_ROW + 1):
        await election.check()
    assert db.get_object(str(cid)).role == "holder"  # type: ignore[union-attr]
    assert db.holders(str(cid)) == []


async def test_the_next_holder_takes_over_when_the_lowest_is_gone_too(repo: Repo, tmp_path: Path) -> None:
    me = HOLDERS[1]
    db, cid = _held(repo, tmp_path, me)
    election = DeputyElection(db, me.peer_id, Swarm({HOLDERS[2].peer_id}).reach, lambda: None)
    for _ in range(MAX_TIMEOUTS_IN_A_ROW):
        await election.check()
    assert db.get_object(str(cid)).role == "deputy"  # type: ignore[union-attr]
    states = {h.peer_id: h.replica.state for h in db.holders(str(cid))}
    assert states[str(HOLDERS[0].peer_id)] is State.FAILED  # unreachable at takeover


async def test_an_unsigned_holder_list_elects_nobody(repo: Repo, tmp_path: Path) -> None:
    me = HOLDERS[0]
    db, cid = _held(repo, tmp_path, me, signed=False)
    election = DeputyElection(db, me.peer_id, Swarm(set()).reach, lambda: None)
    for _ in range(MAX_TIMEOUTS_IN_A_ROW + 1):
        await election.check()
    assert db.get_object(str(cid)).role == "holder"  # type: ignore[union-attr]
