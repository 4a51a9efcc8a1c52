"""The iterative lookup state machine (shoal.p2p.dht.query), driven by hand and
over a small in-memory network of real routing tables: alpha requests in
flight, go's beta termination rule, timeouts on the virtual clock, dead peers
skipped, GET_PROVIDERS stopping early, follow-up asking the k closest."""

from __future__ import annotations

import random

import pytest

from shoal.p2p.dht.keys import kad_key
from shoal.p2p.dht.messages import Message, MessageType, PeerInfo
from shoal.p2p.dht.query import Done, Lookup, SendRequest
from shoal.p2p.dht.routing_table import RoutingTable


def _ids(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [b"\x12\x20" + rng.randbytes(32) for _ in range(n)]


def _sends(events: list[SendRequest | Done]) -> list[bytes]:
    return [e.peer.id for e in events if isinstance(e, SendRequest)]


def _by_distance(ids: list[bytes], key: bytes) -> list[bytes]:
    t = kad_key(key)
    return sorted(ids, key=lambda p: kad_key(p) ^ t)


def test_alpha_in_flight_and_beta_termination() -> None:
    me, *peers = _ids(40)
    target = b"target-key"
    lk = Lookup(me, MessageType.FIND_NODE, target, [PeerInfo(p) for p in peers], alpha=3, beta=2, k=5)
    first = _sends(lk.start(0.0))
    ranked = _by_distance(peers, target)
    assert first == ranked[:3]  # the alpha closest, nothing more
    empty = Message(MessageType.FIND_NODE, key=target)
    # The closest answers: a slot frees up for the next closest heard.
    ev = lk.on_response(ranked[0], empty, 0.1)
    assert _sends(ev) == [ranked[3]]
    # The second closest answers: the beta=2 closest have answered -> Done (ranked[2], ranked[3] still in flight).
    ev = lk.on_response(ranked[1], empty, 0.2)
    assert len(ev) == 1 and isinstance(ev[0], Done) and ev[0].reason == "beta"
    assert [p.id for p in ev[0].closest] == ranked[:2]
    assert ev[0].messages == 4 and lk.on_response(ranked[2], empty, 0.3) == []


def test_closer_peers_join_and_hops_count_referrals() -> None:
    c, *rest = _ids(10, seed=2)
    ranked = _by_distance(rest, c)
    b, me, a = ranked[0], ranked[1], ranked[-1]
    target = c  # looking up c: a (far) knows b (nearer), b knows c
    lk = Lookup(me, MessageType.FIND_NODE, target, [PeerInfo(a)], alpha=1, beta=1, k=3, window=False)
    assert _sends(lk.start(0.0)) == [a]
    assert _sends(lk.on_response(a, Message(MessageType.FIND_NODE, closer_peers=(PeerInfo(b), PeerInfo(me))), 1.0)) == [b]
    assert _sends(lk.on_response(b, Message(MessageType.FIND_NODE, closer_peers=(PeerInfo(c),)), 2.0)) == [c]
    done = lk.on_response(c, Message(MessageType.FIND_NODE), 3.0)
    assert isinstance(done[0], Done)
    assert done[0].closest[0].id == c and done[0].hops == 3  # a (1) -> b (2) -> c (3)
    assert me not in [p.id for p in done[0].closest]  # our own id is never asked


def test_timeouts_on_the_virtual_clock_skip_dead_peers() -> None:
    me, *peers = _ids(6, seed=3)
    key = b"k"
    ranked = _by_distance(peers, key)
    lk = Lookup(me, MessageType.FIND_NODE, key, [PeerInfo(p) for p in peers], alpha=2, beta=1, k=3,
                request_timeout=5.0, slow_after=None)
    assert _sends(lk.start(0.0)) == ranked[:2]
    assert lk.next_deadline() == 5.0
    assert lk.on_tick(4.9) == []
    ev = lk.on_response(ranked[1], Message(MessageType.FIND_NODE), 1.0)
    assert _sends(ev) == [ranked[2]]  # ranked[0] (closest) still pending: not done
    ev = lk.on_tick(5.0)  # ranked[0] times out: now the closest alive has answered
    assert isinstance(ev[-1], Done) and ev[-1].timeouts == 1
    assert ranked[0] not in [p.id for p in ev[-1].closest]
    # A late answer from the timed-out peer is ignored.
    assert lk.on_response(ranked[0], Message(MessageType.FIND_NODE), 6.0) == []


def test_a_slow_peer_frees_its_slot_and_stops_holding_the_end_but_may_still_answer() -> None:
    me, *peers = _ids(8, seed=10)
    key = b"k"
    ranked = _by_distance(peers, key)
    empty = Message(MessageType.FIND_NODE)
    lk = Lookup(me, MessageType.FIND_NODE, key, [PeerInfo(p) for p in peers], alpha=2, beta=2, k=4,
                request_timeout=5.0, slow_after=1.0)
    assert _sends(lk.start(0.0)) == ranked[:2]
    assert lk.next_deadline() == 1.0
    assert _sends(lk.on_tick(1.0)) == ranked[2:4]  # both slow: their slots go to the next two
    assert lk.next_deadline() == 2.0  # the new requests turn slow at 2.0, before the old ones' 5.0
    assert lk.on_response(ranked[2], empty, 1.5) == [SendRequest(PeerInfo(ranked[4]), Message(MessageType.FIND_NODE, key=key))]
    # The slow closest answers after all (before its timeout): it counts as answered, and with
    # ranked[1] still slow the beta=2 closest that are not slow (ranked[0], ranked[2]) have answered.
    ev = lk.on_response(ranked[0], empty, 1.6)
    assert isinstance(ev[-1], Done) and [p.id for p in ev[-1].closest] == [ranked[0], ranked[2]]
    assert ev[-1].timeouts == 0 and ev[-1].reason == "beta"


def test_failure_and_wrong_answer_type_mark_the_peer_unreachable() -> None:
    me, a, b = _ids(3, seed=4)
    lk = Lookup(me, MessageType.FIND_NODE, b"x", [PeerInfo(a), PeerInfo(b)], alpha=2, beta=2, k=2)
    lk.start(0.0)
    assert lk.on_response(a, Message(MessageType.PING), 0.1) == []
    ev = lk.on_failure(b, 0.2)
    assert isinstance(ev[0], Done) and ev[0].closest == () and ev[0].reason == "starved"


def test_nobody_to_ask_finishes_at_once() -> None:
    ev = Lookup(b"me", MessageType.FIND_NODE, b"x", []).start(0.0)
    assert isinstance(ev[0], Done) and ev[0].reason == "starved" and ev[0].messages == 0
    with pytest.raises(ValueError):
        Lookup(b"me", MessageType.PING, b"x", [])


def test_get_providers_stops_once_enough_providers_arrived() -> None:
    me, *peers = _ids(12, seed=5)
    mh = b"\x12\x20" + bytes(32)
    lk = Lookup(me, MessageType.GET_PROVIDERS, mh, [PeerInfo(p) for p in peers], alpha=3, want_providers=2)
    sent = _sends(lk.start(0.0))
    assert len(sent) == 3
    prov = Message(MessageType.GET_PROVIDERS, provider_peers=(PeerInfo(b"prov-1", (b"addr",)),))
    assert isinstance(lk.on_response(sent[2], prov, 0.1)[0], SendRequest)  # one provider: keep going
    assert [p.id for p in lk.providers] == [b"prov-1"]
    again = Message(MessageType.GET_PROVIDERS, provider_peers=(PeerInfo(b"prov-1"), PeerInfo(b"prov-2")))
    ev = lk.on_response(sent[1], again, 0.2)
    assert isinstance(ev[0], Done) and ev[0].reason == "providers"
    assert [p.id for p in ev[0].providers] == [b"prov-1", b"prov-2"] and ev[0].hops == 1


def test_requests_carry_the_lookup_kind_and_key() -> None:
    me, a = _ids(2, seed=6)
    ev = Lookup(me, MessageType.GET_PROVIDERS, b"mh", [PeerInfo(a, (b"/ip4",))]).start(0.0)
    assert ev == [SendRequest(PeerInfo(a, (b"/ip4",)), Message(MessageType.GET_PROVIDERS, key=b"mh"))]


class _Net:
    """Nodes with full routing tables; requests answered in FIFO order, dead nodes time out."""

    def __init__(self, n: int, dead: float, seed: int) -> None:
        rng = random.Random(seed)
        self.ids = _ids(n, seed)
        self.tables = {p: RoutingTable(p, k=8) for p in self.ids}
        for t in self.tables.values():
            for p in rng.sample(self.ids, n):
                t.add(p, 0.0)
        self.dead = set(rng.sample(self.ids, int(dead * n)))

    def run(self, origin: bytes, lk: Lookup) -> Done:
        now = 0.0
        queue = list(lk.start(now))
        while lk.done is None:
            sends = [e for e in queue if isinstance(e, SendRequest)]
            queue = []
            now += 0.05
            for ev in sends:
                if ev.peer.id in self.dead:
                    continue
                closer = tuple(PeerInfo(e.peer_id) for e in self.tables[ev.peer.id].closest(lk.target, 8))
                queue += lk.on_response(ev.peer.id, Message(lk.kind, closer_peers=closer), now)
            if not queue and lk.done is None:
                now = lk.next_deadline() or now
                queue = lk.on_tick(now)
        return lk.done


@pytest.mark.parametrize("window", [True, False])
def test_lookup_finds_every_target_in_a_network_with_dead_nodes(window: bool) -> None:
    net = _Net(150, dead=0.2, seed=7)
    live = [p for p in net.ids if p not in net.dead]
    rng = random.Random(8)
    for _ in range(30):
        origin, target = rng.sample(live, 2)
        seeds = [PeerInfo(e.peer_id) for e in net.tables[origin].closest(kad_key(target), 8)]
        done = net.run(origin, Lookup(origin, MessageType.FIND_NODE, target, seeds, k=8, window=window))
        assert done.closest[0].id == target
        assert not {p.id for p in done.closest} & net.dead


def test_followup_asks_all_of_the_k_closest() -> None:
    net = _Net(120, dead=0.0, seed=9)
    origin = net.ids[0]
    key = b"some-multihash"
    truth = _by_distance([p for p in net.ids if p != origin], key)[:8]
    seeds = [PeerInfo(e.peer_id) for e in net.tables[origin].closest(kad_key(key), 8)]
    done = net.run(origin, Lookup(origin, MessageType.FIND_NODE, key, seeds, k=8, beta=1, followup=True))
    assert [p.id for p in done.closest] == truth
