"""`shoal energy` end to end: real puts, the report's keys, the plot, and a
two-node swarm whose serve energy shows up in the getter's swarm totals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.cli.swarm import LocalSwarm
from tests.helpers import run_shoal, write_random

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def init(path: Path) -> Path:
    r = run_shoal(path, "init")
    assert r.code == 0, r.err
    return path


def put(repo: Path, path: Path) -> str:
    r = run_shoal(repo, "put", str(path), "--quiet")
    assert r.code == 0, r.err
    return r.text.strip()


def energy(repo: Path, *extra: str) -> dict[str, Any]:
    r = run_shoal(repo, "energy", "--json", *extra)
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.text)
    return doc


def test_put_energy_is_recorded_and_grows_with_size(tmp_path: Path) -> None:
    joules = {}
    for size in (8 * MiB, 64 * MiB):
        repo = init(tmp_path / f"repo{size}")
        write_random(tmp_path / f"f{size}", size, seed=size)
        put(repo, tmp_path / f"f{size}")
        op = energy(repo)["operations"]["put"]
        assert op["count"] == 1 and op["bytes"] >= size
        assert op["methods"] and set(op["methods"]) <= {"rapl", "cpu-time-estimate"}
        joules[size] = op["joules"]
    assert joules[8 * MiB] > 0
    assert joules[64 * MiB] > 2 * joules[8 * MiB], joules


def test_energy_json_has_the_contract_keys_and_at_rest_scales_with_bytes(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    write_random(tmp_path / "a", 8 * MiB, seed=1)
    write_random(tmp_path / "b", 8 * MiB, seed=2)
    put(repo, tmp_path / "a")
    one = energy(repo)
    assert one["method"] in ("rapl", "cpu-time-estimate")
    assert one["stored_bytes"] == 8 * MiB and one["copies"] == 1
    for side in ("swarm", "baseline"):
        assert one[side]["wh_per_gb_month"] > 0
    assert one["operations"]["put"]["joules"] > 0 and one["operations"]["put"]["bytes"] > 0
    assert one["coefficients"]
    for c in one["coefficients"]:
        assert {"name", "value", "unit", "source", "year"} <= set(c)

    put(repo, tmp_path / "b")
    two = energy(repo)
    assert two["stored_bytes"] == 2 * one["stored_bytes"]

    def at_rest_wh_per_month(doc: dict[str, Any]) -> float:
        return float(doc["swarm"]["at_rest_wh_per_gb_month"]) * float(doc["stored_gb"])

    assert at_rest_wh_per_month(two) == pytest.approx(2 * at_rest_wh_per_month(one), rel=1e-9)
    assert two["swarm"]["wh_per_month"] == pytest.approx(2 * one["swarm"]["wh_per_month"], rel=0.01)
    assert two["baseline"]["wh_per_month"] == pytest.approx(2 * one["baseline"]["wh_per_month"], rel=1e-9)

    # The default text leads with the answer and stays short (issue 12): the
    # 48-row sensitivity table is behind --detail.
    r = run_shoal(repo, "energy")
    assert r.code == 0 and "swarm" in r.text and "cloud" in r.text and "Sensitivity" not in r.text
    assert len(r.text.splitlines()) <= 20, r.text
    assert r.text.splitlines()[2].strip().startswith("swarm "), r.text
    r = run_shoal(repo, "energy", "--detail")
    assert r.code == 0 and "Sensitivity" in r.text
    assert len(r.text.splitlines()) >= len(two["sensitivity"]) + 15, r.text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    repo = init(tmp_path / "repo")
    write_random(tmp_path / "a", 1 * MiB, seed=3)
    put(repo, tmp_path / "a")
    out = tmp_path / "energy.png"
    r = run_shoal(repo, "energy", "--plot", str(out))
    assert r.code == 0, r.err
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_getter_sees_the_peers_serve_energy_in_swarm_totals(tmp_path: Path) -> None:
    size = 16 * MiB
    write_random(tmp_path / "model.bin", size, seed=4)
    with LocalSwarm(tmp_path / "swarm") as swarm:
        a = swarm.add("a")
        b = swarm.add("b", bootstrap=a.addrs[:1])
        swarm.wait_connected(b, 1)
        cid = a.call("POST", "/v1/put", {"path": str(tmp_path / "model.bin")})["cid"]
        r = run_shoal(b.repo, "get", cid, "-o", str(tmp_path / "copy.bin"))
        assert r.code == 0, r.err

        doc = energy(b.repo)  # through b's node: b served nothing, a served it all
        assert doc["scope"] == "swarm" and doc["peers"] == 1
        assert doc["operations"]["serve"]["bytes"] >= size
        assert doc["operations"]["serve"]["joules"] > 0
        assert doc["operations"]["put"]["bytes"] >= size  # a's put, from a's summary
        assert a.peer_id in doc["swarm_peers"]
        assert "serve" not in doc["node"]["operations"]

        text = run_shoal(b.repo, "energy")
        assert text.code == 0 and "scope: swarm" in text.text
        a.stop()
    # a flushed its aggregated serve totals to its ledger when it stopped.
    offline = energy(a.repo)
    assert offline["scope"] == "node"
    assert offline["operations"]["serve"]["bytes"] >= size


def test_energy_shows_equal_durability_and_per_copy(tmp_path: Path) -> None:
    """Issue 18 item 5: `shoal energy` leads with the comparison at equal
    durability and keeps the per-copy one, labelled, in text, --json and
    --plot; the JSON keeps every field it had."""
    repo = init(tmp_path / "repo")
    write_random(tmp_path / "a", 1 * MiB, seed=5)
    put(repo, tmp_path / "a")
    doc = energy(repo)
    # the fields from before schemes are all still there
    for key in ("method", "methods", "scope", "peers", "stored_bytes", "stored_gb", "copies", "objects", "disk",
                "accounting", "swarm", "baseline", "swarm_cheaper", "swarm_cheaper_marginal", "one_time_per_gb",
                "operations", "coefficients", "sensitivity", "by_copies", "notes", "node", "swarm_peers"):
        assert key in doc, key
    assert doc["headline"] == "equal_durability" and doc["scheme"] == {"replicas": 1}
    eq, pc = doc["equal_durability"], doc["per_copy"]
    assert eq["baseline_replicas"] >= 1 and eq["baseline_loss_probability"] <= eq["swarm_loss_probability"]
    assert pc["baseline_wh_per_gb_month"] == doc["baseline"]["wh_per_gb_month"]
    names = {c["name"] for c in doc["coefficients"]}
    assert {"swarm_holder_afr", "cloud_holder_afr", "swarm_repair_hours", "cloud_repair_hours",
            "ec_encode_cpu_s_per_gb", "ec_rebuild_cpu_s_per_gb"} <= names
    assert {"replicas 2", "replicas 3", "EC 4+2", "EC 8+4", "EC 10+6"} <= {r["scheme_label"] for r in doc["by_scheme"]}

    text = run_shoal(repo, "energy")
    assert text.code == 0, text.err
    lines = text.text.splitlines()
    assert "at equal durability" in lines[2] and lines[4].strip().startswith("per copy"), text.text
    assert f"{eq['baseline_wh_per_gb_month']:.3f}" in lines[2], text.text

    # Coefficients override the durability assumptions like any other figure.
    cfg = repo / "config.toml"
    text_cfg = cfg.read_text()
    assert "\n[energy]\n" in text_cfg  # init writes an empty [energy] table
    cfg.write_text(text_cfg.replace("\n[energy]\n", "\n[energy]\nswarm_holder_afr = 0.2\n", 1))
    flaky = energy(repo)
    assert flaky["equal_durability"]["swarm_loss_probability"] > eq["swarm_loss_probability"]
