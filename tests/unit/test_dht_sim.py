"""bench/dht_sim.py runs the real DHT code: at N=200 (with and without dead
nodes, tables built by the fast method and by real joins) every lookup
succeeds, and a short churn run keeps provider records findable. Correctness,
not timing: no wall-clock bounds here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import dht_sim
from shoal.p2p.dht.keys import common_prefix_len


def test_fast_tables_are_converged_kademlia_tables() -> None:
    net = dht_sim.Network(200, dht_sim.Params(seed=3))
    net.populate_fast()
    for node in net.nodes[:50]:
        for cpl in range(12):
            # A bucket is full, or holds every peer at that cpl.
            at_cpl = [x for x in net.nodes if x is not node and common_prefix_len(node.key, x.key) == cpl]
            assert len(node.table.bucket(cpl)) == min(20, len(at_cpl))


def test_lookups_succeed_at_n200_with_dead_nodes() -> None:
    params = dht_sim.Params(seed=5)
    for dead in (0.0, 0.1, 0.3):
        net = dht_sim.Network(200, params)
        net.populate_fast()
        row = dht_sim.lookup_experiment(200, dead, 60, params, net)
        assert row["success"] == 1.0, row
        assert 1 <= row["hops_median"] <= 4 and row["msgs_median"] <= 60


def test_tables_built_by_real_joins_route_too() -> None:
    params = dht_sim.Params(seed=6, wire=False)
    net = dht_sim.Network(200, params)
    net.populate_join()
    assert min(len(x.table) for x in net.nodes) >= 20
    row = dht_sim.lookup_experiment(200, 0.1, 40, params, net)
    assert row["success"] == 1.0, row


def test_provider_records_survive_churn() -> None:
    res = dht_sim.churn_experiment(200, keys=5, hours=6, every=dht_sim.HOUR, params=dht_sim.Params(seed=7))
    assert len(res["series"]) == 6 and res["provides"] >= 5
    assert res["available_owner_online_mean"] >= 0.9, res


def test_cli_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert dht_sim.main(["--sizes", "100,200", "--lookups", "20", "--dead", "0.1", "--no-churn",
                         "--json", str(out)]) == 0
    assert '"success": 1.0' in out.read_text()


def test_cli_run_draws_the_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the `plot` extra
    png = tmp_path / "p.png"
    assert dht_sim.main(["--sizes", "100,200", "--lookups", "10", "--dead", "0", "--no-churn",
                         "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
