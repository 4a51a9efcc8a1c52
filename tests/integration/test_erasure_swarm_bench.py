"""bench/erasure_swarm.py at a tiny size: its figures agree with each other
and with what the schemes must move and store (issue 18 item 6). No timing
asserts: only bytes, counts and the ratios' arithmetic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import MANY_NODES
import pytest

from bench import erasure_swarm

pytestmark = [MANY_NODES, pytest.mark.integration]

SIZE = 3 * 1024 * 1024 + 12345  # not a multiple of K: the last stripe is padded


def approx(x: float, want: float, rel: float = 0.06) -> bool:
    return abs(x - want) <= rel * want


@pytest.mark.timeout(420)
def test_bench_at_a_tiny_size_is_internally_consistent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "e.json"
    assert erasure_swarm.main(["--size", str(SIZE), "--repeats", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    doc: dict[str, Any] = json.loads(out.read_text())
    runs = {r["scheme"]: r for r in doc["runs"]}
    assert sorted(runs) == ["ec", "replicas"] and doc["size"] == SIZE
    ec, rp = runs["ec"], runs["replicas"]
    k, m = doc["k"], doc["m"]

    # Put: what went out, what came in, what is stored.
    assert ec["put"]["holders"] == k + m and rp["put"]["holders"] == doc["replicas"] - 1
    assert approx(ec["put"]["owner_sent"], SIZE * (k + m) / k), ec["put"]  # K + M shards of ~1/K
    # The owner's copy counts as one of the 3; the two holders may pull part from each other.
    assert approx(rp["put"]["holders_received"], SIZE * (doc["replicas"] - 1)), rp["put"]
    assert rp["put"]["owner_sent"] <= rp["put"]["holders_received"], rp["put"]
    for r in (ec, rp):
        p = r["put"]
        sent = sum(t["sent"] for t in p["traffic"].values())
        assert approx(sent, sum(t["received"] for t in p["traffic"].values()), 0.01), p["traffic"]
        assert approx(p["holders_received"], sent, 0.01), p["traffic"]  # only holders took blocks
        assert approx(p["stored_holders"], p["holders_received"]), p
        assert set(p["cpu_s"]) == {"owner"} | {f"p{i}" for i in range(1, doc["peers"] + 1)}
        assert all(c >= 0 for c in p["cpu_s"].values()) and p["cpu_total_s"] > 0
        assert p["energy"]["joules"] > 0 and p["energy"]["methods"], p["energy"]
        assert "put" in p["energy"]["kinds"] and "replicate-in" in p["energy"]["kinds"], p["energy"]["kinds"]
    # EC stores 1.5x on the holders plus the owner's whole copy; replicas 3x in all.
    assert approx(ec["put"]["stored_total"], SIZE * ((k + m) / k + 1)), ec["put"]["stored"]
    assert approx(rp["put"]["stored_total"], SIZE * doc["replicas"]), rp["put"]["stored"]

    # The encoding is in the ledger as such.
    assert ec["put"]["energy"]["kinds"]["ec-encode"]["bytes_hashed"] >= SIZE, ec["put"]["energy"]["kinds"]

    # Repair of one lost holder (the bench puts with --ec-threshold K+M): the
    # owner keeps its copy, so EC re-encodes the lost shard from it, fetches
    # nothing and sends the one rebuilt; a replica repair sends one copy.
    er, rr = ec["repair"], rp["repair"]
    assert doc["ec_threshold"] == k + m and doc["ec_killed"] == 1
    assert er["lost_holders"] == 1 and rr["lost_holders"] == 1
    assert len(er["new_holders"]) == 1 and len(rr["new_holders"]) == 1
    assert er["shards_rebuilt"] == 1
    shard = ec["put"]["stored_holders"] / (k + m)
    assert er["owner_received"] == 0, er["traffic"]
    assert approx(er["sent_total"], shard, 0.1), er["traffic"]
    assert "ec-repair" in er["energy"]["kinds"], er["energy"]["kinds"]
    assert approx(rr["sent_total"], SIZE, 0.1) and rr["owner_received"] == 0, rr["traffic"]
    # (the new holder may pull part of it from the surviving holder, not the owner)
    assert approx(rr["received_total"], SIZE, 0.1), rr["traffic"]
    new = rr["traffic"][rr["new_holders"][0]]["received"]
    assert approx(new, SIZE, 0.1), rr["traffic"]
    assert er["sent_per_lost_holder"] == pytest.approx(er["sent_total"])
    assert set(er["cpu_s"]).isdisjoint(er["victims"]) and "spare1" in er["cpu_s"]

    # The ratios are EC over replicas of the same round.
    pair = doc["paired_ratios"][0]
    for label, phase, field in erasure_swarm.PAIRED:
        want = erasure_swarm.field(ec, phase, field) / erasure_swarm.field(rp, phase, field)
        assert pair[label] == pytest.approx(want), label
        assert doc["median_ratios"][label] == pytest.approx(want), label
    assert pair["stored (swarm)"] == pytest.approx(((k + m) / k + 1) / doc["replicas"], rel=0.06)
    # The printed table is the JSON's.
    assert "EC 4+2" in text and "replicas 3" in text and f"{pair['owner sent']:.2f}" in text
    assert set(doc["meters"]) <= {"rapl", "cpu-time-estimate"} and doc["meters"], doc["meters"]
