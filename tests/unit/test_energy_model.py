"""Arithmetic of the energy model on known inputs, and coefficient overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.store.energy import model
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
