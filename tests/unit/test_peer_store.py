"""The peer table survives a restart (issue 17 item 3): records written in
batches to the repo index, read back from a fresh connection, damaged rows
skipped, rows pruned in a stated order, and the redial backoff kept (but
never longer than its cap). Time is a fake clock; no sockets."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
import trio

from shoal.p2p.net import peer_store as ps
from shoal.p2p.net.node import MAX_DIALS_IN_FLIGHT, Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.net.peer_store import COMPONENT, PeerStore
from shoal.p2p.net.peers import DIAL_BACKOFF_CAP_S, PeerState, PeerTable
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.wire.limits import MAX_ADDRS_PER_PEER
from shoal.store.persist.index import Index
from shoal.store.persist.repo import Repo
from tests.helpers import free_port
from tests.unit.peer_helpers import FakeClock, count_write_transactions, pid

NODE = Identity.from_seed(hashlib.sha256(b"peer store node").digest())
ME = NODE.peer_id


def addr(port: int) -> Multiaddr:
    return Multiaddr("127.0.0.1", port)


def table(clock: FakeClock) -> PeerTable:
    return PeerTable(ME, clock=clock, rng=lambda: 0.0)  # jitter 0.5


def insert_raw(idx: Index, rows: list[tuple[object, ...]]) -> None:
    with idx.transaction() as db:
        db.executemany(
            "INSERT INTO peer_table (peer_id, addrs, last_seen, last_connected, dial_failures, failing_since, "
            "next_dial_at, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 0)", rows)


# -- the store ------------------------------------------------------------------------


def test_round_trip_through_a_fresh_connection(tmp_path: Path, index: Index) -> None:
    clock = FakeClock()
    t = table(clock)
    t.learn(pid(1), [addr(4001), addr(4002)])
    t.mark_connected(pid(1), True)  # connected: last_connected = now
    clock.advance(10)
    t.mark_connected(pid(1), False)  # until now
    t.learn(pid(2), [addr(4003)])  # heard of through peer exchange, never connected
    t.learn(pid(3), [Multiaddr("::1", 4004, None, "ip6")])
    for _ in range(3):
        t.dial_failed(pid(3))
    t.ensure(pid(4))  # no address: nothing to dial, not saved
    store = PeerStore(index, clock=clock)
    assert store.load() == {}
    changes = store.pending(t.all())
    assert set(changes) == {pid(1), pid(2), pid(3)}
    assert store.write(changes) == 3
    index.close()

    fresh = Index(tmp_path / "index.sqlite")  # a new connection, as after a restart
    try:
        assert fresh.component_version(COMPONENT) == len(ps.MIGRATIONS)
        loaded = PeerStore(fresh).load()
    finally:
        fresh.close()
    assert loaded == {r.peer_id: r.state() for r in t.all() if r.addrs}
    assert loaded[pid(1)] == PeerState((addr(4001), addr(4002)), clock.t, clock.t, 0, 0.0, 0.0)
    assert list(loaded)[0] == pid(1)  # the most valuable first: once connected

    t2 = table(clock)  # the restarted node's table, same moment
    for peer, state in loaded.items():
        t2.restore(peer, state)
    for peer in (pid(1), pid(2), pid(3)):
        old, new = t.get(peer), t2.get(peer)
        assert old is not None and new is not None
        assert new.state() == old.state() and not new.connected
    # Ready at once: the peers that were fine; the failing one keeps waiting.
    assert [r.peer_id for r in t2.dialable()] == [pid(1), pid(2)]


def test_backoff_survives_a_restart_but_never_beyond_the_cap(index: Index) -> None:
    clock = FakeClock()
    t = table(clock)
    t.learn(pid(1), [addr(4001)])
    for _ in range(12):  # 2**12 s > cap: the wait is 600 * 0.5
        t.dial_failed(pid(1))
    rec = t.get(pid(1))
    assert rec is not None
    due = rec.next_dial_at
    assert due == pytest.approx(clock.t + DIAL_BACKOFF_CAP_S * 0.5)
    store = PeerStore(index, clock=clock)
    store.write(store.pending(t.all()))
    clock.advance(60)  # the restart took a minute

    t2 = table(clock)
    for peer, state in PeerStore(index).load().items():
        t2.restore(peer, state)
    back = t2.get(pid(1))
    assert back is not None
    assert (back.dial_failures, back.failing_since, back.next_dial_at) == (12, rec.failing_since, due)
    assert t2.dialable() == []  # no dial storm after a restart
    clock.t = due
    assert [r.peer_id for r in t2.dialable()] == [pid(1)]
    t2.dial_failed(pid(1))  # the count goes on from where it was
    assert back.dial_failures == 13

    # A next-dial time far away (clock jumped back, or a bad row): at most the cap.
    t3 = table(clock)
    t3.restore(pid(2), PeerState((addr(4002),), dial_failures=3, failing_since=clock.t - 5,
                                 next_dial_at=clock.t + 10 * 24 * 3600))
    far = t3.get(pid(2))
    assert far is not None and far.next_dial_at == clock.t + DIAL_BACKOFF_CAP_S
    # Times in the future are brought back to now.
    t3.restore(pid(3), PeerState((addr(4003),), last_seen=clock.t + 1e6, last_connected=clock.t + 1e6,
                                 dial_failures=1, failing_since=clock.t + 1e6, next_dial_at=clock.t))
    future = t3.get(pid(3))
    assert future is not None and future.last_connected == future.failing_since == clock.t


def test_restore_keeps_the_live_state_of_a_known_peer() -> None:
    clock = FakeClock()
    t = table(clock)
    t.learn(pid(1), [addr(4001)])
    t.mark_connected(pid(1), True)  # e.g. a bootstrap peer, connected before the load
    t.restore(pid(1), PeerState((addr(4002),), dial_failures=5, failing_since=1.0, next_dial_at=clock.t + 100))
    rec = t.get(pid(1))
    assert rec is not None and rec.connected and rec.dial_failures == 0
    assert rec.addrs == [addr(4001), addr(4002)]
    assert t.restore(ME, PeerState((addr(4003),))) is None  # never ourselves


def test_redials_move_on_to_the_next_saved_address() -> None:
    """A saved first address may be stale (the peer restarted on another
    port): each failed dial tries the next one instead of the first for ever."""
    clock = FakeClock()
    t = table(clock)
    t.restore(pid(1), PeerState((addr(4001), addr(4002), addr(4003))))
    rec = t.get(pid(1))
    assert rec is not None
    tried = []
    for _ in range(4):
        tried.append(rec.dial_addr())
        t.dial_failed(pid(1))
    assert tried == [a.with_peer(pid(1)) for a in (addr(4001), addr(4002), addr(4003), addr(4001))]


def test_many_changes_are_one_write_and_unchanged_records_none(index: Index) -> None:
    clock = FakeClock()
    t = table(clock)
    for n in range(200):
        t.learn(pid(n), [addr(5000 + n)])
        t.mark_connected(pid(n), True)
    store = PeerStore(index, clock=clock)
    begins = count_write_transactions(index)
    assert store.write(store.pending(t.all())) == 200
    assert len(begins) == 1 and store.writes == 1
    assert store.pending(t.all()) == {}
    assert store.write({}) == 0 and len(begins) == 1
    clock.advance(1)
    t.mark_connected(pid(7), False)
    t.dial_failed(pid(7))
    changes = store.pending(t.all())
    assert list(changes) == [pid(7)]
    store.write(changes)
    assert len(begins) == 2
    assert PeerStore(index).load()[pid(7)].dial_failures == 1


def test_pruning_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """First to go: never connected and failing longest; then never connected;
    then once connected and failing longest; then least recently connected."""
    monkeypatch.setattr(ps, "MAX_STORED_PEERS", 4)
    clock = FakeClock()
    t = table(clock)

    def failing(n: int, since: float, connected_at: float = 0.0) -> None:
        if connected_at:
            clock.t = connected_at
            t.learn(pid(n), [addr(6000 + n)])
            t.mark_connected(pid(n), True)
            t.mark_connected(pid(n), False)
        clock.t = since
        t.learn(pid(n), [addr(6000 + n)])
        t.dial_failed(pid(n))

    failing(1, since=200.0)  # never connected, failing since 200
    failing(2, since=100.0)  # never connected, failing longer
    clock.t = 300.0
    t.learn(pid(3), [addr(6003)])  # never connected, not failing
    failing(4, since=500.0, connected_at=50.0)  # connected once, failing since 500
    failing(5, since=400.0, connected_at=60.0)  # connected once, failing longer
    clock.t = 700.0
    t.learn(pid(6), [addr(6006)])
    t.mark_connected(pid(6), True)  # connected now
    clock.t = 650.0
    t.learn(pid(7), [addr(6007)])
    t.mark_connected(pid(7), True)
    t.mark_connected(pid(7), False)  # connected until 650, fine since

    expected_order = [pid(2), pid(1), pid(3), pid(5), pid(4), pid(7), pid(6)]
    for keep in range(7, 0, -1):
        monkeypatch.setattr(ps, "MAX_STORED_PEERS", keep)
        idx = Index(tmp_path / f"index-{keep}.sqlite")
        try:
            store = PeerStore(idx, clock=clock)
            assert store.write(store.pending(t.all())) == 7
            kept = set(PeerStore(idx).load())
        finally:
            idx.close()
        assert kept == set(expected_order[7 - keep:]), keep
        # A pruned peer is written again if it changes later.
        assert set(store.pending(t.all())) == set(expected_order[:7 - keep])


def test_damaged_rows_are_skipped_logged_and_dropped(index: Index, caplog: pytest.LogCaptureFixture) -> None:
    store = PeerStore(index)
    good = PeerState((addr(4001),), last_seen=5.0, last_connected=5.0)
    store.write({pid(1): good})
    insert_raw(index, [
        ("not a peer id", '["/ip4/127.0.0.1/tcp/1"]', 0, 0, 0, 0, 0),
        (str(pid(2)), "not json", 0, 0, 0, 0, 0),
        (str(pid(3)), '["/ip4/127.0.0.1/udp/1"]', 0, 0, 0, 0, 0),
        (str(pid(4)), "[]", 0, 0, 0, 0, 0),  # nothing to dial
        (str(pid(5)), '["/ip4/127.0.0.1/tcp/1"]', -1.0, 0, 0, 0, 0),
        (str(pid(6)), '["/ip4/127.0.0.1/tcp/1"]', 0, 0, "many", 0, 0),
        (str(pid(7)), '["/ip4/127.0.0.1/tcp/1"]', 0, 0, 1.5, 0, 0),
        (str(pid(8)), '{"a": 1}', 0, 0, 0, 0, 0),
        (str(pid(9)), '["/ip4/127.0.0.1/tcp/0"]', 0, 0, 0, 0, 0),
        (str(pid(10)), '["/ip4/127.0.0.1/tcp/1"]' + " " * 100_000, 0, 0, 0, 0, 0),
        (str(pid(11)), '["/ip4/127.0.0.1/tcp/9", "/ip4/127.0.0.1/tcp/9/p2p/%s"]' % pid(11), 1.0, 0, 0, 0, 0),
    ])
    fresh = PeerStore(index)
    with caplog.at_level("WARNING", logger="shoal.peer_store"):
        loaded = fresh.load()
    assert loaded == {pid(1): good, pid(11): PeerState((addr(9),), last_seen=1.0)}
    assert fresh.skipped_rows == 10
    assert "ignored 10 damaged rows" in caplog.text
    # The next write drops them, even with nothing else to write.
    assert fresh.write({}) == 0 and fresh.writes == 1
    again = PeerStore(index)
    assert set(again.load()) == {pid(1), pid(11)} and again.skipped_rows == 0


def test_too_many_addresses_are_cut_to_the_table_bound(index: Index) -> None:
    many = [f"/ip4/10.0.0.{n}/tcp/4001" for n in range(MAX_ADDRS_PER_PEER + 5)]
    insert_raw(index, [(str(pid(1)), str(many).replace("'", '"'), 0, 0, 0, 0, 0)])
    (state,) = PeerStore(index).load().values()
    assert len(state.addrs) == MAX_ADDRS_PER_PEER


def test_a_missing_table_is_not_fatal_and_a_failed_write_is_retried(index: Index) -> None:
    PeerStore(index).load()
    with index.transaction() as db:
        db.execute("DROP TABLE peer_table")  # the schema still says it exists
    store = PeerStore(index)
    assert store.load() == {}
    state = PeerState((addr(4001),))
    with pytest.raises(sqlite3.Error):  # the node logs this and retries later
        store.write({pid(1): state})
    assert store.writes == 0
    with index.transaction() as db:
        db.execute(ps.MIGRATIONS[0])
    t = table(FakeClock())
    t.learn(pid(1), [addr(4001)])
    assert store.pending(t.all()) == {pid(1): state}  # not recorded as written
    assert store.write(store.pending(t.all())) == 1
    assert PeerStore(index).load() == {pid(1): state}


# -- through the node -------------------------------------------------------------------


def make_node(repo: Repo, options: NodeOptions | None = None, clock: FakeClock | None = None) -> Node:
    return Node(repo, NODE, options or NodeOptions(), clock=clock or FakeClock(), rng=lambda: 0.0)


async def test_node_loads_and_dials_known_peers_respecting_backoff_and_allowlist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    path = tmp_path / "repo"
    Repo.init(path).close()
    with Repo.open(path) as repo:
        node = make_node(repo, clock=clock)
        t = node.peers
        t.learn(pid(1), [addr(4001)])
        t.mark_connected(pid(1), True)
        t.mark_connected(pid(1), False)
        clock.advance(10)
        t.learn(pid(2), [addr(4002)])
        t.mark_connected(pid(2), True)
        t.mark_connected(pid(2), False)  # more recently connected than pid(1)
        t.learn(pid(3), [addr(4003)])
        t.dial_failed(pid(3))  # in backoff
        t.learn(pid(4), [addr(4004)])  # not on the restarted node's allowlist
        t.ensure(pid(2)).reputation.delivered += 5  # pid(2) served us well
        t.ensure(pid(1)).reputation.corrupt += 1
        begins = count_write_transactions(repo.index)
        assert await node.flush_peer_table() == 4
        assert await node.flush_reputation() == 2
        assert await node.flush_peer_table() == 0
        assert len(begins) == 2

    with Repo.open(path) as repo:
        allow = frozenset({pid(1), pid(2), pid(3)})
        node = make_node(repo, NodeOptions(allow_peers=allow), clock=clock)
        assert await node.load_peer_table() == 3
        await node.load_reputation()
        assert node.peers.get(pid(4)) is None  # never remembered, so never dialled
        dialled: list[Multiaddr] = []
        monkeypatch.setattr(node, "_start_dial", lambda a: dialled.append(a) or True)
        assert node._dial_ready() == 2
        # Best reputation / most recent first; pid(3) waits for its backoff.
        assert dialled == [addr(4002).with_peer(pid(2)), addr(4001).with_peer(pid(1))]
        clock.advance(DIAL_BACKOFF_CAP_S)
        dialled.clear()
        node._dial_ready()
        assert addr(4003).with_peer(pid(3)) in dialled
        assert await node.flush_peer_table() == 0  # loaded rows are not rewritten


async def test_dials_at_start_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Repo.init(tmp_path / "repo") as repo:
        node = make_node(repo)
        for n in range(MAX_DIALS_IN_FLIGHT * 3):
            node.peers.learn(pid(n), [addr(7000 + n)])
        started: list[Multiaddr] = []

        def fake_start(a: Multiaddr) -> bool:
            assert a.peer_id is not None
            node._dialing.add(a.peer_id)
            started.append(a)
            return True

        monkeypatch.setattr(node, "_start_dial", fake_start)
        assert node._dial_ready() == MAX_DIALS_IN_FLIGHT


async def test_node_writes_the_table_at_shutdown_and_starts_with_damaged_rows(tmp_path: Path) -> None:
    with Repo.init(tmp_path / "repo") as repo:
        PeerStore(repo.index).load()  # create the table
        insert_raw(repo.index, [("garbage", "[]", 0, 0, 0, 0, 0)])
        # Long intervals: only the shutdown flush can write. A saved peer at a
        # closed port: dialled at start, fails, and its backoff is saved.
        closed_port = free_port()  # below the ephemeral range: no other process's port-0 listener lands there
        insert_raw(repo.index, [(str(pid(1)), f'["/ip4/127.0.0.1/tcp/{closed_port}"]', 0, 0, 0, 0, 0)])
        node = Node(repo, NODE, NodeOptions(peer_table_flush_interval=3600.0, reputation_flush_interval=3600.0,
                                            pex_interval=3600.0))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert node.peer_store.skipped_rows == 1
            node.peers.learn(pid(2), [addr(4002)])
            rec = node.peers.get(pid(1))
            assert rec is not None
            with trio.fail_after(20):
                while rec.dial_failures == 0:  # the dial at start, to a closed port
                    await trio.sleep(0.05)
            assert set(PeerStore(repo.index).load()) == {pid(1)}  # not yet written
            node.cancel()
        saved = PeerStore(repo.index).load()
    assert set(saved) == {pid(1), pid(2)}
    assert saved[pid(1)].dial_failures == 1 and saved[pid(1)].next_dial_at > saved[pid(1)].failing_since > 0
