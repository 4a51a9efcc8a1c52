"""Report JSON shape, text rendering, and the PNG chart."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from shoal.cli.energy_report import plot, render_text
from shoal.store.energy import build_report, create_schema, load_coefficients, record, summary
from shoal.store.errors import InvalidInput

GB = 10**9


def sample_summary() -> dict[str, dict[str, object]]:
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    record(conn, "put", 36.0, "cpu-time-estimate", bytes_hashed=GB, bytes_written=GB)
    record(conn, "replicate-out", 18.0, "cpu-time-estimate", bytes_sent=GB)
    record(conn, "audit-prove", 0.5, "cpu-time-estimate", bytes_hashed=66 * 1024)
    return summary(conn)


def peer_summary() -> dict[str, dict[str, object]]:
    return {"replicate-in": {"count": 1, "joules": 18.0, "bytes_received": GB, "methods": {"rapl": 1}},
            "audit-verify": {"count": 1, "joules": 0.1, "bytes_hashed": 66 * 1024, "methods": {"rapl": 1}}}


def test_report_keys_and_figures() -> None:
    c = load_coefficients()
    r = build_report(sample_summary(), 4 * GB, 3, c, [peer_summary()], objects=2)
    r = json.loads(json.dumps(r))  # must be JSON-serialisable
    assert r["method"] == "mixed (cpu-time-estimate, rapl)"
    assert r["scope"] == "swarm" and r["peers"] == 1
    assert r["stored_bytes"] == 4 * GB
    assert r["swarm"]["at_rest_wh_per_gb_month"] == pytest.approx(1.544, abs=1e-3)
    assert r["baseline"]["at_rest_wh_per_gb_month"] == pytest.approx(1.616, abs=1e-3)
    assert r["swarm"]["wh_per_gb_month"] > r["swarm"]["at_rest_wh_per_gb_month"]
    assert r["swarm"]["wh_per_month"] == pytest.approx(4 * r["swarm"]["wh_per_gb_month"])
    assert r["operations"]["put"]["joules"] == pytest.approx(36.0)
    assert r["operations"]["put"]["bytes"] == GB
    assert r["operations"]["replicate-in"]["bytes"] == GB
    assert r["one_time_per_gb"]["put_j_per_gb"] == pytest.approx(36.0)
    assert r["one_time_per_gb"]["joules_per_audit"] == pytest.approx(0.6)
    # 36 + 2 x (18 + 18) = 108 J = 0.03 Wh CPU, plus 13 Wh network for 2 replicas
    assert r["one_time_per_gb"]["swarm_wh_per_gb"] == pytest.approx(13.03)
    names = {c["name"] for c in r["coefficients"]}
    assert {"edge_hdd_w_per_tb", "baseline_pue", "network_kwh_per_gb"} <= names
    assert all({"name", "value", "unit", "source", "year"} <= set(c) for c in r["coefficients"])
    # every scheme of the comparison (replicas 2/3/5, EC 4+2/8+4/10+6 with and
    # without the owner's copy) x PUE x disk x network x accounting
    assert len(r["sensitivity"]) == 9 * 16
    assert isinstance(r["swarm_cheaper"], bool)


def test_report_without_operations() -> None:
    r = json.loads(json.dumps(build_report({}, 0, 1, load_coefficients())))
    assert r["method"] == "none"
    assert r["operations"] == {}
    assert r["one_time_per_gb"]["put_j_per_gb"] is None
    assert "unmeasured" in render_text(r, detail=True)
    assert "nan" not in render_text(r) and "inf" not in render_text(r)


def test_report_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidInput):
        build_report({}, 10, 0, load_coefficients())


def test_render_text() -> None:
    report = build_report(sample_summary(), GB, 3, load_coefficients())
    text = render_text(report, detail=True)
    assert "swarm" in text and "baseline" in text
    assert "Sensitivity" in text
    assert text.count("\n") > 48


def test_render_text_leads_with_a_short_summary() -> None:
    """Issue 12: the default text is the answer in a few lines, not a 48-row table."""
    report = build_report(sample_summary(), GB, 3, load_coefficients())
    text = render_text(report)
    lines = text.splitlines()
    assert len(lines) <= 20 and "Sensitivity" not in text, text
    assert lines[2].strip().startswith("swarm ") and "cloud" in lines[2], text
    assert "3 copies" in text and "1 copies" not in text
    rows = report["sensitivity"]
    assert (f"cheaper in {sum(r['swarm_cheaper_equal'] for r in rows)} of {len(rows)} scenarios at equal "
            f"durability, {sum(r['swarm_cheaper'] for r in rows)} per copy") in text
    one = render_text(build_report(sample_summary(), GB, 1, load_coefficients()))
    assert "(cloud 1 copy)" in one and "1 copies" not in one


def test_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = build_report(sample_summary(), 4 * GB, 3, load_coefficients(), [peer_summary()])
    out = plot(r, tmp_path / "energy.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_plot_values_do_not_sit_on_the_whiskers() -> None:
    """Issue 12: every bar's number is drawn clear of every whisker (and of
    the other numbers), whatever the data: here whiskers span most of the
    log-scale plot, as with the default coefficients."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    from shoal.cli.energy_report import figure

    for copies in (1, 3):  # replicas 1 is a scheme of its own, drawn beside the others
        fig = figure(build_report(sample_summary(), 4 * GB, copies, load_coefficients(), [peer_summary()]))
        try:
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
            ax = fig.axes[1]
            labels = [t.get_window_extent(renderer) for t in ax.texts]
            drawn = {r["scheme_label"] for r in build_report(sample_summary(), GB, copies, load_coefficients())["by_scheme"]
                     if not r["scheme_label"].endswith("drop-local")}
            assert len(labels) == 3 * len(drawn)
            whiskers = []
            for coll in ax.collections:
                if isinstance(coll, LineCollection):
                    for seg in coll.get_segments():
                        (x0, y0), (x1, y1) = ax.transData.transform(seg)
                        whiskers.append((min(x0, x1) - 1, min(y0, y1), max(x0, x1) + 1, max(y0, y1)))
            assert whiskers, "no whiskers drawn"
            for box in labels:
                for (wx0, wy0, wx1, wy1) in whiskers:
                    apart = box.x1 < wx0 or box.x0 > wx1 or box.y1 < wy0 or box.y0 > wy1
                    assert apart, f"a value label {box} overlaps a whisker {(wx0, wy0, wx1, wy1)}"
            for i, a in enumerate(labels):
                assert not any(a.overlaps(b) for b in labels[i + 1:]), "value labels overlap each other"
        finally:
            plt.close(fig)


