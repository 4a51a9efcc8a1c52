"""The admission policy (shoal.p2p.net.admission) without sockets: handshake pool,
per-IP caps, the reserve for protected peers, eviction order and grace."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from shoal.p2p.net.admission import Admission, AdmissionLimits
from shoal.p2p.errors import P2PError


def test_handshakes_past_a_cap_replace_the_oldest_never_refuse() -> None:
    adm = Admission(AdmissionLimits(max_handshakes=4, max_handshakes_per_ip=2))
    assert adm.begin_handshake("a1", "10.0.0.1", 0).evict == []
    assert adm.begin_handshake("a2", "10.0.0.1", 1).evict == []
    # Third from the same address: its own oldest goes, nobody else's.
    d = adm.begin_handshake("a3", "10.0.0.1", 2)
    assert d.admit and d.evict == ["a1"]
    adm.begin_handshake("b1", "10.0.0.2", 3)
    adm.begin_handshake("b2", "10.0.0.2", 4)
    # Pool full (a2, a3, b1, b2): the oldest of all makes room.
    d = adm.begin_handshake("c1", "10.0.0.3", 5)
    assert d.admit and d.evict == ["a2"]
    assert adm.handshaking == 4 and adm.dropped_handshakes == 2
    adm.end_handshake("c1")
    adm.end_handshake("c1")  # idempotent
    assert adm.handshaking == 3


def test_per_ip_connection_cap_spares_protected_peers() -> None:
    adm = Admission(AdmissionLimits(max_connections=10, max_connections_per_ip=2, reserved_for_protected=0))
    assert adm.admit("x1", "10.0.0.9", False, 0).admit
    assert adm.admit("x2", "10.0.0.9", False, 0).admit
    d = adm.admit("x3", "10.0.0.9", False, 0)
    assert not d.admit and "10.0.0.9" in d.reason
    assert adm.admit("y1", "10.0.0.8", False, 0).admit  # another address is unaffected
    assert adm.admit("p1", "10.0.0.9", True, 0).admit  # proved useful: exempt
    adm.forget("x1")  # protected peers do not use up their address's share
    assert adm.admit("x4", "10.0.0.9", False, 0, {"p1": True}).admit


def test_reserve_is_for_protected_peers_and_they_may_displace_strangers() -> None:
    adm = Admission(AdmissionLimits(max_connections=4, max_connections_per_ip=100, reserved_for_protected=1,
                                    grace_s=10))
    for i in range(3):
        assert adm.admit(f"s{i}", f"10.0.1.{i}", False, 0).admit
    # Strangers have used their 3 slots; the new one is within everybody's grace.
    assert not adm.admit("s3", "10.0.1.3", False, 1).admit
    # A protected peer takes the reserved slot without evicting anyone...
    d = adm.admit("p0", "10.0.2.0", True, 1, {})
    assert d.admit and d.evict == []
    # ...and when all slots are full, displaces a stranger even in its grace period.
    d = adm.admit("p1", "10.0.2.1", True, 2, {"p0": True})
    assert d.admit and len(d.evict) == 1 and d.evict[0].startswith("s")
    assert adm.connections == 4 and adm.evicted == 1


def test_eviction_takes_unanswering_then_idlest_past_grace_and_never_protected() -> None:
    adm = Admission(AdmissionLimits(max_connections=3, max_connections_per_ip=100, reserved_for_protected=0,
                                    grace_s=5))
    for key in ("useful", "idle", "busy"):
        adm.admit(key, f"ip-{key}", False, 0)
    adm.touch("useful", 1, useful=True)
    adm.touch("busy", 50)
    adm.touch("idle", 10)
    prot = {"useful": False, "idle": False, "busy": False}
    # Within the grace of nobody (now=60): the idle one, which never answered us, goes.
    d = adm.admit("new1", "ip-new1", False, 60, prot)
    assert d.admit and d.evict == ["idle"]
    # new1 is still in its grace: the next one takes "busy" (never answered), not "useful".
    d = adm.admit("new2", "ip-new2", False, 61, prot)
    assert d.evict == ["busy"]
    # Only "useful" (and young ones) left: useful goes only when nothing else can.
    d = adm.admit("new3", "ip-new3", False, 62, {**prot, "useful": True})
    assert not d.admit  # useful is protected now, new1/new2 in their grace
    d = adm.admit("new3", "ip-new3", False, 62, prot)
    assert d.evict == ["useful"]


def test_limits_are_validated() -> None:
    with pytest.raises(P2PError):
        AdmissionLimits(max_connections_per_ip=0)
    with pytest.raises(P2PError):
        AdmissionLimits(max_connections=8, reserved_for_protected=8)
    with pytest.raises(P2PError):
        AdmissionLimits(grace_s=-1)


def test_replica_holders_and_allowlisted_peers_are_protected(tmp_path: Path) -> None:
    from shoal.p2p.replication.agreements import Agreements
    from shoal.p2p.secure.identity import Identity
    from shoal.p2p.net.node import Node
    from shoal.p2p.net.node_config import NodeOptions
    from shoal.p2p.replication.repair_policy import Replica, State
    from shoal.store.persist.repo import Repo

    holder, lost, pending, allowed, stranger = (Identity.generate().peer_id for _ in range(5))
    with Repo.init(tmp_path / "r") as repo:
        db = Agreements(repo.index)
        cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        db.set_holder(cid, str(holder), Replica(State.OK))
        db.set_holder(cid, str(lost), Replica(State.LOST, proven_loss=True))
        db.set_holder(cid, str(pending), Replica(State.PENDING))
        assert db.holder_peers() == {str(holder)}

        node = Node(repo, Identity.generate(), NodeOptions(allow_peers=frozenset({allowed})))
        node.protection_sources.append(db.holder_peers)

        async def refresh_once() -> None:
            with trio.move_on_after(1):
                await node._refresh_protected_loop()  # reads the sources, then sleeps

        trio.run(refresh_once)
        assert node.is_protected(holder) and node.is_protected(allowed)
        assert not node.is_protected(lost) and not node.is_protected(pending) and not node.is_protected(stranger)
        rec = node.peers.ensure(stranger)
        rec.reputation.delivered = 3  # it served us valid blocks
        assert node.is_protected(stranger)
        rec.reputation.corrupt = 1  # ...and one corrupt one: no longer
        assert not node.is_protected(stranger)


def test_per_ip_caps_count_an_ipv6_slash_64_as_one_address() -> None:
    """One IPv6 host usually holds a whole /64: counted per address, it could
    take every slot from "different" addresses of its own prefix."""
    adm = Admission(AdmissionLimits(max_connections=10, max_connections_per_ip=2, reserved_for_protected=0,
                                    max_handshakes=10, max_handshakes_per_ip=2))
    assert adm.admit("x1", "2001:db8:1:2::1", False, 0).admit
    assert adm.admit("x2", "2001:db8:1:2:ffff::9", False, 0).admit
    d = adm.admit("x3", "2001:db8:1:2:abcd::3", False, 0)
    assert not d.admit and "2001:db8:1:2::/64" in d.reason
    assert adm.admit("y1", "2001:db8:1:3::1", False, 0).admit  # the next /64 is someone else
    # Handshakes likewise: a third from the same /64 replaces its own oldest.
    adm.begin_handshake("h1", "2001:db8:9:9::1", 0)
    adm.begin_handshake("h2", "2001:db8:9:9::2", 1)
    assert adm.begin_handshake("h3", "2001:db8:9:9::3", 2).evict == ["h1"]


@pytest.mark.parametrize("ip, group", [
    ("10.0.0.1", "10.0.0.1"),
    ("::ffff:10.0.0.1", "10.0.0.1"),
    ("2001:db8::1", "2001:db8::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("not an address", "not an address"),
])
def test_address_group(ip: str, group: str) -> None:
    from shoal.p2p.net.admission import address_group

    assert address_group(ip) == group
