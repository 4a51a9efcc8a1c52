"""Replication, proof-of-storage audits and repair, on real node processes.

Five `shoal node` processes on loopback with a 1 s audit interval. Each test
puts an object with `--replicas 3` and checks, through `shoal status --json`
and `shoal audit --json` as a user would:
(a) a holder killed with -9 is marked lost after three missed audits and
    replaced: three live holders in state ok again, in bounded time;
(b) a holder that lost a fifth of its block files fails its next audit
    (proven loss), is marked lost at once, and the replica is rebuilt
    elsewhere;
(c) 50 audit rounds over honest holders produce no failure;
(d) a holder stopped cleanly and started again on the same repo keeps its
    replica and agreement and passes its next audit;
(e) the owner killed with -9: the lowest-id live holder takes over as
    deputy and restores the replica count;
plus quota refusal and the status of a holder-side view.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MANY_NODES, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = [MANY_NODES, pytest.mark.integration]

MiB = 1024 * 1024
AUDIT = ["--audit-interval", "1"]


def start_swarm(swarm: Swarm, n: int = 5, extra: dict[int, list[str]] | None = None) -> list[NodeProc]:
    """n nodes, each bootstrapping to the first, all connected to all."""
    extra = extra or {}
    nodes = [swarm.add("N0", extra_args=AUDIT + extra.get(0, []))]
    for i in range(1, n):  # the others start in parallel: process start-up dominates
        nodes.append(swarm.add(f"N{i}", bootstrap=[nodes[0].addr], extra_args=AUDIT + extra.get(i, []),
                               start=False))
        nodes[-1].start(wait=False)
    for node in nodes[1:]:
        node.wait_ready()
    for node in nodes:
        want = {o.peer_id for o in nodes if o is not node}
        wait_until(lambda: want <= node.connected_ids(), 20, f"{node.name} to see all peers",
                   on_timeout=swarm.logs)
    return nodes


def put_replicated(owner: NodeProc, path: Path, replicas: int = 3) -> dict[str, Any]:
    t0 = time.monotonic()
    r = owner.shoal("put", str(path), "--replicas", str(replicas), "--json")
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.text)
    doc["took"] = time.monotonic() - t0
    assert doc["placement"]["wanted"] == replicas, doc
    assert doc["placement"]["state"] == "pending", doc
    return doc


def status(node: NodeProc, cid: str) -> dict[str, Any]:
    doc: dict[str, Any] = node.json("status", cid)
    return doc


def status_api(node: NodeProc, cid: str) -> dict[str, Any]:
    """Same as `shoal status --json` without a process start, for tight polling."""
    resp = node.api("GET", f"/v1/status?cid={cid}")
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


def ok_holders(doc: dict[str, Any], alive: set[str]) -> set[str]:
    return {h["peer_id"] for h in doc["holders"] if h["state"] == "ok" and h["peer_id"] in alive}


def alive_ids(nodes: list[NodeProc]) -> set[str]:
    return {n.peer_id for n in nodes if n.running}


def by_id(nodes: list[NodeProc], peer_id: str) -> NodeProc:
    return next(n for n in nodes if n.peer_id == peer_id)


def wait_replicated(owner: NodeProc, nodes: list[NodeProc], cid: str, want: int = 3,
                    timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        doc = status_api(owner, cid)
        return doc if len(ok_holders(doc, alive_ids(nodes))) >= want else None

    doc: dict[str, Any] = wait_until(check, timeout, f"{want} live holders of {cid} in state ok",
                                     on_timeout=lambda: json.dumps(status_api(owner, cid), indent=1))
    return doc


def holders_other_than(doc: dict[str, Any], me: str) -> list[str]:
    return sorted(h["peer_id"] for h in doc["holders"] if h["state"] == "ok" and h["peer_id"] != me)


@pytest.mark.timeout(90)
def test_put_places_replicas_and_kill9_holder_is_replaced(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm)
    owner = nodes[0]
    write_random(tmp_path / "w.bin", 3 * MiB + 17, seed=1)
    put = put_replicated(owner, tmp_path / "w.bin")
    cid = put["cid"]
    assert len(put["placement"]["planned"]) == 2, put
    doc = wait_replicated(owner, nodes, cid)
    assert doc["replicas_wanted"] == 3 and doc["role"] == "owner"
    assert owner.peer_id in ok_holders(doc, alive_ids(nodes))  # the owner keeps its copy
    holders = holders_other_than(doc, owner.peer_id)
    assert len(holders) == 2 and len(set(holders)) == 2
    for h in holders:  # each holder pinned it and signed an agreement
        view = status(by_id(nodes, h), cid)
        assert view["role"] == "holder" and view["owner"] == owner.peer_id, view
        assert any(a["holder"] == h for a in view["agreements"]), view

    victim = by_id(nodes, holders[0])
    victim.kill()
    t0 = time.monotonic()
    doc = wait_replicated(owner, nodes, cid, timeout=30)
    took = time.monotonic() - t0
    states = {h["peer_id"]: h for h in doc["holders"]}
    assert states[victim.peer_id]["state"] == "lost", states[victim.peer_id]
    assert not states[victim.peer_id]["proven_loss"]  # unreachable is not a proven loss
    assert victim.peer_id not in ok_holders(doc, alive_ids(nodes))
    print(f"kill -9 holder -> 3 live ok holders again after {took:.1f}s")


@pytest.mark.timeout(90)
def test_deleted_blocks_fail_the_audit_and_are_rebuilt_elsewhere(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm)
    owner = nodes[0]
    write_random(tmp_path / "w.bin", 6 * MiB, seed=2)
    cid = put_replicated(owner, tmp_path / "w.bin")["cid"]
    doc = wait_replicated(owner, nodes, cid)
    victim = by_id(nodes, holders_other_than(doc, owner.peer_id)[0])
    files = sorted((victim.repo / "blocks").rglob("*.data"))
    assert len(files) >= 7, files  # 6 leaves + root
    rng = random.Random(5)
    for f in rng.sample(files, max(1, len(files) // 5)):
        f.unlink()

    def victim_lost() -> dict[str, Any] | None:
        d = status_api(owner, cid)
        row = next(h for h in d["holders"] if h["peer_id"] == victim.peer_id)
        return d if row["state"] == "lost" else None

    doc = wait_until(victim_lost, 15, "the damaged holder to be marked lost")
    row = next(h for h in doc["holders"] if h["peer_id"] == victim.peer_id)
    assert row["proven_loss"] and row["last_audit"]["ok"] is False, row
    doc = wait_replicated(owner, nodes, cid, timeout=20)
    assert victim.peer_id not in ok_holders(doc, alive_ids(nodes))
    assert victim.running  # it was not killed: only its data went
    peers = {p["peer_id"]: p for p in owner.peers()}
    assert peers[victim.peer_id]["reputation"] < 1.0


@pytest.mark.timeout(90)
def test_large_put_commitment_from_the_piece_helpers_matches_the_holders(swarm: Swarm, tmp_path: Path) -> None:
    """A 20 MiB put is hashed by the owner's piece helpers (files >= 16 MiB,
    store/proofs/piece_hashers.py); each holder rebuilds the commitment from the
    blocks it pulled with the in-process builder and refuses a root that
    differs from the owner-signed manifest, so two ok holders that pass an
    audit mean both ways of building agree on real data."""
    nodes = start_swarm(swarm, n=3)
    owner = nodes[0]
    write_random(tmp_path / "big.bin", 20 * MiB + 4097, seed=11)
    cid = put_replicated(owner, tmp_path / "big.bin")["cid"]
    leaves = owner.repo / "proofs" / f"{cid}.leaves"
    assert leaves.stat().st_size == 32 * -(-(20 * MiB + 4097) // 2048)  # saved by the put itself
    wait_replicated(owner, nodes, cid)
    results = owner.json("audit", cid)["results"]
    assert len(results) == 3 and all(r["ok"] for r in results), results


@pytest.mark.timeout(120)
def test_fifty_audit_rounds_over_honest_holders_never_fail(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm)
    owner = nodes[0]
    write_random(tmp_path / "w.bin", 2 * MiB + 999, seed=3)
    cid = put_replicated(owner, tmp_path / "w.bin")["cid"]
    wait_replicated(owner, nodes, cid)
    results = []
    cli = owner.json("audit", cid)  # the command itself, once
    results += cli["results"]
    for _ in range(49):  # then the same route directly, to keep the test short
        resp = owner.api("POST", "/v1/audit", {"cid": cid})
        assert resp.status_code == 200, resp.text
        results += resp.json()["results"]
    assert len(results) == 50 * 3
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad[:3]
    assert all(r["challenged"] == 66 for r in results)
    doc = status(owner, cid)
    assert doc["replicas_ok"] == 3 and all(h["last_audit"]["ok"] for h in doc["holders"]), doc


@pytest.mark.timeout(120)
def test_clean_restart_keeps_replica_and_agreement(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm)
    owner = nodes[0]
    write_random(tmp_path / "w.bin", 2 * MiB, seed=4)
    cid = put_replicated(owner, tmp_path / "w.bin")["cid"]
    doc = wait_replicated(owner, nodes, cid)
    holder = by_id(nodes, holders_other_than(doc, owner.peer_id)[0])
    before = status(holder, cid)
    assert holder.stop() == 0
    holder.start()
    after = status(holder, cid)
    assert after["role"] == "holder" and after["agreements"] == before["agreements"], (before, after)
    wait_until(lambda: owner.peer_id in holder.connected_ids(), 20, "the holder to reconnect to the owner")
    t_restart = time.time()

    def passed_after_restart() -> bool:
        d = status_api(owner, cid)
        row = next(h for h in d["holders"] if h["peer_id"] == holder.peer_id)
        last = row["last_audit"]
        return bool(row["state"] == "ok" and last and last["ok"] and last["time"] > t_restart)

    wait_until(passed_after_restart, 20, "the restarted holder to pass an audit")
    res = owner.json("audit", cid)["results"]
    assert all(r["ok"] for r in res), res


@pytest.mark.timeout(120)
def test_owner_killed_deputy_restores_replicas(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm)
    owner = nodes[1]  # not the bootstrap node, so the others stay connected
    write_random(tmp_path / "w.bin", 2 * MiB, seed=6)
    cid = put_replicated(owner, tmp_path / "w.bin")["cid"]
    doc = wait_replicated(owner, nodes, cid)
    holders = holders_other_than(doc, owner.peer_id)
    for h in holders:  # the owner's holder-list refresh reached both holders
        wait_until(lambda: set(holders) <= set(status_api(by_id(nodes, h), cid)["known_holders"]), 10,
                   f"holder {h} to know every holder")
    owner.kill()
    deputy_id = min(holders, key=_id_bytes)
    deputy = by_id(nodes, deputy_id)

    def restored() -> dict[str, Any] | None:
        d = status_api(deputy, cid)
        if d["role"] != "deputy":
            return None
        return d if len(ok_holders(d, alive_ids(nodes))) >= 3 else None

    doc = wait_until(restored, 40, "the deputy to restore 3 live holders",
                     on_timeout=lambda: json.dumps(status_api(deputy, cid), indent=1))
    assert owner.peer_id not in ok_holders(doc, alive_ids(nodes))


def _id_bytes(peer_id: str) -> bytes:
    from shoal.p2p.secure.identity import PeerId

    return PeerId.from_string(peer_id).to_bytes()


@pytest.mark.timeout(60)
def test_holder_over_quota_refuses(swarm: Swarm, tmp_path: Path) -> None:
    # Three nodes: the owner, one with room, one with a 1 MiB quota.
    nodes = start_swarm(swarm, n=3, extra={2: ["--quota", "1M"]})
    owner, roomy, tight = nodes
    write_random(tmp_path / "w.bin", 3 * MiB, seed=7)
    cid = put_replicated(owner, tmp_path / "w.bin")["cid"]
    wait_replicated(owner, nodes, cid, want=2)
    doc = status_api(owner, cid)
    row = next((h for h in doc["holders"] if h["peer_id"] == tight.peer_id), None)
    assert row is None or row["state"] == "failed", doc
    assert tight.shoal("status", cid, "--json").code != 0  # it holds nothing
