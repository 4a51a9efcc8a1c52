"""Replica states, repair decisions, token bucket, deputy election (shoal.p2p.replication.repair_policy)."""

from __future__ import annotations

import hashlib

import pytest

from shoal.p2p.secure.identity import Identity
from shoal.p2p.replication.repair_policy import (
    MAX_BUSY_IN_A_ROW, MAX_TIMEOUTS_IN_A_ROW, READMIT_PASSES, Outcome, OwnerWatch, Replica, State,
    TokenBucket, after_audit, after_store, counts_as_copy, deputy, repairs_needed,
)


def test_invalid_proof_is_proven_loss_and_repaired_at_once() -> None:
    v = after_audit(Replica(State.OK), Outcome.INVALID)
    assert v.replica.state is State.LOST and v.replica.proven_loss
    assert v.repair and v.score_loss and not v.score_timeout
    # a second invalid proof does not ask for a second repair
    again = after_audit(v.replica, Outcome.INVALID)
    assert again.replica.state is State.LOST and not again.repair


def test_three_timeouts_in_a_row_mark_lost_without_proven_loss() -> None:
    r = Replica(State.OK)
    for i in range(1, MAX_TIMEOUTS_IN_A_ROW):
        v = after_audit(r, Outcome.TIMEOUT)
        assert v.replica.state is State.FAILED and not v.repair and v.score_timeout and not v.score_loss
        assert v.replica.timeouts_in_a_row == i
        assert counts_as_copy(v.replica)  # a suspect still counts: no repair yet
        r = v.replica
    v = after_audit(r, Outcome.TIMEOUT)
    assert v.replica.state is State.LOST and v.repair and not v.replica.proven_loss


def test_timeouts_not_in_a_row_never_disqualify() -> None:
    r = Replica(State.OK)
    for _ in range(20):
        r = after_audit(r, Outcome.TIMEOUT).replica
        r = after_audit(r, Outcome.TIMEOUT).replica
        r = after_audit(r, Outcome.OK).replica
        assert r.state is State.OK and r.timeouts_in_a_row == 0


def test_lost_by_timeouts_comes_back_after_passes_in_a_row_but_proven_loss_does_not() -> None:
    r = Replica(State.OK)
    for _ in range(3):
        r = after_audit(r, Outcome.TIMEOUT).replica
    assert r.state is State.LOST
    # One pass is not enough to be re-admitted (issue 12, item 11) ...
    for _ in range(READMIT_PASSES - 1):
        r = after_audit(r, Outcome.OK).replica
        assert r.state is State.LOST and not counts_as_copy(r)
    # ... a miss in between starts the count again ...
    r = after_audit(r, Outcome.TIMEOUT).replica
    assert r.state is State.LOST and r.passes_in_a_row == 0
    for _ in range(READMIT_PASSES - 1):
        r = after_audit(r, Outcome.OK).replica
    assert r.state is State.LOST
    # ... and READMIT_PASSES in a row bring it back.
    assert after_audit(r, Outcome.OK).replica == Replica(State.OK)
    lost = after_audit(Replica(State.OK), Outcome.INVALID).replica
    for _ in range(READMIT_PASSES + 2):
        lost = after_audit(lost, Outcome.OK).replica
        assert lost.state is State.LOST


def test_busy_audits_become_a_proven_loss() -> None:
    """A holder answering ERROR busy instead of NOT_FOUND (issue 12, item 11):
    misses at first, a proven loss after MAX_BUSY_IN_A_ROW audits, never re-admitted."""
    r = Replica(State.OK)
    for i in range(1, MAX_BUSY_IN_A_ROW):
        v = after_audit(r, Outcome.BUSY)
        assert v.replica.state is State.FAILED and v.score_timeout and not v.score_loss and not v.repair
        assert v.replica.busy_in_a_row == i
        r = v.replica
    v = after_audit(r, Outcome.BUSY)
    assert v.replica.state is State.LOST and v.replica.proven_loss and v.score_loss and v.repair
    r = v.replica
    for _ in range(READMIT_PASSES + 2):
        r = after_audit(r, Outcome.OK).replica
        assert r.state is State.LOST
    # Busy then timeouts mixed: three misses in a row are lost like timeouts.
    r = Replica(State.OK)
    for outcome in (Outcome.BUSY, Outcome.TIMEOUT, Outcome.BUSY):
        v = after_audit(r, outcome)
        r = v.replica
    assert r.state is State.LOST and v.repair and not r.proven_loss
    # A pass in between clears the busy count: an honest holder busy now and then is never lost.
    r = Replica(State.OK)
    for _ in range(10):
        r = after_audit(after_audit(r, Outcome.BUSY).replica, Outcome.OK).replica
        assert r == Replica(State.OK)


def test_store_answers() -> None:
    assert after_store(True).replica.state is State.OK and not after_store(True).repair
    refused = after_store(False)
    assert refused.replica.state is State.FAILED and refused.replica.refused and refused.repair
    assert not counts_as_copy(refused.replica)


def test_repairs_needed() -> None:
    ok, pending, lost = Replica(State.OK), Replica(State.PENDING), Replica(State.LOST, proven_loss=True)
    suspect = Replica(State.FAILED, 1)
    assert repairs_needed(3, [ok, ok, ok]) == 0
    assert repairs_needed(3, [ok, ok, lost]) == 1
    assert repairs_needed(3, [ok, pending, suspect]) == 0
    assert repairs_needed(3, [ok, after_store(False).replica]) == 2
    assert repairs_needed(3, [ok, ok, ok, ok]) == 0


def test_token_bucket_stops_a_repair_storm() -> None:
    b = TokenBucket(rate=0.5, burst=4, now=0.0)
    assert [b.take(0.0) for _ in range(6)] == [True] * 4 + [False] * 2
    assert b.wait_time(0.0) == pytest.approx(2.0)
    assert not b.take(1.0) and b.take(2.0)
    # 100 peers leave at once: over 10 s only burst + rate * 10 repairs start
    b = TokenBucket(rate=0.5, burst=4, now=0.0)
    started = sum(b.take(t / 10) for t in range(100) for _ in range(1))
    assert started == 4 + 4  # 4 at once, then one every 2 s up to t = 9.9
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)


def test_deputy_is_lowest_id_and_the_same_for_everyone() -> None:
    ids = [Identity.from_seed(hashlib.sha256(b"%d" % i).digest()).peer_id for i in range(5)]
    d = deputy(ids)
    assert d == deputy(list(reversed(ids))) and d is not None
    assert all(d.to_bytes() <= p.to_bytes() for p in ids)
    assert deputy([]) is None


def test_owner_watch() -> None:
    w = OwnerWatch(threshold=3)
    assert not w.check(False) and not w.check(False)
    assert w.check(False) and w.gone
    assert not w.check(True) and not w.gone