def test_the_store_holds_the_numbers_and_the_cli_the_presentation() -> None:
    """Issue 13: shoal.store.energy keeps the report as data; the text and the
    chart are the CLI's (shoal.cli.energy_report), and no store module touches
    matplotlib."""
    import shoal.store.energy as energy
    from shoal.store.energy import report as data

    for name in ("render_text", "summary_lines", "plot", "figure"):
        assert not hasattr(data, name), f"shoal.store.energy.report still renders: {name}"
        assert name not in energy.__all__
    store_root = Path(data.__file__).resolve().parents[1]
    users = sorted(str(p.relative_to(store_root)) for p in store_root.rglob("*.py") if "matplotlib" in p.read_text())
    assert users == [], f"store modules import matplotlib: {users}"


def ec_summary() -> dict[str, dict[str, object]]:
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    record(conn, "put", 36.0, "cpu-time-estimate", bytes_hashed=GB, bytes_written=GB)
    record(conn, "ec-encode", 9.0, "cpu-time-estimate", bytes_hashed=GB)
    record(conn, "ec-repair", 3.0, "rapl", bytes_hashed=GB)
    return summary(conn)


def test_report_for_an_ec_scheme_compares_at_equal_durability_and_per_copy() -> None:
    """Issue 18 item 5: the report of an EC 8+4 swarm counts its real stored
    bytes, its measured encode energy, and compares with the cloud at the
    replica count as durable as 8+4 (headline) and at its own 3 (per copy)."""
    from shoal.store.energy.model import Layout, baseline_figures, swarm_loss_probability
    from shoal.store.erasure.durability import loss_probability, replicas_for

    c = load_coefficients()
    r = json.loads(json.dumps(build_report(ec_summary(), 2 * GB, 1, c, scheme=Layout.ec(8, 4))))
    assert r["scheme"] == {"ec": [8, 4], "owner_copy": True} and r["scheme_label"] == "EC 8+4"
    assert r["stored_factor"] == pytest.approx(2.5) and r["copies"] == 1
    assert r["headline"] == "equal_durability"
    # at rest: 0.47 W/TB x 0.73 x (12/8 + 1) x 1.5 overhead x PUE 1.0
    assert r["swarm"]["at_rest_wh_per_gb_month"] == pytest.approx(0.47 * 0.73 * 2.5 * 1.5)
    assert r["swarm"]["encode_source"] == "measured"
    assert r["swarm"]["encode_wh_per_gb"] == pytest.approx(9.0 / 3600)
    assert r["one_time_per_gb"]["ec_encode_j_per_gb"] == pytest.approx(9.0)
    assert r["swarm"]["repair_cpu_source"] == "measured"

    eq = r["equal_durability"]
    p_swarm = loss_probability([0.05] * 12, 4, 24.0)
    assert eq["swarm_loss_probability"] == pytest.approx(p_swarm, rel=1e-9)
    assert eq["swarm_loss_probability"] == pytest.approx(swarm_loss_probability(Layout.ec(8, 4), 0.05, 24.0))
    n = replicas_for(p_swarm, 0.0157, 12.0)
    assert eq["baseline_replicas"] == n == 4
    assert eq["baseline_loss_probability"] <= p_swarm < loss_probability([0.0157] * (n - 1), n - 2, 12.0)
    expected = baseline_figures(c, "hdd", 0.0065, n)["total"]
    assert eq["baseline_wh_per_gb_month"] == pytest.approx(expected)
    assert eq["swarm_cheaper"] == (r["swarm"]["wh_per_gb_month"] < expected)
    assert eq["assumptions"] == {"swarm_holder_afr": 0.05, "swarm_repair_hours": 24.0,
                                 "cloud_holder_afr": 0.0157, "cloud_repair_hours": 12.0}
    # the older comparison is kept, labelled, and the top-level fields keep its meaning
    pc = r["per_copy"]
    assert pc["baseline_replicas"] == 3 and pc["baseline_wh_per_gb_month"] == r["baseline"]["wh_per_gb_month"]
    assert pc["swarm_cheaper"] == r["swarm_cheaper"]
    assert r["baseline"]["loss_probability"] == pytest.approx(loss_probability([0.0157] * 3, 2, 12.0))
    # the comparison table: replicas 2/3, EC 4+2 / 8+4 / 10+6 and the cloud, per scheme
    labels = {row["scheme_label"] for row in r["by_scheme"]}
    assert {"replicas 2", "replicas 3", "EC 4+2", "EC 8+4", "EC 10+6"} <= labels
    assert {row["scheme_label"] for row in r["sensitivity"]} == labels
    assert all(isinstance(row["swarm_cheaper_equal"], bool) for row in r["sensitivity"])
    afrs = {row["swarm_holder_afr"] for row in r["equal_durability_by_afr"]}
    assert afrs == {0.0157, 0.05, 0.2}


def test_render_text_labels_both_comparisons() -> None:
    from shoal.store.energy.model import Layout

    r = build_report(ec_summary(), GB, 1, load_coefficients(), scheme=Layout.ec(8, 4, owner_copy=False))
    text = render_text(r)
    lines = text.splitlines()
    assert len(lines) <= 20, text
    eq = r["equal_durability"]
    assert lines[2].strip().startswith("swarm ") and "at equal durability" in lines[2], text
    assert f"(cloud {eq['baseline_replicas']} copies)" in lines[2]
    assert lines[4].strip().startswith("per copy (cloud at its own 3 copies"), text
    assert "EC 8+4 drop-local (1.50x)" in lines[1], text
    assert f"{eq['swarm_loss_probability']:.1e}" in lines[3], text
    detail = render_text(r, detail=True)
    assert "Equal durability by the swarm holders' annual failure probability" in detail
    assert "encode 0.0025 Wh/GB (measured)" in detail, detail
