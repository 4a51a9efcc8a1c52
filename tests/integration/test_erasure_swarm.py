"""Erasure-coded objects on real node processes (issue 18 items 1-4).

Loopback swarms with a 1 s audit interval; everything goes through the CLI
and the control API as a user would:
- put --ec 4+2 places six shards on six distinct peers, each under its own
  agreement, audited like a replica; status shows the scheme and every shard;
- two shard holders killed with -9 and the owner's copy dropped
  (--ec-drop-local + gc): a fresh node's `get` rebuilds identical bytes
  from the four shards left;
- in a bigger swarm, two holders killed: the owner rebuilds the two lost
  shards and places them on new peers, status shows six healthy shards
  again and an audit round passes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)
from tests.integration.test_replication import alive_ids, by_id, start_swarm, status_api

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def put_ec(owner: NodeProc, path: Path, *extra: str) -> dict[str, Any]:
    r = owner.shoal("put", str(path), "--ec", "4+2", "--json", *extra)
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.text)
    assert doc["placement"]["scheme"] == {"ec": [4, 2]}, doc
    return doc


def wait_shards_ok(owner: NodeProc, nodes: list[NodeProc], cid: str, timeout: float = 60) -> dict[str, Any]:
    """Status once all six shards have a live holder in state ok."""

    def check() -> dict[str, Any] | None:
        doc = status_api(owner, cid)
        alive = alive_ids(nodes)
        good = [s for s in doc.get("shards", []) if s["state"] == "ok" and s["holder"] in alive]
        return doc if len(good) == 6 else None

    doc: dict[str, Any] = wait_until(check, timeout, f"6 shards of {cid} held and ok",
                                     on_timeout=lambda: json.dumps(status_api(owner, cid), indent=1))
    return doc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(180)
def test_put_ec_places_shards_and_get_rebuilds_after_two_holders_die(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm, n=7)  # the owner and six holders
    owner = nodes[0]
    src = tmp_path / "w.bin"
    write_random(src, 5 * MiB + 12345, seed=18)
    cid = put_ec(owner, src, "--ec-drop-local")["cid"]
    doc = wait_shards_ok(owner, nodes, cid)

    # Item 1 and 4: the scheme, six shards on six distinct peers (never the owner).
    assert doc["scheme"] == {"ec": [4, 2]} and doc["threshold"] == 5, doc
    holders = [s["holder"] for s in doc["shards"]]
    assert len(set(holders)) == 6 and owner.peer_id not in holders, holders
    assert [s["index"] for s in doc["shards"]] == list(range(6))
    assert doc["shards_healthy"] == 6 and doc["survives_losses"] == 2
    assert 0.0 < doc["annual_loss_probability"] < 1e-3, doc
    # Each shard is an object of its own under agreement on its holder.
    for s in doc["shards"]:
        view = status_api(by_id(nodes, s["holder"]), s["shard_cid"])
        assert view["role"] == "holder" and view["owner"] == owner.peer_id, view
    # --ec-drop-local: once placed, the owner keeps no copy (gc frees the blocks).
    wait_until(lambda: not status_api(owner, cid)["local_copy"], 20, "the owner to drop its copy")
    assert owner.shoal("gc").code == 0
    # Every shard passes an audit like a replica.
    for s in doc["shards"]:
        audit = owner.json("audit", s["shard_cid"])
        assert [r["ok"] for r in audit["results"]] == [True], audit

    # Item 2: two holders die, the owner has no copy; a fresh node reads it back.
    for victim in (by_id(nodes, holders[0]), by_id(nodes, holders[4])):  # a data and a parity shard
        victim.kill()
    reader = swarm.add("R", bootstrap=[owner.addr], extra_args=["--audit-interval", "1"])
    want = {n.peer_id for n in nodes if n.running}
    wait_until(lambda: want <= reader.connected_ids(), 20, "the reader to see the live peers")
    out = tmp_path / "back.bin"
    t0 = time.monotonic()
    r = reader.shoal("get", cid, "-o", str(out), "--json", timeout=120)
    assert r.code == 0, r.err
    got = json.loads(r.text)
    assert sha(out) == sha(src)
    assert len(got["rebuilt_from_shards"]) == 4 and 0 not in got["rebuilt_from_shards"], got
    print(f"get of a 4+2 object with two holders dead and no owner copy: {time.monotonic() - t0:.1f}s")
