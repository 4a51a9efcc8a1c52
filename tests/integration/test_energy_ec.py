"""`shoal energy` of a node that put an object with `--ec 4+2` (issue 18
item 5): the report's scheme is the object's, its stored bytes are the
object's (the shard objects are the scheme's bytes, not counted again), and
the headline compares with the cloud at equal durability."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import MANY_NODES, write_random
from tests.integration.swarm import Swarm, swarm  # noqa: F401 (fixture)
from tests.integration.test_erasure_swarm import put_ec, wait_shards_ok
from tests.integration.test_replication import start_swarm

pytestmark = [MANY_NODES, pytest.mark.integration]

MiB = 1024 * 1024


@pytest.mark.timeout(180)
def test_energy_reports_the_ec_scheme_of_a_put(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm, n=7)
    owner = nodes[0]
    size = 2 * MiB + 12345
    write_random(tmp_path / "w.bin", size, seed=31)
    cid = put_ec(owner, tmp_path / "w.bin")["cid"]
    wait_shards_ok(owner, nodes, cid)

    doc = owner.json("energy")
    assert doc["scheme"] == {"ec": [4, 2], "owner_copy": True}, doc["scheme"]
    assert doc["scheme_label"] == "EC 4+2" and doc["stored_factor"] == 2.5
    assert doc["stored_bytes"] == size and doc["objects"] == 1  # the six shard objects are not objects here
    assert doc["copies"] == 1  # whole copies: the owner's
    eq = doc["equal_durability"]
    assert eq["swarm_scheme"] == "EC 4+2" and eq["baseline_replicas"] >= 1
    assert eq["baseline_loss_probability"] <= eq["swarm_loss_probability"]
    # The at-rest figure counts 1.5x of shards plus the owner's whole copy.
    coef = {c["name"]: c["value"] for c in doc["coefficients"]}
    expected = coef["edge_hdd_w_per_tb"] * 0.73 * 2.5 * coef["edge_overhead_factor"] * coef["swarm_pue"]
    assert doc["swarm"]["at_rest_wh_per_gb_month"] == pytest.approx(expected)
    text = owner.shoal("energy")
    assert text.code == 0 and "as EC 4+2 (2.50x)" in text.text and "at equal durability" in text.text, text.text
