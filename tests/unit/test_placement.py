"""Placement: weighted rendezvous hashing (shoal.p2p.replication.placement), pure."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.replication.placement import Candidate, place, rendezvous_score

GiB = 1 << 30


def peer(i: int) -> PeerId:
    return Identity.from_seed(hashlib.sha256(b"peer%d" % i).digest()).peer_id


PEERS = [peer(i) for i in range(12)]


def cands(free: int = 100 * GiB) -> list[Candidate]:
    return [Candidate(p, free, 1.0) for p in PEERS]


def key(i: int) -> bytes:
    return hashlib.sha256(b"object%d" % i).digest()


def test_deterministic_and_order_independent() -> None:
    c = cands()
    a = place(key(1), c, 3)
    assert a == place(key(1), list(reversed(c)), 3)
    assert len(a) == 3 and len(set(a)) == 3


def test_distinct_and_bounded_by_candidates() -> None:
    assert len(place(key(2), cands(), 50)) == len(PEERS)
    assert place(key(2), cands(), 0) == []
    # the same peer listed twice is still one holder
    dup = cands() + cands()
    picks = place(key(2), dup, 20)
    assert len(picks) == len(set(picks)) == len(PEERS)


def test_excluded_failed_or_lost_holders_never_chosen() -> None:
    first = place(key(3), cands(), 3)
    again = place(key(3), cands(), 3, exclude=first[:1])
    assert first[0] not in again
    # only the excluded one moves: the others keep their places (rendezvous property)
    assert again[:2] == first[1:3]


def test_too_small_or_zero_weight_peers_skipped() -> None:
    c = [Candidate(p, (10 if i % 2 else 1000), 1.0) for i, p in enumerate(PEERS)]
    picks = place(key(4), c, 20, size=500)
    assert set(picks) == {p for i, p in enumerate(PEERS) if i % 2 == 0}
    zero = [Candidate(p, 1000, 0.0) for p in PEERS]
    assert place(key(4), zero, 3) == []


def test_free_capacity_weights_matter() -> None:
    # PEERS[0] has 4x the free space of each other peer: it should win ~4x as often.
    c = [Candidate(p, (400 if i == 0 else 100) * GiB, 1.0) for i, p in enumerate(PEERS)]
    wins = Counter(place(key(i), c, 1)[0] for i in range(6000))
    share = wins[PEERS[0]] / 6000
    expected = 4 / (4 + 11)
    assert abs(share - expected) < 0.03, share
    uniform = Counter(place(key(i), cands(), 1)[0] for i in range(6000))
    assert uniform[PEERS[0]] / 6000 < share / 2


def test_reputation_weights_matter() -> None:
    c = [Candidate(p, 100 * GiB, (0.1 if i == 0 else 1.0)) for i, p in enumerate(PEERS)]
    wins = Counter(place(key(i), c, 1)[0] for i in range(6000))
    assert wins[PEERS[0]] / 6000 < 0.03  # ~0.1/11.1 = 0.9 %


def test_prefers_distinct_network_prefixes() -> None:
    # Ten peers share 10.0.0.0/24 (sybils on one machine?); two have their own.
    c = [Candidate(p, 100 * GiB, 1.0, prefix=("10.0.0.0/24" if i < 10 else f"10.0.{i}.0/24"))
         for i, p in enumerate(PEERS)]
    prefix = {x.peer_id: x.prefix for x in c}
    for i in range(50):
        picks = place(key(i), c, 3, used_prefixes={"10.0.10.0/24"})
        # first one per unused prefix (the shared one and 10.0.11/24), then the rest by score
        assert {prefix[p] for p in picks[:2]} == {"10.0.0.0/24", "10.0.11.0/24"}
        assert len(picks) == 3
    # without prefixes the same peers rank purely by score
    plain = [Candidate(x.peer_id, x.free_bytes, 1.0) for x in c]
    assert place(key(0), plain, 12) == place(key(0), cands(), 12)


def test_score_properties() -> None:
    assert rendezvous_score(key(1), PEERS[0], 0) == 0.0
    s1 = rendezvous_score(key(1), PEERS[0], 1.0)
    assert s1 > 0 and rendezvous_score(key(1), PEERS[0], 2.0) == 2 * s1


def test_vetting_factor_and_new_peers_get_a_smaller_share() -> None:
    from shoal.p2p.replication.placement import UNVETTED_FACTOR, VETTED_AFTER, vetting_factor

    assert vetting_factor(0) == UNVETTED_FACTOR and vetting_factor(VETTED_AFTER) == 1.0
    assert vetting_factor(0) < vetting_factor(VETTED_AFTER // 2) < 1.0 == vetting_factor(10 * VETTED_AFTER)
    # one unvetted newcomer among vetted peers wins about a quarter of its fair share
    c = [Candidate(p, 100 * GiB, vetting_factor(0 if i == 0 else 50)) for i, p in enumerate(PEERS)]
    wins = Counter(place(key(i), c, 1)[0] for i in range(6000))
    assert wins[PEERS[0]] / 6000 == pytest.approx(0.25 / 11.25, abs=0.012)
