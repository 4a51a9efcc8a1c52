"""Arithmetic of the energy model on known inputs, and coefficient overrides."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from shoal.store.energy import ledger, model
from shoal.store.erasure.durability import loss_probability, replicas_for
from shoal.store.energy.coefficients import OVERRIDE_SOURCE, load_coefficients
from shoal.store.errors import InvalidInput


def test_one_watt_per_tb_is_073_wh_per_gb_month() -> None:
    assert model.wh_per_gb_month(1.0) == pytest.approx(0.73)


def test_swarm_at_rest_known_value() -> None:
    # 0.47 W/TB x 0.73 x 3 copies x 1.5 overhead x PUE 1.0
    assert model.swarm_at_rest_wh_per_gb_month(0.47, 3, 1.5, 1.0) == pytest.approx(1.544, abs=1e-3)


def test_baseline_at_rest_known_value() -> None:
    assert model.baseline_at_rest_wh_per_gb_month(0.65, 3, 1.135) == pytest.approx(1.6157, abs=1e-3)


def test_at_rest_doubles_with_bytes_and_scales_with_copies() -> None:
    per_gb = model.swarm_at_rest_wh_per_gb_month(0.47, 3, 1.5, 1.0)
    one = model.at_rest_wh_per_month(per_gb, 10**9)
    assert model.at_rest_wh_per_month(per_gb, 2 * 10**9) == pytest.approx(2 * one)
    six = model.swarm_at_rest_wh_per_gb_month(0.47, 6, 1.5, 1.0)
    assert six == pytest.approx(2 * per_gb)


def test_marginal_disk_costs_nothing_at_rest() -> None:
    assert model.swarm_at_rest_wh_per_gb_month(0.47, 3, 1.5, 1.0, "marginal") == 0.0


def test_network_and_cpu_one_time() -> None:
    assert model.swarm_replication_network_wh_per_gb(3, 0.0065) == pytest.approx(13.0)
    assert model.baseline_ingest_network_wh_per_gb(3, 0.0065, 0.001) == pytest.approx(8.5)
    assert model.delivery_network_wh_per_gb(0.06) == pytest.approx(60.0)
    # 36 J/GB put + 2 x (18 + 18) J/GB replication = 108 J = 0.03 Wh
    assert model.one_time_cpu_wh_per_gb(36.0, 18.0, 18.0, 3) == pytest.approx(0.03)
    assert model.one_time_cpu_wh_per_gb(None, None, None, 3) == 0.0
    assert model.joules_per_gb(5.0, 0) is None


def test_audit_per_gb_month() -> None:
    # 3.6 J per audit x 30 a month x 2 remote replicas / 2 GB object = 108 J/GB = 0.03 Wh
    assert model.audit_wh_per_gb_month(3.6, 30, 3, 2.0) == pytest.approx(0.03)


def test_sensitivity_table_covers_grid_and_says_who_wins() -> None:
    c = load_coefficients()
    rows = model.sensitivity_table(c, model.MeasuredInputs(), (2, 3, 5))
    assert len(rows) == 3 * 2 * 2 * 2 * 2
    keys = {(r["copies"], r["disk"], r["network"], r["accounting"], r["swarm_pue"]) for r in rows}
    assert len(keys) == len(rows)
    assert all(isinstance(r["swarm_cheaper"], bool) for r in rows)
    # With the high network figure, 5 copies cost more than the baseline ...
    assert not next(r for r in rows if r["copies"] == 5 and r["network"] == "high")["swarm_cheaper"]
    # ... and at 2 copies with marginal disks and the low network figure the swarm wins.
    assert next(
        r for r in rows if r["copies"] == 2 and r["network"] == "low" and r["accounting"] == "marginal"
    )["swarm_cheaper"]


def test_default_three_copy_at_rest_roughly_equals_baseline() -> None:
    c = load_coefficients()
    r = model.evaluate(model.Scenario(3, 1.0, "hdd", "value", "attributional"), c, model.MeasuredInputs())
    assert r["swarm_at_rest_wh_per_gb_month"] == pytest.approx(1.544, abs=1e-3)
    assert r["baseline_at_rest_wh_per_gb_month"] == pytest.approx(1.616, abs=1e-3)


def test_every_coefficient_has_provenance() -> None:
    c = load_coefficients()
    for coef in c.values():
        assert coef.unit and coef.source and coef.year
    assert c.value("edge_hdd_w_per_tb") == pytest.approx(0.47)
    assert c.band("network_kwh_per_gb") == (0.001, 0.06)


def test_overrides_apply_and_are_marked() -> None:
    c = load_coefficients({"baseline_pue": 1.54, "baseline_replication": 6})
    assert c.value("baseline_pue") == 1.54
    assert c.value("baseline_replication") == 6.0
    assert c["baseline_pue"].source == OVERRIDE_SOURCE
    assert load_coefficients()["baseline_pue"].source != OVERRIDE_SOURCE


@pytest.mark.parametrize(
    "overrides",
    [{"no_such_coefficient": 1.0}, {"baseline_pue": "high"}, {"swarm_pue": -1}, {"swarm_pue": True}],
)
def test_bad_overrides_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        load_coefficients(overrides)


def test_unreadable_table_is_invalid_input(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(InvalidInput):
        load_coefficients(path=bad)


# -- issue 18 item 5: schemes, erasure coding, equal durability -----------------

def test_scheme_byte_counts() -> None:
    """Stored, placed and repair bytes per object byte for replicas and EC."""
    r3, ec, drop = model.Layout.replicas(3), model.Layout.ec(4, 2), model.Layout.ec(8, 4, owner_copy=False)
    assert (r3.stored_factor, r3.placed_factor, r3.repair_factor, r3.remote_holders) == (3.0, 2.0, 1.0, 2)
    # 6 shards of size/4 on peers, plus the owner's whole copy (local, not placed)
    assert (ec.stored_factor, ec.placed_factor, ec.remote_holders) == (2.5, 1.5, 6)
    # a lost shard: read 4 shards of size/4 (one object), write one shard of size/4
    assert ec.repair_factor == pytest.approx(1.25)
    assert (drop.stored_factor, drop.placed_factor, drop.whole_copies) == (1.5, 1.5, 0)
    assert model.Layout.parse("ec 4+2") == ec and model.Layout.parse("3") == r3
    assert model.Layout.parse("EC 8+4 drop-local") == drop and model.Layout.parse("replicas 3") == r3
    for bad in ("ec x+2", "replicas", "0+2", "replicas 0"):
        with pytest.raises(InvalidInput):
            model.Layout.parse(bad)


def test_ec_at_rest_and_placement_use_real_bytes() -> None:
    c = load_coefficients()
    m = model.MeasuredInputs(put_j_per_gb=36.0, replicate_in_j_per_gb=18.0, replicate_out_j_per_gb=18.0)
    r = model.evaluate(model.Scenario(model.Layout.ec(4, 2), 1.0, "hdd", "value", "attributional"), c, m)
    assert r["swarm_at_rest_wh_per_gb_month"] == pytest.approx(0.47 * 0.73 * 2.5 * 1.5)
    assert r["stored_factor"] == 2.5 and r["scheme"] == {"ec": [4, 2], "owner_copy": True}
    # network: 1.5 GB of shards x 6.5 Wh/GB; CPU: put 36 + 1.5 x (18 + 18) J; encode 4.13 CPU-s x 2.02 W
    encode_j = 4.13 * 2.02
    assert r["swarm_encode_source"] == "coefficient"
    assert r["swarm_one_time_wh_per_gb"] == pytest.approx(1.5 * 6.5 + (36 + 1.5 * 36 + encode_j) / 3600)
    dropped = model.evaluate(model.Scenario(model.Layout.ec(4, 2, False), 1.0, "hdd", "value", "attributional"),
                             c, m)
    assert dropped["swarm_at_rest_wh_per_gb_month"] == pytest.approx(0.47 * 0.73 * 1.5 * 1.5)
    # The pre-EC form still means whole replicas.
    assert model.evaluate(model.Scenario(3, 1.0, "hdd", "value", "attributional"), c, m)["stored_factor"] == 3.0


def test_repair_energy_per_lost_holder() -> None:
    c = load_coefficients()
    lam = -math.log(1 - 0.05)
    rows = {lay.label: model.evaluate(model.Scenario(lay, 1.0, "hdd", "value", "attributional"), c,
                                      model.MeasuredInputs())
            for lay in (model.Layout.replicas(3), model.Layout.ec(8, 4))}
    # replicas: 3 holders fail at lam a year, each repair copies one object (6.5 Wh/GB)
    assert rows["replicas 3"]["swarm_repair_wh_per_gb_month"] == pytest.approx(lam * 3 * 6.5 / 12)
    # EC 8+4: 12 holders, each repair moves 1 + 1/8 of the object and rebuilds (1.29 CPU-s x 2.02 W)
    per_repair = 1.125 * 6.5 + 1.29 * 2.02 / 3600
    assert rows["EC 8+4"]["swarm_repair_wh_per_gb_month"] == pytest.approx(lam * 12 * per_repair / 12)
    assert rows["EC 8+4"]["swarm_repair_cpu_source"] == "coefficient"


def test_measured_ec_energy_comes_from_the_ledger() -> None:
    conn = sqlite3.connect(":memory:")
    ledger.create_schema(conn)
    ledger.record(conn, ledger.EC_ENCODE, 20.0, "rapl", bytes_hashed=2 * 10**9)
    ledger.record(conn, ledger.EC_REPAIR, 4.0, "rapl", bytes_hashed=10**9)
    m = model.measured_inputs(ledger.summary(conn), 10**9, 1)
    assert m.ec_encode_j_per_gb == pytest.approx(10.0) and m.ec_repair_j_per_gb == pytest.approx(4.0)
    c = load_coefficients()
    assert model.ec_encode_j_per_gb(c, m) == (pytest.approx(10.0), "measured")
    # per lost holder: 4 J per GB of shards read + written, 1 + 1/4 GB per object GB
    assert model.ec_rebuild_j_per_gb(c, m, 4) == (pytest.approx(5.0), "measured")
    assert model.ec_encode_j_per_gb(c, model.MeasuredInputs()) == (pytest.approx(4.13 * 2.02), "coefficient")


def test_equal_durability_uses_the_durability_model() -> None:
    """The cloud is charged for the fewest replicas whose annual loss
    probability (its own drive AFR and repair time) is at most the swarm's."""
    c = load_coefficients()
    for lay in (model.Layout.replicas(2), model.Layout.replicas(3), model.Layout.ec(4, 2),
                model.Layout.ec(8, 4), model.Layout.ec(10, 6)):
        r = model.evaluate(model.Scenario(lay, 1.0, "hdd", "value", "attributional"), c, model.MeasuredInputs())
        p = loss_probability([0.05] * lay.n, lay.m, 24.0)
        n = replicas_for(p, 0.0157, 12.0)
        assert r["swarm_loss_probability"] == pytest.approx(p, rel=1e-12)
        assert r["equal_durability_replicas"] == n
        assert r["baseline_equal_loss_probability"] <= p
        assert n == 1 or loss_probability([0.0157] * (n - 1), n - 2, 12.0) > p
        assert r["baseline_equal_wh_per_gb_month"] == pytest.approx(
            model.baseline_figures(c, "hdd", 0.0065, n)["total"])
        assert r["swarm_cheaper_equal"] == (r["swarm_wh_per_gb_month"] < r["baseline_equal_wh_per_gb_month"])
    # More durable schemes need more cloud copies to match.
    wide = model.evaluate(model.Scenario(model.Layout.ec(10, 6), 1.0, "hdd", "value", "attributional"), c,
                          model.MeasuredInputs())
    assert wide["equal_durability_replicas"] > wide["baseline_replication"]
    # A flakier swarm needs fewer cloud copies to match it.
    flaky = model.evaluate(model.Scenario(model.Layout.ec(10, 6), 1.0, "hdd", "value", "attributional"), c,
                           model.MeasuredInputs(), swarm_afr=0.2)
    assert flaky["equal_durability_replicas"] < wide["equal_durability_replicas"]


