"""PeerTable's redial policy: exponential backoff with jitter, reset on
success, never dropped for good, bounded table. Time and randomness are
injected: no sleeps, no wall clock."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import pytest

from shoal.p2p.net import peers as peers_mod
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.net.peers import (
    DIAL_BACKOFF_BASE_S, DIAL_BACKOFF_CAP_S, DIAL_BACKOFF_JITTER_MIN, FORGET_FAILING_AFTER_S,
    MAX_KNOWN_PEERS, Counts, PeerTable, backoff_delay,
)
from shoal.store.persist.repo import Repo
from tests.helpers import free_port
from tests.unit.peer_helpers import FakeClock, pid

ME = PeerId.from_public_key(hashlib.sha256(b"me").digest())
ADDR = Multiaddr("127.0.0.1", 4001)


class FixedRandom:
    """Returns the given draws in turn (the last one for ever)."""

    def __init__(self, *draws: float) -> None:
        self.draws = list(draws)

    def __call__(self) -> float:
        return self.draws.pop(0) if len(self.draws) > 1 else self.draws[0]


def table(clock: FakeClock, draw: float = 0.0, max_peers: int = MAX_KNOWN_PEERS) -> PeerTable:
    return PeerTable(ME, clock=clock, rng=FixedRandom(draw), max_peers=max_peers)


# -- the delay formula --------------------------------------------------------


def test_backoff_delay_doubles_with_jitter_and_is_capped() -> None:
    assert backoff_delay(0, 0.0) == 0.0
    # n failures: min(cap, base * 2**n) * jitter, jitter in [0.5, 1.0]
    assert backoff_delay(1, 0.0) == pytest.approx(DIAL_BACKOFF_BASE_S * 2 * DIAL_BACKOFF_JITTER_MIN)
    assert backoff_delay(1, 0.999999) == pytest.approx(DIAL_BACKOFF_BASE_S * 2, rel=1e-5)
    assert backoff_delay(3, 0.5) == pytest.approx(DIAL_BACKOFF_BASE_S * 8 * 0.75)
    for n in range(1, 40):
        assert DIAL_BACKOFF_JITTER_MIN * min(DIAL_BACKOFF_CAP_S, 2.0**n) <= backoff_delay(n, 0.0)
        assert backoff_delay(n, 0.999) <= DIAL_BACKOFF_CAP_S
    assert backoff_delay(10**6, 0.999) <= DIAL_BACKOFF_CAP_S  # no overflow for absurd counts
    assert backoff_delay(2, 5.0) == backoff_delay(2, 1.0)  # a misbehaving rng is clamped
    assert backoff_delay(2, -1.0) == backoff_delay(2, 0.0)


def test_constants_are_the_documented_policy() -> None:
    assert DIAL_BACKOFF_BASE_S == 1.0 and DIAL_BACKOFF_CAP_S == 600.0
    assert DIAL_BACKOFF_JITTER_MIN == 0.5 and FORGET_FAILING_AFTER_S == 24 * 3600


# -- the table ------------------------------------------------------------------


def test_a_failing_peer_waits_longer_each_time() -> None:
    clock = FakeClock()
    t = table(clock, draw=0.0)  # jitter 0.5
    t.learn(pid(1), [ADDR])
    assert [r.peer_id for r in t.dialable()] == [pid(1)]
    expected_waits = [min(DIAL_BACKOFF_CAP_S, 2.0**n) * 0.5 for n in range(1, 14)]
    for n, wait in enumerate(expected_waits, start=1):
        t.dial_failed(pid(1))
        rec = t.get(pid(1))
        assert rec is not None and rec.dial_failures == n
        assert rec.next_dial_at == pytest.approx(clock.t + wait)
        clock.advance(wait - 0.001)
        assert t.dialable() == [], n
        clock.advance(0.001)
        assert [r.peer_id for r in t.dialable()] == [pid(1)], n
    assert expected_waits[-1] == DIAL_BACKOFF_CAP_S * 0.5  # it reached the cap


def test_never_dropped_for_good_even_after_many_failures() -> None:
    clock = FakeClock()
    t = table(clock, draw=0.999)
    t.learn(pid(1), [ADDR])
    for _ in range(200):  # the old policy gave up after 20
        t.dial_failed(pid(1))
    assert t.dialable() == []
    clock.advance(DIAL_BACKOFF_CAP_S)
    assert [r.peer_id for r in t.dialable()] == [pid(1)]


def test_jitter_comes_from_the_injected_rng() -> None:
    clock = FakeClock()
    t = PeerTable(ME, clock=clock, rng=FixedRandom(0.0, 1.0 - 1e-9))
    t.learn(pid(1), [ADDR])
    t.learn(pid(2), [ADDR])
    t.dial_failed(pid(1))  # draw 0.0 -> 2 s * 0.5
    t.dial_failed(pid(2))  # draw ~1.0 -> 2 s * 1.0
    r1, r2 = t.get(pid(1)), t.get(pid(2))
    assert r1 is not None and r2 is not None
    assert r1.next_dial_at - clock.t == pytest.approx(1.0)
    assert r2.next_dial_at - clock.t == pytest.approx(2.0)
    clock.advance(1.5)
    assert [r.peer_id for r in t.dialable()] == [pid(1)]


def test_success_resets_the_backoff() -> None:
    clock = FakeClock()
    t = table(clock)
    t.learn(pid(1), [ADDR])
    for _ in range(8):
        t.dial_failed(pid(1))
    t.mark_connected(pid(1), True)
    rec = t.get(pid(1))
    assert rec is not None and rec.dial_failures == 0 and rec.next_dial_at == 0.0 and rec.failing_since == 0.0
    assert rec.last_seen == clock.t
    assert t.dialable() == []  # connected
    t.mark_connected(pid(1), False)
    assert [r.peer_id for r in t.dialable()] == [pid(1)]  # redial at once after a clean disconnect
    t.dial_failed(pid(1))
    assert rec.dial_failures == 1 and rec.next_dial_at == pytest.approx(clock.t + 1.0)  # starts over


def test_failures_of_connected_or_unknown_peers_are_ignored() -> None:
    clock = FakeClock()
    t = table(clock)
    t.dial_failed(pid(9))
    assert t.get(pid(9)) is None
    t.learn(pid(1), [ADDR])
    t.mark_connected(pid(1), True)
    t.dial_failed(pid(1))  # it reached us inbound while our dial failed
    rec = t.get(pid(1))
    assert rec is not None and rec.dial_failures == 0


def test_dialable_puts_fewest_failures_first_and_needs_an_address() -> None:
    clock = FakeClock()
    t = table(clock)
    for n in (1, 2, 3):
        t.learn(pid(n), [ADDR])
    t.ensure(pid(4))  # no address: never dialable
    for _ in range(3):
        t.dial_failed(pid(1))
    t.dial_failed(pid(2))
    clock.advance(DIAL_BACKOFF_CAP_S)
    assert [r.peer_id for r in t.dialable()] == [pid(3), pid(2), pid(1)]
    assert [r.peer_id for r in t.dialable(now=clock.t - DIAL_BACKOFF_CAP_S)] == [pid(3)]


# -- bounded table ----------------------------------------------------------------


def fail_all(t: PeerTable, clock: FakeClock, peers: list[PeerId], span: float) -> None:
    """Keep every peer in `peers` failing (as the dial loop would) for `span` seconds."""
    end = clock.t + span
    while clock.t < end:
        for p in peers:
            t.dial_failed(p)
        clock.advance(DIAL_BACKOFF_CAP_S)


def test_full_table_forgets_only_peers_failing_for_a_day() -> None:
    clock = FakeClock()
    t0 = clock.t
    t = table(clock, max_peers=4)
    for n in range(4):
        t.learn(pid(n), [ADDR])
    t.mark_connected(pid(0), True)
    t.dial_failed(pid(2))  # pid(2) fails first, pid(1) an hour later, pid(3) two hours later
    clock.advance(3600)
    t.dial_failed(pid(1))
    clock.advance(3600)
    t.dial_failed(pid(3))
    fail_all(t, clock, [pid(1), pid(2), pid(3)], 21 * 3600)
    assert clock.t - t0 < FORGET_FAILING_AFTER_S
    # Nobody has failed for 24 h yet: the newcomer is not kept.
    assert t.learn(pid(10), [ADDR]) is not None and t.get(pid(10)) is None
    fail_all(t, clock, [pid(1), pid(2), pid(3)], 1.5 * 3600)
    assert FORGET_FAILING_AFTER_S <= clock.t - t0 < FORGET_FAILING_AFTER_S + 3600
    t.learn(pid(10), [ADDR])
    assert t.get(pid(10)) is not None and t.get(pid(2)) is None  # the one failing longest went
    assert {r.peer_id for r in t.all()} == {pid(0), pid(1), pid(3), pid(10)}
    t.learn(pid(11), [ADDR])  # pid(1) has failed for 23.5 h only
    assert t.get(pid(11)) is None and len(t.all()) == 4


def test_connected_and_never_failing_peers_are_never_forgotten() -> None:
    clock = FakeClock()
    t = table(clock, max_peers=2)
    t.learn(pid(1), [ADDR])
    t.learn(pid(2), [ADDR])
    t.mark_connected(pid(1), True)
    clock.advance(10 * FORGET_FAILING_AFTER_S)
    t.learn(pid(3), [ADDR])
    assert t.get(pid(3)) is None and len(t.all()) == 2


def test_a_peer_that_starts_failing_late_can_still_be_forgotten() -> None:
    clock = FakeClock()
    t = table(clock, max_peers=2)
    t.learn(pid(1), [ADDR])
    t.learn(pid(2), [ADDR])
    t.learn(pid(3), [ADDR])  # full, nobody failing: not kept
    assert t.get(pid(3)) is None
    clock.advance(5 * FORGET_FAILING_AFTER_S)
    fail_all(t, clock, [pid(2)], FORGET_FAILING_AFTER_S - 3600)
    t.learn(pid(3), [ADDR])
    assert t.get(pid(3)) is None
    fail_all(t, clock, [pid(2)], 3600)
    t.learn(pid(3), [ADDR])
    assert t.get(pid(3)) is not None and t.get(pid(2)) is None


def test_table_stays_bounded_under_a_flood() -> None:
    clock = FakeClock()
    t = table(clock)
    for n in range(MAX_KNOWN_PEERS + 200):
        t.learn(pid(n), [ADDR])
    assert len(t.all()) == MAX_KNOWN_PEERS


# -- reputation kept across forgetting and restarts ----------------------------------


def test_forgotten_peer_keeps_its_reputation() -> None:
    clock = FakeClock()
    t = table(clock, max_peers=1)
    t.learn(pid(1), [ADDR])
    rec = t.get(pid(1))
    assert rec is not None
    rec.reputation.corrupt = 3
    fail_all(t, clock, [pid(1)], FORGET_FAILING_AFTER_S + 1)
    t.learn(pid(2), [ADDR])
    assert t.get(pid(1)) is None
    assert dict((p, r.counts()) for p, r in t.reputations())[pid(1)] == Counts(corrupt=3)
    t.mark_connected(pid(2), True)
    # pid(1) cannot come back while pid(2) is connected (full table) but its
    # detached record still carries the old score.
    assert t.ensure(pid(1)).reputation.corrupt == 3


def test_restore_reputation_to_known_and_unknown_peers() -> None:
    t = table(FakeClock())
    t.learn(pid(1), [ADDR])
    t.restore_reputation(pid(1), Counts(delivered=5, corrupt=1))
    t.restore_reputation(pid(2), Counts(proven_losses=2))
    t.restore_reputation(pid(3), Counts())  # blank: nothing to remember
    t.restore_reputation(ME, Counts(corrupt=9))  # never ourselves
    got = {p: r.counts() for p, r in t.reputations()}
    assert got == {pid(1): Counts(delivered=5, corrupt=1), pid(2): Counts(proven_losses=2)}
    rec = t.learn(pid(2), [ADDR])  # known again: the saved score comes with it
    assert rec is not None and rec.reputation.counts() == Counts(proven_losses=2)
    assert rec.reputation.score < 0.1
    assert sorted(str(p) for p, _ in t.reputations()) == sorted(str(p) for p in (pid(1), pid(2)))


def test_remembered_reputations_are_bounded_and_keep_the_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers_mod, "MAX_REMEMBERED_REPUTATIONS", 3)
    t = table(FakeClock())
    t.restore_reputation(pid(1), Counts(corrupt=1))
    t.restore_reputation(pid(2), Counts(delivered=1))
    t.restore_reputation(pid(3), Counts(delivered=2))
    t.restore_reputation(pid(4), Counts(proven_losses=1))
    t.restore_reputation(pid(5), Counts(delivered=3))
    assert {p for p, _ in t.reputations()} == {pid(1), pid(4), pid(5)}


# -- the node's dial loop uses it ---------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


def closed_port() -> int:
    # Nothing listens there now, so a dial is refused at once; and being
    # below the ephemeral range, no other process's port-0 listener (the
    # other xdist worker's nodes) takes it during the test.
    return free_port()


async def test_node_backs_off_after_a_failed_dial(repo: Repo) -> None:
    clock = FakeClock()
    node = Node(repo, Identity.from_seed(hashlib.sha256(b"node").digest()), NodeOptions(),
                clock=clock, rng=FixedRandom(0.0))
    addr = Multiaddr("127.0.0.1", closed_port()).with_peer(pid(1))
    node.peers.learn(pid(1), [addr])
    assert [r.peer_id for r in node.peers.dialable()] == [pid(1)]
    for n in (1, 2, 3):
        await node._dial_quietly(addr)
        rec = node.peers.get(pid(1))
        assert rec is not None and rec.dial_failures == n
        assert node.peers.dialable() == []
        clock.advance(2.0**n * 0.5)
        assert [r.peer_id for r in node.peers.dialable()] == [pid(1)]
    assert pid(1) not in node._dialing
