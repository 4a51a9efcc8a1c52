"""Provider records (shoal.p2p.dht.providers): expiry on the passed-in clock,
refresh on re-announce, per-key and total bounds, and the republish schedule."""

from __future__ import annotations

import pytest

from shoal.p2p.dht.providers import PROVIDER_EXPIRY, PROVIDER_REPUBLISH, ProviderStore, ProvideSchedule


def test_defaults_are_libp2ps() -> None:
    assert PROVIDER_EXPIRY == 48 * 3600 and PROVIDER_REPUBLISH == 22 * 3600


def test_records_expire_and_reannouncing_refreshes_them() -> None:
    store = ProviderStore(expiry=100.0)
    assert store.add(b"mh", b"p1", (b"a",), 0.0)
    assert store.add(b"mh", b"p2", (), 50.0)
    assert [r.peer_id for r in store.get(b"mh", 60.0)] == [b"p2", b"p1"]  # freshest first
    assert [r.peer_id for r in store.get(b"mh", 100.0)] == [b"p2"]  # p1 expired at exactly 100
    assert len(store) == 1
    assert store.add(b"mh", b"p2", (b"new",), 140.0)  # re-announce: expiry moves, addrs updated
    [rec] = store.get(b"mh", 200.0)
    assert rec.expires == 240.0 and rec.addrs == (b"new",) and len(store) == 1
    assert store.get(b"mh", 240.0) == [] and len(store) == 0 and store.get(b"other", 0.0) == []


def test_bounded_per_key_and_in_total() -> None:
    store = ProviderStore(expiry=1000.0, max_per_key=3, max_total=5)
    for i in range(5):
        assert store.add(b"k1", bytes([i]), (), float(i))
    assert [r.peer_id for r in store.get(b"k1", 10.0)] == [b"\x04", b"\x03", b"\x02"]  # oldest dropped
    assert store.add(b"k2", b"x", (), 10.0) and store.add(b"k2", b"y", (), 10.0)
    assert len(store) == 5
    assert not store.add(b"k3", b"z", (), 11.0)  # full: refused, nothing evicted
    assert store.add(b"k3", b"z", (), 1002.5)  # the k1 record from t=2 expired: room again
    assert len(store) == 5
    assert store.expire(2000.0) == 4 and len(store) == 1  # only z (expires 2002.5) is left


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        ProviderStore(expiry=0)
    with pytest.raises(ValueError):
        ProvideSchedule(republish=0)


def test_republish_schedule() -> None:
    sched = ProvideSchedule(republish=22.0)
    assert sched.next_due() is None
    sched.provide(b"a", 0.0)
    sched.provide(b"b", 5.0)
    assert sched.due(0.0) == [b"a"]
    assert sched.next_due() == 5.0
    assert sched.due(5.0) == [b"b"]
    assert sched.due(21.9) == []
    assert sched.due(22.0) == [b"a"] and sched.next_due() == 27.0
    sched.stop(b"b")
    assert sched.due(100.0) == [b"a"] and sched.next_due() == 122.0