def test_sensitivity_table_over_schemes() -> None:
    c = load_coefficients()
    rows = model.sensitivity_table(c, model.MeasuredInputs(), schemes=model.DEFAULT_SCHEMES)
    assert len(rows) == len(model.DEFAULT_SCHEMES) * 16
    labels = {r["scheme_label"] for r in rows}
    assert {"replicas 2", "replicas 3", "EC 4+2", "EC 8+4", "EC 10+6"} <= labels
    keys = {(r["scheme_label"], r["disk"], r["network"], r["accounting"], r["swarm_pue"]) for r in rows}
    assert len(keys) == len(rows)
    # With default figures (marginal aside), EC 8+4 beats the equally durable cloud
    # at the low network figure, and 5 replicas lose at the high one.
    assert next(r for r in rows if r["scheme_label"] == "EC 8+4" and r["network"] == "low" and r["disk"] == "hdd"
                and r["swarm_pue"] == 1.0 and r["accounting"] == "attributional")["swarm_cheaper_equal"]
    assert not next(r for r in rows if r["scheme_label"] == "replicas 5" and r["network"] == "high")[
        "swarm_cheaper_equal"]


def test_ec_kinds_are_ledger_kinds() -> None:
    assert {ledger.EC_ENCODE, ledger.EC_REPAIR} <= set(ledger.KINDS)
    assert ledger.PRIMARY_BYTES[ledger.EC_ENCODE] == ledger.PRIMARY_BYTES[ledger.EC_REPAIR] == "bytes_hashed"
