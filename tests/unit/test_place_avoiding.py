"""ReplicationOwner.place_avoiding: the one holder-aware placement that both
replica repair (`_choose`) and erasure shard placement (`ErasureService._pick`)
use. Holders (live or gone) are never picked again, and the network prefix
of a holder that counts as a copy is taken, so a peer on another prefix
comes first."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import pytest

from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.replication.agreements import HolderRow
from shoal.p2p.replication.owner import ReplicationOwner
from shoal.p2p.replication.repair_policy import Replica, State
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.store.persist.repo import Repo
from tests.unit.peer_helpers import pid

ME = Identity.from_seed(hashlib.sha256(b"place avoiding").digest())
KEY = hashlib.sha256(b"object").digest()


@pytest.fixture
def owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplicationOwner]:
    with Repo.init(tmp_path / "repo") as repo:
        node = Node(repo, ME, NodeOptions())
        hosts = {1: "10.0.0.1", 2: "10.0.0.2", 3: "10.9.0.1", 4: "10.0.0.3"}
        for n, host in hosts.items():
            rec = node.peers.learn(pid(n), [Multiaddr(host, 4001)])
            assert rec is not None
            rec.free_bytes = 1 << 30  # placement weight is free space times reputation
        monkeypatch.setattr(node, "connected_peers", lambda: [pid(n) for n in hosts])
        yield ReplicationOwner(node)


def row(peer: PeerId | str, state: State) -> HolderRow:
    return HolderRow("cid", str(peer), Replica(state), 0.0, None, None, "")


def test_holders_are_never_picked_and_their_prefix_is_taken(owner: ReplicationOwner) -> None:
    exclude = {owner.me}
    holders = [row(pid(1), State.OK), row(pid(4), State.LOST), row("not a peer id", State.OK)]
    picks = owner.place_avoiding(KEY, 1, 0, holders, exclude)
    # pid(2) shares pid(1)'s /24, pid(4) once held it: pid(3) is the only one on a fresh prefix
    assert picks == [pid(3)]
    assert exclude == {owner.me, pid(1), pid(4)}
    assert sorted(owner.place_avoiding(KEY, 5, 0, holders, {owner.me}), key=str) == sorted([pid(2), pid(3)], key=str)


def test_a_gone_holder_frees_its_prefix(owner: ReplicationOwner) -> None:
    """A LOST replica does not count as a copy: its prefix is free again (the peer itself stays out)."""
    for n in (2, 3):
        picks = owner.place_avoiding(KEY, 2, 0, [row(pid(1), State.LOST)], {owner.me, pid(n)})
        assert pid(1) not in picks and len(picks) == 2
