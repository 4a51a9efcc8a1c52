"""Peer reputation survives a restart: counters written in batches to the
repo index, read back from a fresh connection, damaged rows skipped."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from shoal.p2p.net import reputation_store as rs
from shoal.p2p.secure.identity import Identity
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.net.peers import Counts, Reputation
from shoal.p2p.net.reputation_store import COMPONENT, ReputationStore
from shoal.store.persist.index import Index
from shoal.store.persist.repo import Repo
from tests.unit.peer_helpers import count_write_transactions, pid

NODE = Identity.from_seed(hashlib.sha256(b"reputation node").digest())


def test_counters_written_and_read_back_from_a_fresh_connection(tmp_path: Path, index: Index) -> None:
    store = ReputationStore(index, clock=lambda: 1234.5)
    reps = {pid(1): Reputation(delivered=40, corrupt=2, timeouts=3, proven_losses=1, audit_timeouts=4),
            pid(2): Reputation(delivered=7)}
    assert store.load() == {}
    changes = store.pending(reps.items())
    assert store.write(changes) == 2
    index.close()

    fresh = Index(tmp_path / "index.sqlite")  # a new connection, as after a restart
    try:
        assert fresh.component_version(COMPONENT) == len(rs.MIGRATIONS)
        loaded = ReputationStore(fresh).load()
        with fresh.snapshot() as db:
            (updated,) = db.execute("SELECT DISTINCT updated FROM peer_reputation").fetchone()
    finally:
        fresh.close()
    assert loaded == {p: r.counts() for p, r in reps.items()}
    assert updated == 1234.5


def test_many_updates_are_one_write(index: Index) -> None:
    store = ReputationStore(index)
    reps = {pid(n): Reputation() for n in range(300)}
    for _ in range(20):  # 6000 increments, as from delivered blocks
        for rep in reps.values():
            rep.delivered += 1
    reps[pid(0)].corrupt += 1
    begins = count_write_transactions(index)
    assert store.write(store.pending(reps.items())) == 300
    assert len(begins) == 1 and store.writes == 1
    # Nothing changed since: nothing to write, no transaction.
    assert store.pending(reps.items()) == {}
    assert store.write({}) == 0 and len(begins) == 1
    # One more change: only that row, again one transaction.
    reps[pid(5)].timeouts += 1
    changes = store.pending(reps.items())
    assert changes == {pid(5): Counts(delivered=20, timeouts=1)}
    store.write(changes)
    assert len(begins) == 2 and store.writes == 2


def test_blank_reputations_are_not_written(index: Index) -> None:
    store = ReputationStore(index)
    assert store.pending([(pid(1), Reputation()), (pid(2), Reputation())]) == {}


def test_damaged_rows_are_skipped_not_fatal(index: Index) -> None:
    store = ReputationStore(index)
    store.write({pid(1): Counts(corrupt=2)})
    with index.transaction() as db:
        db.executemany(
            "INSERT INTO peer_reputation (peer_id, delivered, corrupt, timeouts, proven_losses, audit_timeouts, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, 0)",
            [("not a peer id", 1, 0, 0, 0, 0),
             (str(pid(2)), -5, 0, 0, 0, 0),
             (str(pid(3)), "many", 0, 0, 0, 0),
             (str(pid(4)), 1.5, 0, 0, 0, 0),
             ("", 1, 0, 0, 0, 0),
             (str(pid(5)), 0, 0, 0, 3, 0)],
        )
    fresh = ReputationStore(index)
    assert fresh.load() == {pid(1): Counts(corrupt=2), pid(5): Counts(proven_losses=3)}
    assert fresh.skipped_rows == 5


def test_a_missing_table_is_not_fatal(index: Index) -> None:
    ReputationStore(index).load()
    with index.transaction() as db:
        db.execute("DROP TABLE peer_reputation")  # the schema still says it exists
    store = ReputationStore(index)
    assert store.load() == {}
    with pytest.raises(sqlite3.Error):  # the node logs this and retries later
        store.write({pid(1): Counts(corrupt=1)})
    assert store.pending([(pid(1), Reputation(corrupt=1))]) == {pid(1): Counts(corrupt=1)}


def test_a_failed_write_is_retried(index: Index) -> None:
    store = ReputationStore(index)
    reps = [(pid(1), Reputation(corrupt=1))]
    with index.transaction() as db:
        db.execute("CREATE TRIGGER no_writes BEFORE INSERT ON peer_reputation BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    with pytest.raises(sqlite3.Error):
        store.write(store.pending(reps))
    assert store.writes == 0
    with index.transaction() as db:
        db.execute("DROP TRIGGER no_writes")
    assert store.write(store.pending(reps)) == 1
    assert ReputationStore(index).load() == {pid(1): Counts(corrupt=1)}


def test_rows_are_bounded_and_misbehaviour_is_kept_longest(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rs, "MAX_STORED_REPUTATIONS", 3)
    clock = iter(range(100))
    store = ReputationStore(index, clock=lambda: float(next(clock)))
    store.write({pid(1): Counts(corrupt=1)})  # oldest, but proven misbehaviour
    store.write({pid(2): Counts(delivered=1)})
    store.write({pid(3): Counts(delivered=1)})
    store.write({pid(4): Counts(delivered=1)})
    assert set(ReputationStore(index).load()) == {pid(1), pid(3), pid(4)}
    # A pruned peer is written again if it changes later.
    assert store.pending([(pid(2), Reputation(delivered=1))]) == {pid(2): Counts(delivered=1)}


# -- through the node ----------------------------------------------------------------


def make_node(repo: Repo, options: NodeOptions | None = None) -> Node:
    return Node(repo, NODE, options or NodeOptions())


async def test_node_restart_remembers_reputation(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    Repo.init(path).close()
    with Repo.open(path) as repo:
        node = make_node(repo)
        assert await node.load_reputation() == 0
        node.peers.ensure(pid(1)).reputation.corrupt += 2
        node.peers.ensure(pid(2)).reputation.proven_losses += 1
        for _ in range(500):
            node.peers.ensure(pid(3)).reputation.delivered += 1
        begins = count_write_transactions(repo.index)
        assert await node.flush_reputation() == 3
        assert await node.flush_reputation() == 0
        assert len(begins) == 1
    with Repo.open(path) as repo:
        node = make_node(repo)
        assert await node.load_reputation() == 3
        got = {p: r.counts() for p, r in node.peers.reputations()}
        assert got == {pid(1): Counts(corrupt=2), pid(2): Counts(proven_losses=1), pid(3): Counts(delivered=500)}
        rec = node.peers.ensure(pid(1))
        assert rec.reputation.corrupt == 2 and rec.as_json()["corrupt"] == 2
        assert await node.flush_reputation() == 0  # loaded rows are not rewritten


async def test_node_flushes_on_shutdown_and_starts_with_damaged_rows(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    with Repo.init(path) as repo:
        with repo.index.transaction() as db:
            db.execute("INSERT INTO peer_reputation VALUES ('garbage', 1, 1, 1, 1, 1, 0)")
            db.execute(f"INSERT INTO peer_reputation VALUES ('{pid(7)}', 0, 4, 0, 0, 0, 0)")
        # Long flush interval: only the shutdown flush can write.
        node = make_node(repo, NodeOptions(reputation_flush_interval=3600.0, pex_interval=3600.0))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert node.peers.ensure(pid(7)).reputation.corrupt == 4
            node.peers.ensure(pid(8)).reputation.timeouts += 1
            node.peers.ensure(pid(7)).reputation.corrupt += 1
            assert ReputationStore(repo.index).load()[pid(7)] == Counts(corrupt=4)  # not yet written
            node.cancel()
        saved = ReputationStore(repo.index).load()
    assert saved == {pid(7): Counts(corrupt=5), pid(8): Counts(timeouts=1)}


async def test_node_survives_an_unwritable_table(tmp_path: Path) -> None:
    with Repo.init(tmp_path / "repo") as repo:
        node = make_node(repo)
        await node.load_reputation()
        with repo.index.transaction() as db:
            db.execute("DROP TABLE peer_reputation")
        node.peers.ensure(pid(1)).reputation.corrupt += 1
        assert await node.flush_reputation() == 0  # logged, retried at the next flush
        assert node.reputation_store.pending(node.peers.reputations()) == {pid(1): Counts(corrupt=1)}


async def test_periodic_flush_is_rate_limited(tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    with Repo.init(tmp_path / "repo") as repo:
        node = make_node(repo, NodeOptions(reputation_flush_interval=5.0))
        begins = count_write_transactions(repo.index)
        node._reputation_flushed_at = trio.current_time()  # as `run` does at start
        rep = node.peers.ensure(pid(1)).reputation
        for _ in range(4):  # pex rounds every 1 s: no write before 5 s have passed
            rep.delivered += 10
            await node._maybe_flush()
            mock_clock.jump(1.0)
        assert begins == []
        mock_clock.jump(1.0)
        await node._maybe_flush()
        assert len(begins) == 1
        assert ReputationStore(repo.index).load() == {pid(1): Counts(delivered=40)}
        rep.corrupt += 1
        await node._maybe_flush()  # right after a flush: waits again
        assert len(begins) == 1


def test_damaged_rows_are_deleted_at_the_next_write(index: Index) -> None:
    """Like the peer table (shared `BatchedPeerTable`): a damaged row is not read back forever."""
    store = ReputationStore(index)
    store.write({pid(1): Counts(corrupt=2)})
    with index.transaction() as db:
        db.execute(
            "INSERT INTO peer_reputation (peer_id, delivered, corrupt, timeouts, proven_losses, audit_timeouts, "
            "updated) VALUES ('not a peer id', 1, 0, 0, 0, 0, 0)")
    fresh = ReputationStore(index)
    assert fresh.load() == {pid(1): Counts(corrupt=2)} and fresh.skipped_rows == 1
    assert fresh.has_damaged_rows
    assert fresh.write({}) == 0 and fresh.writes == 1 and not fresh.has_damaged_rows
    again = ReputationStore(index)
    assert again.load() == {pid(1): Counts(corrupt=2)} and again.skipped_rows == 0
