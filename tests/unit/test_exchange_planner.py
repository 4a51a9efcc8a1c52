"""The sans-IO fetch scheduler, driven with plain numbers for time."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings, strategies as st

from shoal.p2p.exchange.planner import FetchPlanner


def test_requests_spread_across_holders() -> None:
    planner = FetchPlanner(max_inflight_per_peer=100)
    for peer in ("a", "b", "c"):
        planner.add_holder(peer)
    planner.want(range(90))
    sent = planner.next_requests(now=0)
    assert len(sent) == 90
    assert Counter(p for p, _ in sent) == {"a": 30, "b": 30, "c": 30}


def test_inflight_cap_is_backpressure() -> None:
    planner = FetchPlanner(max_inflight_per_peer=4)
    planner.add_holder("a")
    planner.want(range(10))
    first = planner.next_requests(0)
    assert len(first) == 4 and planner.next_requests(0) == []
    planner.on_block("a", first[0][1], valid=True)
    assert len(planner.next_requests(0)) == 1


def test_timeout_retries_on_another_holder() -> None:
    planner = FetchPlanner(request_timeout=5)
    planner.add_holder("slow")
    planner.want(["x"])
    assert planner.next_requests(0) == [("slow", "x")]
    planner.add_holder("fast")
    assert planner.expire(now=4) == []
    assert planner.expire(now=5) == [("slow", "x")]
    assert planner.next_requests(5) == [("fast", "x")]
    planner.on_block("fast", "x", valid=True)
    assert planner.finished and planner.done == {"x"} and planner.stats["slow"].timeouts == 1


def test_corrupt_block_drops_holder_and_refetches_elsewhere() -> None:
    planner = FetchPlanner()
    planner.add_holder("evil")
    planner.add_holder("good")
    planner.want(range(4))
    sent = planner.next_requests(0)
    evil_keys = [k for p, k in sent if p == "evil"]
    planner.on_block("evil", evil_keys[0], valid=False)
    assert "evil" not in planner.holders and planner.stats["evil"].corrupt == 1
    resent = planner.next_requests(1)
    assert {p for p, _ in resent} == {"good"}
    assert {k for _, k in resent} == set(evil_keys)
    for _, k in sent + resent:
        planner.on_block("good", k, valid=True)
    assert planner.finished and planner.done == set(range(4))


def test_peer_gone_moves_its_requests() -> None:
    planner = FetchPlanner()
    planner.add_holder("a")
    planner.add_holder("b")
    planner.want(range(6))
    sent = planner.next_requests(0)
    planner.on_peer_gone("a")
    again = planner.next_requests(0)
    assert {k for p, k in sent if p == "a"} == {k for _, k in again}
    assert {p for p, _ in again} == {"b"}


def test_block_fails_only_when_every_holder_failed_it() -> None:
    planner = FetchPlanner(max_rounds=1)
    planner.add_holder("a")
    planner.add_holder("b")
    planner.want(["x"])
    (p1, _), = planner.next_requests(0)
    planner.on_failure(p1, "x")
    (p2, _), = planner.next_requests(0)
    assert p2 != p1
    planner.on_failure(p2, "x")
    assert planner.next_requests(0) == []
    assert planner.finished and planner.failed == {"x"}


def test_no_holders_means_everything_waits_then_new_holder_unblocks() -> None:
    planner = FetchPlanner()
    planner.want(["x"])
    assert planner.next_requests(0) == []
    assert not planner.finished
    planner.add_holder("a")
    assert planner.next_requests(0) == [("a", "x")]


def test_late_duplicate_after_retry_is_ignored() -> None:
    planner = FetchPlanner(request_timeout=1)
    planner.add_holder("a")
    planner.add_holder("b")
    planner.want(["x"])
    (p1, _), = planner.next_requests(0)
    planner.expire(2)
    (p2, _), = planner.next_requests(2)
    planner.on_block(p1, "x", valid=True)  # the slow one answers after all
    assert not planner.finished
    planner.on_block(p2, "x", valid=True)
    assert planner.finished and planner.done == {"x"}


@settings(max_examples=200, deadline=None)
@given(
    n_blocks=st.integers(1, 40),
    n_peers=st.integers(1, 4),
    script=st.lists(st.tuples(st.sampled_from(["ok", "bad", "fail", "timeout", "gone"]), st.integers(0, 1000)), max_size=200),
)
def test_every_block_ends_done_or_failed_and_nothing_is_lost(n_blocks: int, n_peers: int, script: list[tuple[str, int]]) -> None:
    """Whatever peers do, the planner terminates with each block done or failed."""
    planner = FetchPlanner(max_inflight_per_peer=3, request_timeout=1)
    for p in range(n_peers):
        planner.add_holder(p)
    planner.want(range(n_blocks))
    now = 0.0
    inflight: list[tuple[int, int]] = []
    steps = 0
    actions = iter(script)
    while not planner.finished and steps < 10_000:
        steps += 1
        inflight += planner.next_requests(now)
        if not inflight:
            break
        action, pick = next(actions, ("ok", 0))
        peer, key = inflight.pop(pick % len(inflight))
        if action == "ok":
            planner.on_block(peer, key, valid=True)
        elif action == "bad":
            planner.on_block(peer, key, valid=False)
        elif action == "fail":
            planner.on_failure(peer, key)
        elif action == "timeout":
            now += 1
            planner.expire(now)
        else:
            planner.on_peer_gone(peer)
        inflight = [(p, k) for p, k in inflight if planner.inflight_for(p) and p in planner.holders]
    assert planner.finished
    assert planner.done | planner.failed == set(range(n_blocks))
    assert not (planner.done & planner.failed)


def test_an_interrupted_request_may_go_to_the_same_holder_again() -> None:
    # A lane of ours died mid-request: nothing was learned about the holder,
    # so its only holder gets the block again (on_failure would fail it for
    # good after max_rounds).
    planner = FetchPlanner(max_inflight_per_peer=4, max_rounds=1)
    planner.add_holder("a")
    planner.want(["k"])
    for _ in range(5):
        assert planner.next_requests(0) == [("a", "k")]
        planner.on_interrupted("a", "k")
    assert planner.failed == frozenset() and not planner.finished
    assert planner.next_requests(0) == [("a", "k")]
    planner.on_failure("a", "k")
    assert planner.failed == {"k"}
    assert planner.stats["a"].failures == 1 and planner.stats["a"].timeouts == 0


def test_unranked_blocks_go_in_the_order_wanted() -> None:
    planner = FetchPlanner(max_inflight_per_peer=100)
    planner.add_holder("a")
    planner.want([5, 3, 9])
    planner.want([1, 7])
    assert [k for _, k in planner.next_requests(0)] == [5, 3, 9, 1, 7]


def test_ranked_blocks_go_in_depth_first_order_whatever_order_they_were_wanted_in() -> None:
    # A directory's three files: their roots arrived 2, 0, 1, so their leaves
    # were wanted in that order; the export writes file 0 first.
    planner = FetchPlanner(max_inflight_per_peer=100)
    planner.add_holder("a")
    for f in (2, 0, 1):
        planner.want([f"f{f}l{i}" for i in range(3)], [(f, i) for i in range(3)])
    assert [k for _, k in planner.next_requests(0)] == [f"f{f}l{i}" for f in range(3) for i in range(3)]


def test_a_later_wanted_earlier_block_overtakes_the_queue_but_not_what_is_in_flight() -> None:
    planner = FetchPlanner(max_inflight_per_peer=2)
    planner.add_holder("a")
    planner.want(["late1", "late2", "late3"], [(1, 0), (1, 1), (1, 2)])
    assert [k for _, k in planner.next_requests(0)] == ["late1", "late2"]
    planner.want(["early"], [(0, 5)])
    planner.on_block("a", "late1", valid=True)
    assert planner.next_requests(1) == [("a", "early")]


def test_a_retried_block_keeps_its_rank() -> None:
    planner = FetchPlanner(max_inflight_per_peer=1, request_timeout=5)
    planner.add_holder("a")
    planner.add_holder("b")
    planner.want(["x0", "x1", "x2", "x3"], [(0,), (1,), (2,), (3,)])
    first = dict((k, p) for p, k in planner.next_requests(0))
    assert sorted(first) == ["x0", "x1"]
    bad, good = first["x0"], first["x1"]
    planner.on_failure(bad, "x0")
    planner.on_block(good, "x1", valid=True)
    # x0 failed on one holder: it goes before x2 and x3, to the other one.
    assert planner.next_requests(1) == [(good, "x0"), (bad, "x2")]


def test_blocks_no_holder_can_take_now_keep_their_places() -> None:
    planner = FetchPlanner(max_inflight_per_peer=1)
    planner.add_holder("a")
    planner.want(["k0", "k1", "k2"], [(0,), (1,), (2,)])
    assert planner.next_requests(0) == [("a", "k0")]
    assert planner.next_requests(0) == []  # k1, k2 deferred: a is at its cap
    planner.on_block("a", "k0", valid=True)
    assert planner.next_requests(1) == [("a", "k1")]
    planner.on_block("a", "k1", valid=True)
    assert planner.next_requests(2) == [("a", "k2")]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), unique=True, max_size=60))
@settings(max_examples=100, deadline=None)
def test_requests_follow_the_ranks(ranks: list[tuple[int, int, int]]) -> None:
    planner = FetchPlanner(max_inflight_per_peer=1000)
    planner.add_holder("a")
    planner.want([str(r) for r in ranks], ranks)
    assert [k for _, k in planner.next_requests(0)] == [str(r) for r in sorted(ranks)]
