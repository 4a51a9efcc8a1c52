"""Erasure-coded objects on real node processes (issue 18 items 1-4).

Loopback swarms with a 1 s audit interval; everything goes through the CLI
and the control API as a user would:
- put --ec 4+2 places six shards on six distinct peers, each under its own
  agreement, audited like a replica; status shows the scheme and every shard;
- two shard holders killed with -9 and the owner's copy dropped
  (--ec-drop-local + gc): a fresh node's `get` rebuilds identical bytes
  from the four shards left;
- in a bigger swarm, two holders killed and the owner's copy dropped: the
  owner rebuilds the two lost shards from four fetched ones and places
  them on new peers, status shows six healthy shards
  again and an audit round passes;
- one holder killed with --ec-threshold 6 while the owner keeps its copy:
  the owner re-encodes the lost shard from its own blocks, receiving no
  shard bytes, and sends only that one shard.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MANY_NODES, assert_one_line_error, run_shoal, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)
from tests.integration.test_replication import alive_ids, by_id, start_swarm, status_api

pytestmark = [MANY_NODES, pytest.mark.integration]

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
    # The owner and six holders. The owner audits only when asked here: its
    # repair would otherwise re-place a lost shard on the reader (the only
    # free peer) while the reader is reading, which is not what is tested.
    nodes = start_swarm(swarm, n=7, extra={0: ["--audit-interval", "3600"]})
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

    # The owner gone too: the holders kept the signed map the owner pushed them,
    # so another fresh node still finds the shards.
    owner.kill()
    reader.kill()  # it has the object now: the second reader must not simply fetch it from there
    live_holder = next(n for n in nodes if n.running and n.peer_id in holders)
    reader2 = swarm.add("R2", bootstrap=[live_holder.addr], extra_args=["--audit-interval", "1"])
    want = {n.peer_id for n in nodes if n.running and n.peer_id in holders}
    wait_until(lambda: want <= reader2.connected_ids(), 20, "the second reader to see the live holders")
    out2 = tmp_path / "back2.bin"
    t0 = time.monotonic()
    r = reader2.shoal("get", cid, "-o", str(out2), "--json", timeout=120)
    print(f"the same with the owner dead too, map from a holder: {time.monotonic() - t0:.1f}s")
    assert r.code == 0, r.err
    assert sha(out2) == sha(src) and len(json.loads(r.text)["rebuilt_from_shards"]) == 4


@pytest.mark.timeout(240)
def test_two_lost_shards_are_rebuilt_on_new_peers_and_pass_an_audit(swarm: Swarm, tmp_path: Path) -> None:
    # The owner, six holders and two spare peers: two new holders must exist
    # once two are dead (no peer ever holds two shards of one object).
    nodes = start_swarm(swarm, n=9)
    owner = nodes[0]
    src = tmp_path / "w.bin"
    write_random(src, 3 * MiB + 999, seed=19)
    # --ec-drop-local: with no copy of its own the owner must fetch four shards and
    # decode (codec.rebuild); an owner keeping its copy re-encodes from it (below).
    cid = put_ec(owner, src, "--ec-threshold", "5", "--ec-drop-local")["cid"]  # the default (K + 1), given explicitly
    doc = wait_shards_ok(owner, nodes, cid)
    assert doc["threshold"] == 5
    wait_until(lambda: not status_api(owner, cid)["local_copy"], 20, "the owner to drop its copy")
    write_random(tmp_path / "r.bin", 100_000, seed=20)  # replicas stay the default scheme, shown as such
    plain = owner.json("put", str(tmp_path / "r.bin"), "--replicas", "2")["cid"]
    assert status_api(owner, plain)["scheme"] == {"replicas": 2}
    assert owner.shoal("gc").code == 0  # the shards' and the object's local copies go: a repair must rebuild
    before = {s["index"]: s["holder"] for s in doc["shards"]}
    victims = [by_id(nodes, before[1]), by_id(nodes, before[5])]
    for v in victims:
        v.kill()
    t0 = time.monotonic()
    doc = wait_shards_ok(owner, nodes, cid, timeout=90)
    took = time.monotonic() - t0
    after = {s["index"]: s["holder"] for s in doc["shards"]}
    assert doc["shards_healthy"] == 6 and doc["survives_losses"] == 2, doc
    assert doc["shards_rebuilt"] == 2, doc  # rebuilt from four healthy shards (codec.rebuild)
    # The energy ledger has the encoding (object bytes) and the rebuild (4 read + 2 written shards).
    ops = owner.api("GET", "/v1/energy").json()["node"]["operations"]
    assert ops["ec-encode"]["bytes"] >= src.stat().st_size, ops
    assert ops["ec-repair"]["bytes"] == 6 * doc["shards"][0]["length"], ops
    assert ops["repair"]["bytes"] >= 4 * doc["shards"][0]["length"], ops  # the shards fetched for it
    assert {after[1], after[5]}.isdisjoint({v.peer_id for v in victims}), after
    assert len(set(after.values())) == 6 and owner.peer_id not in after.values(), after
    assert {i: after[i] for i in (0, 2, 3, 4)} == {i: before[i] for i in (0, 2, 3, 4)}  # untouched
    # The rebuilt shards are the same shards (same CIDs: commitments and map stay valid).
    assert [s["shard_cid"] for s in doc["shards"]] == [s["shard_cid"] for s in status_api(owner, cid)["shards"]]
    human = owner.shoal("status", cid)
    assert human.code == 0 and "erasure-coded 4+2" in human.text and "6 of 6 shards healthy" in human.text, human
    audit = owner.json("audit", cid)
    results = {r["shard"]: r for r in audit["results"] if r["peer_id"] in alive_ids(nodes)}
    assert sorted(results) == list(range(6)) and all(r["ok"] for r in results.values()), audit
    # The new holders learnt the re-signed map: a reader can find them.
    for i in (1, 5):
        view = status_api(by_id(nodes, after[i]), doc["shards"][i]["shard_cid"])
        assert view["role"] == "holder", view
    print(f"two holders of a 4+2 object killed -> six healthy shards again after {took:.1f}s")

    # pin rm gives every shard back, as it gives replicas back.
    r = owner.shoal("pin", "rm", cid)
    assert r.code == 0, r.err

    def all_released() -> bool:
        return all(status_api(by_id(nodes, after[i]), doc["shards"][i]["shard_cid"])["holders"][0]["state"]
                   == "released" for i in range(6))

    wait_until(all_released, 30, "every shard holder to be released")
    assert owner.api("GET", f"/v1/status?cid={cid}").status_code != 200  # no longer stored nor coded


@pytest.mark.timeout(180)
def test_owner_with_its_copy_rebuilds_a_lost_shard_without_fetching_any(swarm: Swarm, tmp_path: Path) -> None:
    # The owner, six holders and one spare for the new holder.
    nodes = start_swarm(swarm, n=8)
    owner = nodes[0]
    src = tmp_path / "w.bin"
    write_random(src, 3 * MiB + 777, seed=22)
    cid = put_ec(owner, src, "--ec-threshold", "6")["cid"]  # repair at the first loss
    doc = wait_shards_ok(owner, nodes, cid)
    assert doc["threshold"] == 6 and doc["local_copy"] is True, doc
    assert owner.shoal("gc").code == 0  # the placed shards' local copies go: the lost one must be rebuilt
    length = doc["shards"][0]["length"]
    before = {s["index"]: s["holder"] for s in doc["shards"]}
    stats0 = owner.api("GET", "/v1/stats").json()
    victim = by_id(nodes, before[2])
    victim.kill()
    doc = wait_shards_ok(owner, nodes, cid, timeout=90)
    after = {s["index"]: s["holder"] for s in doc["shards"]}
    assert after[2] != victim.peer_id and owner.peer_id not in after.values() and len(set(after.values())) == 6
    assert {i: after[i] for i in (0, 1, 3, 4, 5)} == {i: before[i] for i in (0, 1, 3, 4, 5)}, after
    assert doc["shards_rebuilt"] == 1, doc
    stats1 = owner.api("GET", "/v1/stats").json()
    # Rebuilt from the owner's own blocks: not one shard byte came in; the one shard went out.
    assert stats1["received_bytes"] == stats0["received_bytes"], (stats0, stats1)
    sent = stats1["served_bytes"] - stats0["served_bytes"]
    assert length <= sent < 2 * length, (sent, length)
    ops = owner.api("GET", "/v1/energy").json()["node"]["operations"]
    # The ledger's ec-repair row: the object read locally (its whole DAG) + the one shard written.
    assert ops["ec-repair"]["bytes"] >= src.stat().st_size + length, ops
    assert ops.get("repair", {}).get("bytes", 0) == 0, ops  # no shard fetched for the repair
    # The same shard (same CID: commitment and map stay valid), and its new holder passes an audit.
    assert [s["shard_cid"] for s in doc["shards"]] == [s["shard_cid"] for s in status_api(owner, cid)["shards"]]
    audit = owner.json("audit", doc["shards"][2]["shard_cid"])
    assert [(r["peer_id"], r["ok"]) for r in audit["results"] if r["peer_id"] == after[2]] == [(after[2], True)], audit
    view = status_api(by_id(nodes, after[2]), doc["shards"][2]["shard_cid"])
    assert view["role"] == "holder" and view["owner"] == owner.peer_id, view


@pytest.mark.parametrize("args, says", [
    (["--ec", "0+2"], "K >= 1"), (["--ec", "4+0"], "M >= 1"), (["--ec", "20+13"], "at most 32"),
    (["--ec", "four"], "K+M"), (["--ec", "4+2", "--replicas", "3"], "not both"),
    (["--ec-drop-local"], "needs --ec"), (["--ec", "4+2"], "needs a running node"),
    (["--ec", "4+2", "--ec-threshold", "7"], "between K (4) and K + M (6)"), (["--ec-threshold", "5"], "needs --ec"),
])
def test_put_ec_errors_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    write_random(tmp_path / "f.bin", 1000, seed=1)
    r = run_shoal(repo, "put", str(tmp_path / "f.bin"), *args)
    assert_one_line_error(r)
    assert says in r.err, r.err


def test_config_ec_is_checked_when_the_node_starts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    config = (repo / "config.toml").read_text()
    assert "[replication]\n" in config
    (repo / "config.toml").write_text(config.replace("[replication]\n", '[replication]\nec = "4+40"\n', 1))
    r = run_shoal(repo, "node", "start", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", timeout=60)
    assert_one_line_error(r)
    assert "[replication] ec" in r.err and "at most 32" in r.err, r.err


@pytest.mark.timeout(240)
def test_deputy_rebuilds_lost_shards_when_the_owner_is_gone(swarm: Swarm, tmp_path: Path) -> None:
    # The owner, six holders, three spares: the owner and two holders die.
    nodes = start_swarm(swarm, n=10)
    owner = nodes[0]
    src = tmp_path / "w.bin"
    write_random(src, 2 * MiB + 4321, seed=21)
    cid = put_ec(owner, src, "--ec-drop-local")["cid"]
    doc = wait_shards_ok(owner, nodes, cid)
    before = {s["index"]: s["holder"] for s in doc["shards"]}
    assert owner.shoal("gc").code == 0
    time.sleep(2)  # the map push (with the shard offers) follows the last agreement
    for victim in (owner, by_id(nodes, before[2]), by_id(nodes, before[3])):
        victim.kill()
    survivors = [by_id(nodes, before[i]) for i in (0, 1, 4, 5)]

    def deputy_view() -> dict[str, Any] | None:
        alive = alive_ids(nodes)
        for n in survivors:
            resp = n.api("GET", f"/v1/status?cid={cid}")
            if resp.status_code != 200:
                continue
            view: dict[str, Any] = resp.json()
            good = [s for s in view.get("shards", []) if s["state"] == "ok" and s["holder"] in alive]
            if view.get("role") == "deputy" and len(good) == 6:
                view["node"] = n.name
                return view
        return None

    t0 = time.monotonic()
    view = wait_until(deputy_view, 120, "a deputy to restore six healthy shards",
                      on_timeout=lambda: json.dumps([n.api("GET", f"/v1/status?cid={cid}").json()
                                                     for n in survivors], indent=1)[:20000])
    assert view["owner"] == owner.peer_id and view["shards_rebuilt"] == 2, view
    after = {s["index"]: s["holder"] for s in view["shards"]}
    assert len(set(after.values())) == 6 and {after[2], after[3]}.isdisjoint({before[2], before[3], owner.peer_id})
    print(f"owner and two holders killed -> a deputy restored six shards after {time.monotonic() - t0:.1f}s")
    reader = swarm.add("R", bootstrap=[survivors[0].addr], extra_args=["--audit-interval", "1"])
    wait_until(lambda: {n.peer_id for n in survivors} <= reader.connected_ids(), 20, "the reader to connect")
    out = tmp_path / "back.bin"
    r = reader.shoal("get", cid, "-o", str(out), "--json", timeout=120)
    assert r.code == 0, r.err
    assert sha(out) == sha(src)

    # The owner comes back: the deputy steps down and keeps only its own shard.
    deputy = next(n for n in survivors if n.name == view["node"])
    own = next(s["shard_cid"] for s in view["shards"] if s["holder"] == deputy.peer_id)
    owner.start()
    wait_until(lambda: deputy.api("GET", f"/v1/status?cid={cid}").status_code != 200, 60,
               "the deputy to step down")
    mine = status_api(deputy, own)
    assert mine["role"] == "holder" and mine["holders"][0]["state"] == "ok", mine
    # The owner finds the holders the deputy placed and takes them back, rebuilding nothing.
    back = wait_shards_ok(owner, nodes + [reader], cid, timeout=60)
    assert {s["index"]: s["holder"] for s in back["shards"]} == after, back
    assert back["shards_rebuilt"] == 0, back
