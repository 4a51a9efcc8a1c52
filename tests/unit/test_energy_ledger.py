"""Ledger rows, per-kind totals, and merging peers' summaries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shoal.store.energy import ledger
from shoal.store.errors import InvalidInput


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:")
    ledger.create_schema(c)
    ledger.create_schema(c)  # idempotent
    return c


def test_record_and_summary(conn: sqlite3.Connection) -> None:
    ledger.record(conn, "put", 10.0, "cpu-time-estimate", bytes_hashed=100, bytes_written=80, duration_s=1.5)
    ledger.record(conn, "put", 5.0, "rapl", bytes_hashed=50, bytes_written=50, duration_s=0.5)
    ledger.record(conn, "serve", 2.0, "rapl", bytes_sent=1000)
    s = ledger.summary(conn)
    assert set(s) == {"put", "serve"}
    put = s["put"]
    assert put["count"] == 2
    assert put["joules"] == pytest.approx(15.0)
    assert put["bytes_hashed"] == 150 and put["bytes_written"] == 130
    assert put["duration_s"] == pytest.approx(2.0)
    assert put["methods"] == {"cpu-time-estimate": 1, "rapl": 1}
    assert s["serve"]["bytes_sent"] == 1000


def test_empty_summary(conn: sqlite3.Connection) -> None:
    assert ledger.summary(conn) == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "download", "joules": 1.0, "method": "rapl"},
        {"kind": "put", "joules": 1.0, "method": "guess"},
        {"kind": "put", "joules": -1.0, "method": "rapl"},
        {"kind": "put", "joules": float("nan"), "method": "rapl"},
        {"kind": "put", "joules": 1.0, "method": "rapl", "bytes_sent": -5},
    ],
)
def test_record_validates(conn: sqlite3.Connection, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        ledger.record(conn, **kwargs)  # type: ignore[arg-type]


def test_all_kinds_accepted(conn: sqlite3.Connection) -> None:
    for kind in ledger.KINDS:
        ledger.record(conn, kind, 1.0, "rapl")
    assert set(ledger.summary(conn)) == set(ledger.KINDS)


def test_merge_summaries(conn: sqlite3.Connection) -> None:
    ledger.record(conn, "replicate-out", 3.0, "rapl", bytes_sent=10)
    local = ledger.summary(conn)
    remote = {
        "replicate-in": {"count": 1, "joules": 4.0, "bytes_received": 10, "methods": {"cpu-time-estimate": 1}},
        "replicate-out": {"count": 2, "joules": 1.0, "bytes_sent": 5, "methods": {"rapl": 2}},
    }
    merged = ledger.merge_summaries([local, remote])
    assert merged["replicate-out"]["count"] == 3
    assert merged["replicate-out"]["joules"] == pytest.approx(4.0)
    assert merged["replicate-out"]["bytes_sent"] == 15
    assert merged["replicate-out"]["methods"] == {"rapl": 3}
    assert merged["replicate-in"]["bytes_received"] == 10
    assert local["replicate-out"]["count"] == 1  # inputs untouched


@pytest.mark.parametrize(
    "remote",
    [
        {"hack": {"count": 1}},
        {"put": {"joules": -3.0}},
        {"put": {"count": "x"}},
        {"put": {"methods": {"magic": 1}}},
    ],
)
def test_merge_rejects_bad_remote(remote: dict[str, dict[str, object]]) -> None:
    with pytest.raises(InvalidInput):
        ledger.merge_summaries([remote])


def test_create_schema_keeps_callers_transaction() -> None:
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE other (x INTEGER)")
    c.commit()
    c.execute("INSERT INTO other VALUES (1)")
    ledger.create_schema(c)
    c.rollback()  # the insert was still uncommitted, so it is gone
    assert c.execute("SELECT COUNT(*) FROM other").fetchone()[0] == 0


def test_ledger_in_a_wal_file(tmp_path: Path) -> None:
    c = sqlite3.connect(tmp_path / "index.sqlite")
    c.execute("PRAGMA journal_mode=WAL")
    ledger.create_schema(c)
    ledger.record(c, "gc", 0.5, "cpu-time-estimate", bytes_written=0)
    c.commit()
    c.close()
    c2 = sqlite3.connect(tmp_path / "index.sqlite")
    assert ledger.summary(c2)["gc"]["count"] == 1
