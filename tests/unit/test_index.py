"""The SQLite index: schema versions, pins, membership-derived refcounts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from shoal.store.persist import index as index_mod
from shoal.store.errors import RepoError
from shoal.store.persist.index import CORE_MIGRATIONS, Index, ObjectRecord, register_schema


def _obj(cid: str, name: str = "f") -> ObjectRecord:
    return ObjectRecord(cid=cid, name=name, kind="file", size=3, tsize=3, blocks=1, profile="p", chunker="fixed")


def test_wal_and_versions(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")
    assert idx.schema_version() == len(CORE_MIGRATIONS)
    db = sqlite3.connect(tmp_path / "i.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    idx.close()
    Index(tmp_path / "i.sqlite").close()  # reopening migrates nothing, fails nothing


def test_newer_schema_refused(tmp_path: Path) -> None:
    Index(tmp_path / "i.sqlite").close()
    db = sqlite3.connect(tmp_path / "i.sqlite")
    db.execute(f"PRAGMA user_version = {len(CORE_MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(RepoError, match="newer"):
        Index(tmp_path / "i.sqlite")


def test_registered_component(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "_EXTENSIONS", {})
    register_schema("ledger", ["CREATE TABLE ledger (op TEXT, joules REAL);"])
    idx = Index(tmp_path / "i.sqlite")
    assert idx.component_version("ledger") == 1
    idx.close()
    register_schema("ledger", [
        "CREATE TABLE ledger (op TEXT, joules REAL);",
        "ALTER TABLE ledger ADD COLUMN bytes INTEGER; CREATE INDEX ledger_op ON ledger(op);",
    ])
    idx = Index(tmp_path / "i.sqlite")
    assert idx.component_version("ledger") == 2
    with idx.transaction() as db:
        db.execute("INSERT INTO ledger VALUES ('put', 1.5, 10)")
    with pytest.raises(ValueError):
        register_schema("ledger", ["CREATE TABLE other (x);"])


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")
    with pytest.raises(RepoError, match="broken schema migration 1"):
        idx.apply_schema("broken", ["CREATE TABLE half (x); CREATE TABLE half (x);"])
    assert idx.component_version("broken") == 0
    with idx.snapshot() as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None


def test_pins_and_refcounts(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")
    idx.record_put(_obj("bafyA"), ["K1", "K2", "K3"])
    idx.add_pin("bafyB", True, ["K3", "K4"])
    assert [p.cid for p in idx.pins()] == ["bafyA", "bafyB"]
    assert [p.blocks for p in idx.pins()] == [3, 2]
    assert idx.refcount("K3") == 2 and idx.refcount("K1") == 1 and idx.refcount("K9") == 0
    assert idx.live_keys() == {"K1", "K2", "K3", "K4"}
    assert idx.remove_pin("bafyA") is True
    assert idx.remove_pin("bafyA") is False
    assert idx.live_keys() == {"K3", "K4"}
    assert idx.refcount("K3") == 1
    assert [o.cid for o in idx.objects()] == ["bafyA"]  # objects outlive pins until gc
    assert idx.forget_objects(["bafyA"]) == 1
    assert idx.objects() == []


def test_repin_replaces_block_set(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")
    idx.add_pin("bafyA", False, ["K1"])
    idx.add_pin("bafyA", True, ["K1", "K2"])
    assert sorted(idx.pin_keys("bafyA")) == ["K1", "K2"]
    assert idx.pins()[0].recursive is True


def test_put_is_atomic(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")

    def keys() -> Iterator[str]:  # fails half-way through the insert
        yield "K1"
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        idx.record_put(_obj("bafyA"), keys())
    assert idx.objects() == [] and idx.pins() == [] and idx.live_keys() == set()


def test_same_cid_recorded_once(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")
    idx.record_put(_obj("bafyA", "one"), ["K1"])
    idx.record_put(_obj("bafyA", "two"), ["K1"])
    assert [(o.cid, o.name) for o in idx.objects()] == [("bafyA", "two")]
    assert idx.refcount("K1") == 1


def test_unlocked_open_needs_current_schema(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "i.sqlite")
    db.close()
    with pytest.raises(RepoError, match="upgrade"):
        Index(tmp_path / "i.sqlite", migrate=False)


def test_split_sql_keeps_strings_and_triggers() -> None:
    script = """
    CREATE TABLE t (x TEXT DEFAULT 'a;b'); CREATE TABLE log (y);
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (1); INSERT INTO log VALUES (2); END;
    """
    parts = index_mod._split_sql(script)
    assert len(parts) == 3 and parts[0].endswith("'a;b');")


def test_reads_do_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    """A read while another thread holds a write transaction answers at once
    with the last committed state (issue 12 item 15: a node's event loop
    waited 1.3 s behind a put's transaction on the shared connection)."""
    import threading

    idx = Index(tmp_path / "i.sqlite")
    idx.record_put(_obj("before"), ["k0"])
    in_tx = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with idx.transaction() as db:
            db.execute("INSERT INTO pins (cid, recursive, created) VALUES ('during', 1, 0)")
            in_tx.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert in_tx.wait(10)
        done = threading.Event()
        seen: list[object] = []

        def reader() -> None:
            seen.extend([idx.is_pinned("before"), idx.is_pinned("during"), [o.cid for o in idx.objects()]])
            with idx.snapshot() as db:
                seen.append(db.execute("SELECT COUNT(*) FROM pins").fetchone()[0])
            done.set()

        threading.Thread(target=reader, daemon=True).start()
        assert done.wait(5), "a read waited for the write transaction"
        assert seen == [True, False, ["before"], 1]
    finally:
        release.set()
        t.join(10)
    assert idx.is_pinned("during")  # committed now, and readers see it
    idx.close()


def test_a_read_inside_own_transaction_sees_its_rows(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")
    with idx.transaction() as db:
        db.execute("INSERT INTO pins (cid, recursive, created) VALUES ('x', 1, 0)")
        assert idx.is_pinned("x")
        with idx.snapshot() as snap:
            assert snap.execute("SELECT COUNT(*) FROM pins").fetchone()[0] == 1
    idx.close()


def test_snapshot_cannot_write(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")
    with pytest.raises(sqlite3.OperationalError):
        with idx.snapshot() as db:
            db.execute("INSERT INTO pins (cid, recursive, created) VALUES ('x', 1, 0)")
    assert not idx.is_pinned("x")
    idx.close()
    with pytest.raises(sqlite3.ProgrammingError):
        idx.pins()


def test_a_write_on_the_loop_thread_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A node marks its event loop's thread; a write from there is a bug the
    integration tests catch by this log line (tests/integration/swarm.py)."""
    import threading

    idx = Index(tmp_path / "i.sqlite")
    idx.record_put(_obj("elsewhere"), ["k"])
    assert index_mod.LOOP_WRITE not in caplog.text
    idx.loop_thread = threading.get_ident()
    idx.record_put(_obj("on-the-loop"), ["k"])
    assert index_mod.LOOP_WRITE in caplog.text
    assert idx.is_pinned("on-the-loop")  # logged, not refused
    idx.close()
