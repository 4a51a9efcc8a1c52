"""EnergyAccount: rows land in the ledger with method and bytes; threads; serve
aggregation and its flush; the service's hooks on a real (not running) node."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.net.connection import SendBudget
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.wire import limits as L
from shoal.store.ipld.cid import RAW, make_cid
from shoal.p2p.net.energy_service import (
    EnergyService, measuring, replicating_to, summary_from_message, summary_to_message,
)
from shoal.p2p.secure.identity import Identity
from shoal.p2p.wire.messages import LedgerSummary, LedgerSummaryRequest, StoreRequest, StoreResponse, WantBlock
from shoal.store.energy import ledger
from shoal.store.energy.accounting import EnergyAccount, account_for, put_measured, read_summary
from shoal.store.errors import InvalidInput
from shoal.store.persist.index import Index
from shoal.store.persist.repo import Repo


def _rows(index: Index) -> list[tuple[Any, ...]]:
    with index.snapshot() as db:
        return db.execute(
            "SELECT kind, method, joules, bytes_hashed, bytes_written, bytes_sent, bytes_received, duration_s"
            " FROM energy_ledger ORDER BY id").fetchall()


@pytest.fixture
def index(tmp_path: Path) -> Index:
    return Index(tmp_path / "index.sqlite")


@pytest.fixture
def account(index: Index, tmp_path: Path) -> EnergyAccount:
    # An empty powercap directory: no RAPL, so the estimate path is used everywhere.
    (tmp_path / "powercap").mkdir()
    return EnergyAccount(index, {"cpu_watts_per_core": 10.0}, powercap_root=tmp_path / "powercap")


def _burn(seconds: float) -> None:
    import time

    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def test_measure_records_one_row_with_method_bytes_and_joules(account: EnergyAccount, index: Index) -> None:
    with account.measure("put") as op:
        _burn(0.02)
        op.bytes_hashed += 1000
        op.bytes_written += 900
    (row,) = _rows(index)
    kind, method, joules, hashed, written, sent, received, duration = row
    assert (kind, method, hashed, written, sent, received) == ("put", "cpu-time-estimate", 1000, 900, 0, 0)
    assert joules >= 0.02 * 10.0 * 0.9  # CPU seconds x the overridden 10 W per core
    assert duration > 0


def test_rapl_method_is_recorded_when_a_package_zone_is_readable(index: Index, tmp_path: Path) -> None:
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    acct = EnergyAccount(index, powercap_root=tmp_path / "powercap")
    with acct.measure("gc") as op:
        op.bytes_written += 5
    assert _rows(index)[0][:2] == ("gc", "rapl")


def test_a_failed_operation_is_not_recorded(account: EnergyAccount, index: Index) -> None:
    with pytest.raises(RuntimeError):
        with account.measure("put") as op:
            op.bytes_hashed += 10
            raise RuntimeError("disk on fire")
    assert _rows(index) == []


def test_unknown_kind_is_refused(account: EnergyAccount) -> None:
    with pytest.raises(InvalidInput):
        account.meter("fetch")
    with pytest.raises(InvalidInput):
        with account.serving("fetch"):
            pass


def test_concurrent_measures_from_threads_all_land(account: EnergyAccount, index: Index) -> None:
    def work(i: int) -> None:
        for _ in range(25):
            with account.measure("audit-prove") as op:
                op.bytes_hashed += i
            with account.serving() as s:
                s.bytes_sent += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    account.flush()
    s = read_summary(index)
    assert s["audit-prove"]["count"] == 200
    assert s["audit-prove"]["bytes_hashed"] == 25 * sum(range(8))
    assert s["serve"]["bytes_sent"] == 200


def test_serving_is_aggregated_in_memory_until_flush(account: EnergyAccount, index: Index) -> None:
    for _ in range(100):
        with account.serving() as op:
            _burn(0.0005)
            op.bytes_sent += 256 * 1024
    assert _rows(index) == []  # no SQLite write per block
    pending = account.summary()["serve"]
    assert pending["bytes_sent"] == 100 * 256 * 1024 and pending["joules"] > 0
    assert account.flush() == 1
    assert account.flush() == 0  # nothing new
    (row,) = _rows(index)
    assert row[0] == "serve" and row[1] == "cpu-time-estimate" and row[5] == 100 * 256 * 1024
    assert account.summary()["serve"]["bytes_sent"] == 100 * 256 * 1024  # flushed, still counted once


def test_a_busy_period_is_cut_at_flush_and_overlaps_are_counted_once(account: EnergyAccount, index: Index) -> None:
    outer = account.serving()
    op = outer.__enter__()
    with account.serving("replicate-out") as inner:
        inner.bytes_sent += 300
    _burn(0.01)
    op.bytes_sent += 100
    # Still in flight: flush cuts the period; energy goes to the finished requests' kinds.
    assert account.flush() == 1
    outer.__exit__(None, None, None)
    account.flush()
    s = read_summary(index)
    assert s["replicate-out"]["bytes_sent"] == 300
    assert s["serve"]["bytes_sent"] == 100
    total = s["replicate-out"]["joules"] + s["serve"]["joules"]
    assert total >= 0.01 * 10.0 * 0.9  # the one busy period, not once per request


def test_account_for_loads_config_overrides_once_per_repo(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "r", config={"energy": {"cpu_watts_per_core": 7.5}})
    try:
        a = account_for(repo)
        assert a is account_for(repo)
        assert a.watts_per_core == 7.5
        assert a.coefficients["cpu_watts_per_core"].source.startswith("user override")
        src = tmp_path / "f.bin"
        src.write_bytes(b"x" * 300_000)
        result = put_measured(repo, src)
        put = read_summary(repo.index)["put"]
        assert put["bytes_hashed"] == result.tsize and put["count"] == 1
    finally:
        repo.close()


def test_read_summary_without_the_table_is_empty(tmp_path: Path) -> None:
    db = tmp_path / "bare.sqlite"
    sqlite3.connect(db).close()
    idx = Index(db)
    with idx.transaction() as c:
        c.execute("DROP TABLE IF EXISTS energy_ledger")
    assert read_summary(idx) == {}


def test_summary_wire_round_trip_keeps_joules_and_primary_bytes(account: EnergyAccount) -> None:
    with account.measure("replicate-in") as op:
        op.bytes_received += 4096
    msg = summary_to_message(3, account.summary())
    back = summary_from_message(msg)
    assert back["replicate-in"]["bytes_received"] == 4096
    assert back["replicate-in"]["joules"] == account.summary()["replicate-in"]["joules"]
    ledger.merge_summaries([back])  # valid as a peer summary


# -- the node-side hooks, on a real (not running) node -------------------------------------


class FakeConn:
    """What the block server and the handlers touch: the peer, a send budget, replies."""

    def __init__(self, peer: Any) -> None:
        self.remote_peer = peer
        self.send_budget = SendBudget(L.SEND_BUDGET_BYTES)
        self.sent: list[Any] = []
        self.closed = False

    async def reply(self, msg: Any) -> bool:
        self.sent.append(msg)
        return True


@pytest.fixture
def node(tmp_path: Path) -> Any:
    repo = Repo.init(tmp_path / "node")
    yield Node(repo, Identity.generate(), NodeOptions())
    repo.close()


def _block(node: Node, fill: bytes) -> bytes:
    """A 1000-byte raw block stored in the node's repo; its CID's bytes."""
    data = fill * 1000
    cid = make_cid(RAW, data)
    node.repo.blockstore.put(cid, data)
    return bytes(cid)


async def test_service_wraps_serving_store_requests_and_answers_summaries(node: Any) -> None:
    async def on_store(conn: Any, msg: Any) -> list[Any]:
        return [StoreResponse(msg.request_id, True, "", b"s" * 64)]

    node.add_handler(StoreRequest, on_store)
    service = EnergyService(node)
    node.register(service)
    assert node.energy is service and node.services == [service]
    assert [(r.method, r.path) for r in node.routes] == [("GET", "/v1/energy")]
    peer, other = Identity.generate().peer_id, Identity.generate().peer_id
    cid, cid2 = _block(node, b"\x11"), _block(node, b"\x12")

    await node._handle_request(FakeConn(peer), WantBlock(1, (cid, cid2)))  # type: ignore[arg-type]
    with replicating_to(node, other):
        await node._handle_request(FakeConn(other), WantBlock(2, (cid,)))  # type: ignore[arg-type]
    await node._handle_request(FakeConn(other), WantBlock(3, (cid,)))  # type: ignore[arg-type]  # served again after the store request

    req = StoreRequest(4, cid, 12345, b"m", b"s" * 64)
    await node.handlers[StoreRequest](FakeConn(peer), req)  # type: ignore[arg-type]
    async with measuring(node, "audit-verify") as op:
        op.bytes_hashed += 7

    (reply,) = await node.handlers[LedgerSummaryRequest](FakeConn(peer), LedgerSummaryRequest(5))  # type: ignore[arg-type]
    assert isinstance(reply, LedgerSummary)
    got = reply.as_dict()
    assert got["serve"][1] == 3000
    assert got["replicate-out"][1] == 1000
    assert got["replicate-in"][1] == 12345
    assert got["audit-verify"][1] == 7


async def test_measuring_without_a_service_is_a_no_op(node: Any) -> None:
    async with measuring(node, "repair") as op:
        op.bytes_received += 1
    with replicating_to(node, Identity.generate().peer_id):
        pass
    assert read_summary(node.repo.index) == {}


async def test_flush_loop_writes_pending_serve_totals_when_cancelled(node: Any) -> None:
    service = EnergyService(node)
    node.register(service)
    cid = _block(node, b"\x22")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.flush_loop)
        await node._handle_request(FakeConn(Identity.generate().peer_id), WantBlock(1, (cid,)))  # type: ignore[arg-type]
        await trio.sleep(0.01)
        assert _rows(node.repo.index) == []  # well before the first periodic flush
        nursery.cancel_scope.cancel()  # node shutdown
    (row,) = _rows(node.repo.index)
    assert row[0] == "serve" and row[5] == 1000
