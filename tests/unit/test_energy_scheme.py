"""The report's scheme comes from the repo: erasure-coded objects (the
replication service's `repl_ec` tables) are reported as EC K+M, their shard
objects are not counted as stored objects of their own (issue 18 item 5)."""

from __future__ import annotations

import random
from pathlib import Path

from shoal.p2p.net.energy_service import local_report, repo_facts, repo_scheme
from shoal.store.energy import load_coefficients
from shoal.store.energy.model import Layout
from shoal.store.persist.repo import Repo

# As the replication service creates them (p2p/replication/agreements.py,
# migrations 4 and 5); IF NOT EXISTS since they may already have run.
EC_TABLES = """
CREATE TABLE IF NOT EXISTS repl_ec (
    cid TEXT PRIMARY KEY, k INTEGER NOT NULL, m INTEGER NOT NULL, threshold INTEGER NOT NULL,
    drop_local INTEGER NOT NULL DEFAULT 0, layout_id BLOB, map BLOB, created REAL NOT NULL,
    deputy_for TEXT);
CREATE TABLE IF NOT EXISTS repl_ec_shards (
    cid TEXT NOT NULL, idx INTEGER NOT NULL, shard_cid TEXT NOT NULL, length INTEGER NOT NULL,
    PRIMARY KEY (cid, idx)) WITHOUT ROWID
"""


def _file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def test_an_erasure_coded_repo_is_reported_as_ec(tmp_path: Path) -> None:
    with Repo.init(tmp_path / "repo") as repo:
        obj = repo.add(_file(tmp_path / "model.bin", 400_000, 1))
        small = repo.add(_file(tmp_path / "notes.bin", 100_000, 2))
        shard = repo.add(_file(tmp_path / "shard.bin", 100_000, 3))  # stands for a shard imported as an object
        assert repo_scheme(repo)[3] == Layout.replicas(1)  # no EC tables: whole copies, as before
        before = repo_facts(repo)
        assert before == (600_000, 1, 3)
        with repo.index.transaction() as db:
            for statement in EC_TABLES.split(";"):
                db.execute(statement)
            db.execute("INSERT INTO repl_ec (cid, k, m, threshold, drop_local, created) VALUES (?, 8, 4, 9, 0, 0)",
                       (str(obj.cid),))
            db.execute("INSERT INTO repl_ec_shards (cid, idx, shard_cid, length) VALUES (?, 0, ?, 100000)",
                       (str(obj.cid), str(shard.cid)))
        stored, copies, objects, scheme = repo_scheme(repo)
        assert (stored, objects) == (500_000, 2)  # the shard object is the scheme's bytes, not an object
        assert scheme == Layout.ec(8, 4) and scheme.owner_copy
        report = local_report(repo, {}, load_coefficients())
        assert report["scheme"] == {"ec": [8, 4], "owner_copy": True}
        assert report["stored_factor"] == 2.5 and report["stored_bytes"] == 500_000
        # Replicated bytes in the majority: reported as replicas.
        with repo.index.transaction() as db:
            db.execute("UPDATE repl_ec SET cid = ?", (str(small.cid),))
            db.execute("UPDATE repl_ec SET drop_local = 1")
        assert repo_scheme(repo)[3] == Layout.replicas(1)
        with repo.index.transaction() as db:
            db.execute("UPDATE repl_ec SET cid = ?", (str(obj.cid),))
        assert repo_scheme(repo)[3] == Layout.ec(8, 4, owner_copy=False)


def test_objects_a_deputy_repairs_for_a_gone_owner_are_not_this_nodes_scheme(tmp_path: Path) -> None:
    """A deputy keeps a `repl_ec` row for the object it repairs on behalf of
    its gone owner; counted as its own, a node that put nothing with EC was
    reported as an EC swarm."""
    with Repo.init(tmp_path / "repo") as repo:
        mine = repo.add(_file(tmp_path / "mine.bin", 300_000, 4))
        with repo.index.transaction() as db:
            for statement in EC_TABLES.split(";"):
                db.execute(statement)
            db.execute("INSERT INTO repl_ec (cid, k, m, threshold, drop_local, created, deputy_for) "
                       "VALUES (?, 4, 2, 5, 0, 0, ?)", (str(mine.cid), "12D3KooWGoneOwner"))
        assert repo_scheme(repo)[3] == Layout.replicas(1)
        with repo.index.transaction() as db:
            db.execute("UPDATE repl_ec SET deputy_for = NULL")
        assert repo_scheme(repo)[3] == Layout.ec(4, 2)
