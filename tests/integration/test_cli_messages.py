"""Messages a new user reads (issue 12, item 27): an under-replicated put
says so and `status` says why; `cat --tensor` on the wrong file or with a
wrong name; `verify` points at `gc` when unpinned blocks remain; no "1
copies" / "1 blocks". Real `shoal` processes, offline and through nodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.cli.commands_demo import write_fake_model
from tests.helpers import assert_one_line_error, run_shoal, write_random
from tests.integration.swarm import Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_put_with_more_replicas_than_peers_warns_and_status_says_why(swarm: Swarm, tmp_path: Path) -> None:
    owner = swarm.add("owner")
    others = [swarm.add(name, bootstrap=[owner.addr]) for name in ("p1", "p2")]
    wait_until(lambda: {o.peer_id for o in others} <= owner.connected_ids(), 30, "the peers to connect")
    write_random(tmp_path / "f.bin", 300_000, seed=1)

    r = owner.shoal("put", str(tmp_path / "f.bin"), "--replicas", "5")
    assert r.code == 0, r.err
    assert "under-replicated (3 of 5 copies)" in r.err, r.err
    assert "only 2 peers can take a copy" in r.err, r.err
    cid = r.text.split()[1]

    def placed() -> dict[str, object] | None:
        doc = owner.json("status", cid)
        return doc if doc["replicas_ok"] == 3 else None

    doc = wait_until(placed, 60, "both peers to hold a copy")
    assert doc is not None
    assert doc["shortfall"] is not None and "3 of 5 copies ok" in str(doc["shortfall"]), doc
    assert "0 other connected peers can take a copy, 2 more needed" in str(doc["shortfall"]), doc
    text = owner.shoal("status", cid)
    assert text.code == 0 and "3 of 5 copies ok" in text.text and "under-replicated:" in text.text, text.text

    # Enough peers: no warning, and status shows no shortfall once placed.
    write_random(tmp_path / "g.bin", 300_000, seed=2)
    r = owner.shoal("put", str(tmp_path / "g.bin"), "--replicas", "2")
    assert r.code == 0 and "under-replicated" not in r.err and "placing 2 copies" in r.err, r.err
    cid2 = r.text.split()[1]
    done = wait_until(lambda: (d := owner.json("status", cid2))["replicas_ok"] == 2 and d, 60, "2 copies")
    assert done and done["shortfall"] is None, done


@pytest.mark.timeout(180)
def test_cat_tensor_messages_offline_and_through_a_node(swarm: Swarm, tmp_path: Path) -> None:
    node = swarm.add("A", start=False)
    write_random(tmp_path / "plain.bin", 200_000, seed=3)
    write_fake_model(tmp_path / "m.safetensors", 9 * 1024 * 1024)
    plain = run_shoal(node.repo, "put", "-q", str(tmp_path / "plain.bin")).text.strip()
    model = run_shoal(node.repo, "put", "-q", str(tmp_path / "m.safetensors")).text.strip()
    for where in ("offline", "node"):
        if where == "node":
            node.start()
        r = node.shoal("cat", plain, "--tensor", "w")
        assert_one_line_error(r)
        assert f"{plain} is not a safetensors file" in r.err, (where, r.err)
        r = node.shoal("cat", model, "--tensor", "model.layers.9.weight")
        assert_one_line_error(r)
        assert ("no tensor named 'model.layers.9.weight'; it has 3: model.layers.0.weight, "
                "model.layers.1.weight, model.layers.2.weight") in r.err, (where, r.err)
        r = node.shoal("cat", model, "--tensor", "model.layers.1.weight", "--length", "1K")
        assert r.code == 0 and len(r.out) == 1024, (where, r.err)


@pytest.mark.timeout(180)
def test_cat_of_a_directory_is_one_line_offline_and_through_a_node(swarm: Swarm, tmp_path: Path) -> None:
    """Through a node the reply used to start and then break ("incomplete chunked read")."""
    node = swarm.add("A", start=False)
    (tmp_path / "d").mkdir()
    write_random(tmp_path / "d" / "x.bin", 1000, seed=5)
    folder = run_shoal(node.repo, "put", "-q", str(tmp_path / "d")).text.strip()
    for where in ("offline", "node"):
        if where == "node":
            node.start()
        r = node.shoal("cat", folder)
        assert_one_line_error(r)
        assert f"{folder} is a dir, not a file" in r.err, (where, r.err)
        assert r.out == b"" or r.out == "", (where, r.out)


def test_verify_points_at_gc_for_unpinned_blocks_and_counts_in_words(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    write_random(tmp_path / "a.bin", 100, seed=4)
    cid = run_shoal(repo, "put", "-q", str(tmp_path / "a.bin")).text.strip()
    r = run_shoal(repo, "verify")
    assert r.code == 0 and "gc" not in r.err, r.err
    assert run_shoal(repo, "pin", "rm", cid).code == 0
    r = run_shoal(repo, "verify")
    assert r.code == 0 and "1 block (100 B) no pin protects: `shoal gc` frees them" in r.err, r.err
    doc = json.loads(run_shoal(repo, "verify", "--json").text)
    assert doc["orphan_blocks"] == 1 and doc["orphan_bytes"] == 100, doc
    r = run_shoal(repo, "gc")
    assert r.code == 0 and r.text.startswith("removed 1 block,"), r.text
    r = run_shoal(repo, "verify")
    assert r.code == 0 and "gc" not in r.err, r.err
