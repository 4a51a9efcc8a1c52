"""Giving replicas back, on real `shoal node` processes (1 s audit interval).

(a) put --replicas 3, then `pin rm` on the owner: every holder drops its pin
    within a bounded time, `shoal gc` on a holder frees the blocks, and no
    audit or repair puts the object anywhere again;
(b) put --replicas 3, then the same path with --replicas 2: exactly two
    holders (the owner included) stay ok and the released one has no pin.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)
from tests.integration.test_replication import (
    by_id, holders_other_than, ok_holders, put_replicated, start_swarm, status_api, wait_replicated,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
QUIET_S = 4.0  # four audit intervals: long enough for an audit round and a repair pass to show up


def pins(node: NodeProc) -> list[str]:
    resp = node.api("GET", "/v1/pins")
    assert resp.status_code == 200, resp.text
    out: list[str] = resp.json()
    return out


def pin_ls(node: NodeProc) -> list[str]:
    """`shoal pin ls --json`, as a user would check."""
    out: list[str] = node.json("pin", "ls")
    return out


def states_of(doc: dict[str, Any]) -> dict[str, str]:
    return {h["peer_id"]: h["state"] for h in doc["holders"]}


@pytest.mark.timeout(120)
def test_pin_rm_releases_every_holder_and_nothing_is_repaired(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm, n=4)
    owner = nodes[0]
    write_random(tmp_path / "w.bin", 3 * MiB + 5, seed=11)
    cid = put_replicated(owner, tmp_path / "w.bin")["cid"]
    doc = wait_replicated(owner, nodes, cid)
    holders = [by_id(nodes, h) for h in holders_other_than(doc, owner.peer_id)]
    bystander = next(n for n in nodes if n is not owner and n not in holders)
    assert len(holders) == 2 and all(cid in pin_ls(h) for h in holders)

    r = owner.shoal("pin", "rm", cid)
    assert r.code == 0, r.err
    at_once = status_api(owner, cid)  # audits and repairs stop with the unpin
    assert at_once["replicas_wanted"] == 0 and at_once["released"] and at_once["replicas_ok"] == 0, at_once
    assert not ok_holders(at_once, {n.peer_id for n in nodes}), at_once

    t0 = time.monotonic()
    for h in holders:
        wait_until(lambda: cid not in pins(h), 15, f"holder {h.name} to drop its pin",
                   on_timeout=lambda: swarm.logs())
    took = time.monotonic() - t0
    for h in holders:
        assert cid not in pin_ls(h)
        view = status_api(h, cid)
        assert view["released"] and view["holders"][0]["state"] == "released", view
        assert all(a["released"] for a in view["agreements"]), view

    done = wait_until(lambda: (d := status_api(owner, cid))["releases_pending"] == 0 and d, 10,
                      "the owner to record every release as done")
    assert states_of(done) == {owner.peer_id: "released", **{h.peer_id: "released" for h in holders}}, done

    gc = holders[0].json("gc")
    assert gc["freed_bytes"] >= 3 * MiB and holders[0].block_count() == 0, gc
    assert cid not in pin_ls(owner)

    # Nothing comes back: several audit intervals later no node holds or is asked to hold it.
    time.sleep(QUIET_S)
    after = status_api(owner, cid)
    assert states_of(after) == states_of(done) and after["replicas_ok"] == 0, after
    for n in nodes:
        assert cid not in pins(n), n.name
    assert bystander.block_count() == 0
    assert holders[0].block_count() == 0
    assert "store requested" not in json.dumps(after)
    assert owner.shoal("audit", cid, "--json").code != 0  # nothing left to audit
    assert owner.shoal("pin", "rm", cid).code != 0  # unpinning twice is still an error
    print(f"pin rm -> both holders unpinned after {took:.1f}s")


@pytest.mark.timeout(120)
def test_lower_replica_count_releases_one_holder(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_swarm(swarm, n=4)
    owner = nodes[0]
    path = tmp_path / "w.bin"
    write_random(path, 2 * MiB + 3, seed=12)
    cid = put_replicated(owner, path)["cid"]
    doc = wait_replicated(owner, nodes, cid)
    before = holders_other_than(doc, owner.peer_id)
    assert len(before) == 2

    again = put_replicated(owner, path, replicas=2)
    assert again["cid"] == cid
    released = again["placement"]["released"]
    assert len(released) == 1 and released[0] in before, again
    gone = by_id(nodes, released[0])
    kept = by_id(nodes, next(p for p in before if p != gone.peer_id))

    def settled() -> dict[str, Any] | None:
        d = status_api(owner, cid)
        return d if states_of(d).get(gone.peer_id) == "released" else None

    doc = wait_until(settled, 15, "the surplus holder to be released",
                     on_timeout=lambda: json.dumps(status_api(owner, cid), indent=1))
    assert doc["replicas_wanted"] == 2
    wait_until(lambda: cid not in pins(gone), 10, "the released holder to drop its pin")

    time.sleep(QUIET_S)  # audits keep running on the two that stay; no repair adds a third
    doc = status_api(owner, cid)
    alive = {n.peer_id for n in nodes}
    assert ok_holders(doc, alive) == {owner.peer_id, kept.peer_id}, doc
    assert doc["replicas_ok"] == 2
    assert not [h for h in doc["holders"] if h["state"] == "pending"], doc
    assert cid not in pin_ls(gone) and cid in pin_ls(kept)
    assert status_api(gone, cid)["released"] and not status_api(kept, cid)["released"]
    res = owner.json("audit", cid)["results"]
    assert sorted(r["peer_id"] for r in res) == sorted([owner.peer_id, kept.peer_id]) and all(r["ok"] for r in res)

    # Down to the owner's copy alone: `put --replicas 1` is passed on (a put
    # without --replicas leaves the placement as it is).
    plain = owner.shoal("put", str(path), "--json")
    assert plain.code == 0 and json.loads(plain.text)["placement"] is None, plain.text
    last = put_replicated(owner, path, replicas=1)
    assert last["placement"]["released"] == [kept.peer_id], last
    wait_until(lambda: cid not in pins(kept), 15, "the last holder to drop its pin")
    assert status_api(owner, cid)["replicas_wanted"] == 1
