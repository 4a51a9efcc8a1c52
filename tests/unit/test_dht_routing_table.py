"""The k-bucket routing table (shoal.p2p.dht.routing_table): closest() against a
brute-force sort, Kademlia's keep-the-old-peers rule with its replacement
cache and liveness checks, the per-bucket and table-wide IP diversity limit,
client-mode peers, and the refresh schedule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.p2p.dht.keys import common_prefix_len, distance, kad_key
from shoal.p2p.dht.routing_table import MAX_REFRESH_CPL, AddResult, RoutingTable, ip_group


def _pid(rng: random.Random) -> bytes:
    return b"\x12\x20" + rng.randbytes(32)


def _peers_in_bucket(table: RoutingTable, cpl: int, n: int, rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < n:
        pid = _pid(rng)
        if table.cpl(kad_key(pid)) == cpl:
            out.append(pid)
    return out


def test_keys_and_distance() -> None:
    a, b = kad_key(b"x"), kad_key(b"y")
    assert distance(a, b) == distance(b, a) and distance(a, a) == 0
    assert common_prefix_len(a, a) == 256
    assert common_prefix_len(0, 1 << 255) == 0 and common_prefix_len(0, 1) == 255


@given(st.integers(0, 2**32), st.integers(0, 300), st.integers(1, 40))
@settings(max_examples=60, deadline=None)
def test_closest_equals_brute_force(seed: int, count: int, n: int) -> None:
    rng = random.Random(seed)
    table = RoutingTable(_pid(rng), k=8)
    for _ in range(count):
        table.add(_pid(rng), 0.0)
    target = kad_key(_pid(rng))
    expected = sorted(table.peers(), key=lambda e: e.key ^ target)[:n]
    assert [e.peer_id for e in table.closest(target, n)] == [e.peer_id for e in expected]
    for e in table.peers():  # every entry sits in the bucket of its cpl, buckets never exceed k
        assert e in table.bucket(table.cpl(e.key))
    assert all(len(table.bucket(c)) <= 8 for c in range(257))


@given(st.integers(0, 2**32), st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=400))
@settings(max_examples=60, deadline=None)
def test_diversity_limit_holds_under_random_inserts(seed: int, nets: list[tuple[int, int]]) -> None:
    rng = random.Random(seed)
    table = RoutingTable(_pid(rng), k=20, max_per_group_bucket=2, max_per_group_table=3)
    for a, b in nets:
        ip = f"{a + 1}.{b}.7.{rng.randrange(1, 255)}" if rng.random() < 0.8 else f"2a00:1450:{a}:{b}::{rng.randrange(1, 99)}"
        table.add(_pid(rng), 0.0, ip=ip)
        if rng.random() < 0.1 and len(table):
            table.remove(rng.choice(table.peers()).peer_id, 1.0)
    entries = table.peers()
    groups = [e.group for e in entries]
    for g in set(groups):
        assert groups.count(g) <= 3
        for cpl in range(257):
            assert sum(1 for e in table.bucket(cpl) if e.group == g) <= 2


def test_diversity_counts_subnets_not_addresses() -> None:
    rng = random.Random(1)
    table = RoutingTable(_pid(rng), max_per_group_bucket=2, max_per_group_table=3)
    (p1, p2, p3) = _peers_in_bucket(table, 0, 3, rng)
    assert table.add(p1, 0, ip="8.8.8.1") is AddResult.ADDED
    assert table.add(p2, 0, ip="8.8.8.200") is AddResult.ADDED
    assert table.add(p3, 0, ip="8.8.8.9") is AddResult.REJECTED_DIVERSITY  # same /24, same bucket
    assert table.add(p3, 0, ip="8.8.9.9") is AddResult.ADDED  # another /24
    q = _peers_in_bucket(table, 1, 2, rng)
    assert table.add(q[0], 0, ip="8.8.8.3") is AddResult.ADDED  # third of the /24 in the table
    assert table.add(q[1], 0, ip="8.8.8.4") is AddResult.REJECTED_DIVERSITY  # table-wide cap
    r = _peers_in_bucket(table, 1, 1, rng)[0]
    assert table.add(r, 0, ip="2a00:1450:1:2::5") is AddResult.ADDED
    assert ip_group("2a00:1450:1:ffff::1") == ip_group("2a00:1450:1:2::5") != ip_group("2a00:1450:2::1")
    # Loopback and private addresses are exempt (a lab swarm on one machine or LAN).
    s = _peers_in_bucket(table, 2, 5, rng)
    assert all(table.add(p, 0, ip="127.0.0.1") is AddResult.ADDED for p in s)
    assert ip_group("10.1.2.3") is None and ip_group("::ffff:8.8.8.8") == "8.8.8.0/24"
    assert ip_group("10.1.2.3", exempt_private=False) == "10.1.2.0/24"


def test_full_bucket_keeps_old_peers_and_asks_for_a_liveness_check() -> None:
    rng = random.Random(2)
    table = RoutingTable(_pid(rng), k=3)
    old = _peers_in_bucket(table, 0, 3, rng)
    for i, p in enumerate(old):
        assert table.add(p, float(i)) is AddResult.ADDED
    new1, new2 = _peers_in_bucket(table, 0, 2, rng)
    assert table.add(new1, 10.0) is AddResult.PENDING
    assert table.add(new2, 11.0) is AddResult.PENDING
    assert new1 not in table and table.replacements(0) == [new1, new2]
    # One check for the least recently seen peer, not one per newcomer.
    assert table.liveness_checks() == [old[0]]
    assert table.liveness_checks() == []
    table.liveness_result(old[0], True, 12.0)
    assert [e.peer_id for e in table.bucket(0)] == [old[1], old[2], old[0]]  # now most recent
    assert new1 not in table and new2 not in table
    # The next newcomer triggers a check of the (new) oldest; it is dead: the freshest candidate replaces it.
    new3 = _peers_in_bucket(table, 0, 1, rng)[0]
    assert table.add(new3, 13.0) is AddResult.PENDING
    assert table.liveness_checks() == [old[1]]
    table.liveness_result(old[1], False, 14.0)
    assert old[1] not in table and new3 in table and len(table.bucket(0)) == 3
    assert table.replacements(0) == [new1, new2]


def test_seen_and_updated_refresh_recency() -> None:
    rng = random.Random(3)
    table = RoutingTable(_pid(rng), k=3)
    a, b = _peers_in_bucket(table, 0, 2, rng)
    table.add(a, 0.0)
    table.add(b, 1.0)
    assert table.add(a, 2.0) is AddResult.UPDATED
    assert [e.peer_id for e in table.bucket(0)] == [b, a]
    table.seen(b, 3.0)
    assert [e.peer_id for e in table.bucket(0)] == [a, b] and table.bucket(0)[1].last_seen == 3.0


def test_client_mode_and_self_are_never_added() -> None:
    rng = random.Random(4)
    me = _pid(rng)
    table = RoutingTable(me)
    assert table.add(me, 0) is AddResult.REJECTED_SELF
    other = _pid(rng)
    assert table.add(other, 0, server=False) is AddResult.REJECTED_CLIENT
    assert len(table) == 0 and other not in table


def test_remove_promotes_a_replacement_and_reports_absence() -> None:
    rng = random.Random(5)
    table = RoutingTable(_pid(rng), k=2)
    a, b, c = _peers_in_bucket(table, 0, 3, rng)
    table.add(a, 0)
    table.add(b, 0)
    table.add(c, 1)
    assert table.remove(a, 2.0) and c in table
    assert not table.remove(a, 3.0)


def test_refresh_schedule() -> None:
    rng = random.Random(6)
    table = RoutingTable(_pid(rng), refresh_interval=600.0, now=0.0)
    for p in _peers_in_bucket(table, 0, 2, rng) + _peers_in_bucket(table, 3, 1, rng):
        table.add(p, 0.0)
    assert table.stale_buckets(599.0) == []
    assert table.stale_buckets(600.0) == [0, 1, 2, 3]  # up to the deepest non-empty bucket
    target = table.refresh_id(2, rng.randbytes)
    assert table.cpl(kad_key(target)) == 2
    table.mark_refreshed(kad_key(target), 700.0)
    assert table.stale_buckets(1000.0) == [0, 1, 3]
    assert table.stale_buckets(1300.0) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        table.refresh_id(MAX_REFRESH_CPL + 1, rng.randbytes)
