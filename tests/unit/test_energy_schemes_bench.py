"""bench/energy_schemes.py prints the report's own figures (the README's
energy sentence is quoted from it), for every scheme of issue 18 item 5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import energy_schemes
from shoal.store.energy import build_report, load_coefficients
from shoal.store.energy.model import Layout


def test_the_table_is_the_reports_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert energy_schemes.main(["--json", str(tmp_path / "e.json"), "--set", "network_kwh_per_gb=0.001"]) == 0
    text = capsys.readouterr().out
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["overrides"] == {"network_kwh_per_gb": 0.001}
    rows = {h["scheme"]: h for h in doc["headline"]}
    assert {"replicas 2", "replicas 3", "EC 4+2", "EC 8+4", "EC 10+6"} <= set(rows)
    r = build_report({}, 10**9, 1, load_coefficients({"network_kwh_per_gb": 0.001}), scheme=Layout.ec(8, 4))
    h = rows["EC 8+4"]
    assert h["swarm_wh_per_gb_month"] == pytest.approx(r["swarm"]["wh_per_gb_month"])
    assert h["cloud_equal_wh_per_gb_month"] == pytest.approx(r["equal_durability"]["baseline_wh_per_gb_month"])
    assert h["cloud_replicas_equal"] == r["equal_durability"]["baseline_replicas"]
    line = next(l for l in text.splitlines() if l.startswith("| EC 8+4 |"))
    assert f"| {h['swarm_wh_per_gb_month']:.2f} |" in line and f"| {h['cloud_equal_wh_per_gb_month']:.2f} |" in line
    assert all(w["scenarios"] == 16 for w in doc["wins"])
