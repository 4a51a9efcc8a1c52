"""The energy meter counts a node's lanes' CPU (issue 15): the lanes do the
node's hashing, Noise and writes in other processes, so a get measured in the
node alone would look nearly free."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from shoal.p2p.lanes.pool import LaneProcessPool
from shoal.p2p.net.energy_service import EnergyService, measuring
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.secure.identity import Identity
from shoal.store.energy.meter import EnergyMeter
from shoal.store.persist.repo import Repo


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    repo = Repo.init(tmp_path / "node")
    (tmp_path / "powercap").mkdir()
    yield Node(repo, Identity.generate(), NodeOptions(lanes=2))
    repo.close()


def test_the_meter_adds_the_extra_cpu_delta(tmp_path: Path) -> None:
    (tmp_path / "powercap").mkdir()
    lanes = [100.0]
    with EnergyMeter("get", watts_per_core=10.0, powercap_root=tmp_path / "powercap",
                     extra_cpu=lambda: lanes[0]) as m:
        lanes[0] += 4.0
    assert 4.0 <= m.result.cpu_s < 4.5
    assert m.result.joules == pytest.approx(m.result.cpu_s * 10.0)


async def test_a_measured_fetch_counts_the_lanes_cpu(node: Any) -> None:
    service = EnergyService(node)
    node.register(service)
    pool = LaneProcessPool(2, repo=node.repo.path, peer_id=node.peer_id, host="127.0.0.1", admits=lambda p: True)
    lanes_cpu = [7.0]
    pool.live_cpu_seconds = lambda: lanes_cpu[0]  # type: ignore[method-assign]
    node.lane_pool = pool
    async with measuring(node, "replicate-in") as op:
        op.bytes_received += 1 << 20
        lanes_cpu[0] += 3.0  # the lanes worked 3 CPU-s during the fetch
    rows = service.account.summary()
    assert rows["replicate-in"]["joules"] >= 3.0 * service.account.watts_per_core


def test_what_lanes_served_joins_the_serve_totals(node: Any) -> None:
    service = EnergyService(node)
    node.register(service)
    node._lane_served(4 << 20, 2.0)  # as the pool reports a lane's serving
    row = service.account.summary()["serve"]
    assert row["bytes_sent"] == 4 << 20
    assert row["joules"] == pytest.approx(2.0 * service.account.watts_per_core)
    service.account.flush()
    assert service.account.summary()["serve"]["bytes_sent"] == 4 << 20  # in the ledger now
