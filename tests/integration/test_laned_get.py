"""`shoal get` through lanes, with real node and lane processes (issue 15).

Two nodes with `--lanes 2` each: the fetching node's main process fetches
only directories and the files' inner nodes; every raw leaf moves from a
holder's lane to one of ours, which verifies it, writes it into the
export's temp file at its offset and stores it. What these tests show:

- the bytes are exact, for a file and for a directory of several files,
  and every leaf went through a lane (the main fetch's byte count is only
  the inner nodes);
- a lane of the fetching node SIGKILLed mid-get is replaced (a new pid in
  `node status`) and the get completes with identical bytes;
- a holder whose LANE lies (the worker's test hook, see
  shoal.p2p.lanes.worker) is caught per block, its reputation marked, and
  the get completes from an honest holder; with only the liar it fails
  cleanly and leaves no file;
- `--lanes 1` on either side is today's get (no lanes involved).

Holders are slowed for the kill test by the worker's serve-delay test hook
(each served block waits), so the get is still running when the lane dies;
the test waits for jobs to be on the lanes, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MANY_NODES, assert_one_line_error, shoal_env, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = [MANY_NODES, pytest.mark.integration]

MiB = 1024 * 1024
LANES = ["--lanes", "2"]


def _hook_env(hook: str) -> dict[str, str]:
    env = shoal_env()
    env["SHOAL_LANE_TEST_HOOK"] = hook
    return env


def start(swarm: Swarm, name: str, *, lanes: str = "2", bootstrap: list[str] | None = None,
          hook: str | None = None) -> NodeProc:
    node = swarm.node(name, bootstrap or [], ["--lanes", lanes])
    if hook is not None:
        node.env = _hook_env(hook)
    node.start()
    return node


def lanes_of(node: NodeProc) -> list[dict[str, Any]]:
    resp = node.api("GET", "/v1/node/status")
    assert resp.status_code == 200, resp.text
    lanes: list[dict[str, Any]] = resp.json().get("lanes", [])
    return lanes


def get(node: NodeProc, cid: str, out: Path, timeout: float = 90) -> dict[str, Any]:
    r = node.shoal("get", cid, "-o", str(out), "--json", timeout=timeout)
    assert r.code == 0, f"get on {node.name} failed: {r.err}\n{node.log_tail()}"
    doc: dict[str, Any] = json.loads(r.text)
    return doc


def api_get(node: NodeProc, cid: str, out: Path) -> dict[str, Any]:
    """The get through the API: its answer has every field (the CLI's --json picks some)."""
    resp = node.api("POST", "/v1/get", {"cid": cid, "output": str(out)}, timeout=120)
    assert resp.status_code == 200, resp.text + node.log_tail()
    doc: dict[str, Any] = resp.json()
    return doc


def connect(b: NodeProc, *holders: NodeProc) -> None:
    wait_until(lambda: {h.peer_id for h in holders} <= b.connected_ids(), 20,
               f"{b.name} to connect to {[h.name for h in holders]}")
    # The holders' lane addresses come in their Hello: wait until B knows them.
    wait_until(lambda: all(p.get("lanes") for p in b.peers() if p["peer_id"] in {h.peer_id for h in holders})
               or None, 20, f"{b.name} to learn the holders' lanes")


@pytest.mark.timeout(240)
def test_a_file_moves_through_lanes_with_exact_bytes(swarm: Swarm, tmp_path: Path) -> None:
    a = start(swarm, "A")
    data = write_random(tmp_path / "model.bin", 16 * MiB + 12_345, seed=151)
    cid = a.put(tmp_path / "model.bin")
    b = start(swarm, "B", bootstrap=[a.addr])
    connect(b, a)
    assert len(lanes_of(b)) == 2 and len(lanes_of(a)) == 2

    doc = api_get(b, cid, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    lanes = doc["lanes"]
    assert lanes["fetched_blocks"] == 17 and lanes["fetched_bytes"] == len(data), doc
    # The main process fetched the root only: no leaf byte went through it.
    assert doc["fetched_bytes"] - lanes["fetched_bytes"] < 4096, doc
    assert doc["export_store_reads"] + doc["export_handed_off"] <= 2, doc
    assert sum(lane["jobs"] for lane in lanes_of(b)) >= 17
    honest = next(p for p in b.peers() if p["peer_id"] == a.peer_id)
    assert honest["delivered"] >= 17 and honest["corrupt"] == 0, honest
    r = b.shoal("verify")
    assert r.code == 0, r.err

    # Again, into another file: every leaf is now in B's store, so lanes copy them (a resumed get).
    again = api_get(b, cid, tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == data
    assert again["fetched_blocks"] == 0, again


@pytest.mark.timeout(240)
def test_a_directory_of_several_files(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    files = {f"model-{i:05d}-of-00004.safetensors": write_random(src / f"model-{i:05d}-of-00004.safetensors",
                                                                  3 * MiB + 1000 * i, seed=160 + i)
             for i in range(4)}
    files["config.json"] = b'{"hidden_size": 8}'
    (src / "config.json").write_bytes(files["config.json"])
    (src / "sub").mkdir()
    files["sub/tok.bin"] = write_random(src / "sub" / "tok.bin", 2 * MiB + 7, seed=170)
    a = start(swarm, "A")
    cid = a.put(src)
    b = start(swarm, "B", bootstrap=[a.addr])
    connect(b, a)

    doc = api_get(b, cid, tmp_path / "out")
    for name, content in files.items():
        assert (tmp_path / "out" / name).read_bytes() == content, name
    assert doc["lanes"]["fetched_bytes"] == sum(len(c) for n, c in files.items() if n != "config.json"), doc
    assert not [p for p in (tmp_path / "out").rglob(".shoal-*")]
    assert b.shoal("verify").code == 0


@pytest.mark.timeout(240)
def test_a_lane_killed_mid_get_is_replaced_and_the_get_completes(swarm: Swarm, tmp_path: Path) -> None:
    a = start(swarm, "A", hook="serve-delay=0.25")
    data = write_random(tmp_path / "big.bin", 24 * MiB + 3, seed=181)
    cid = a.put(tmp_path / "big.bin")
    b = start(swarm, "B", bootstrap=[a.addr])
    connect(b, a)
    before = {lane["pid"] for lane in lanes_of(b)}
    assert len(before) == 2

    proc = b.popen("get", cid, "-o", str(tmp_path / "out.bin"), "--json")
    try:
        # Wait until a lane of B has jobs running, then kill it.
        busy = wait_until(lambda: next((lane for lane in lanes_of(b) if lane.get("inflight", 0) > 0), None),
                          60, "a lane of B to run jobs")
        os.kill(busy["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err.decode() + b.log_tail()
    assert (tmp_path / "out.bin").read_bytes() == data
    after = wait_until(lambda: (lambda pids: pids if len(pids) == 2 and busy["pid"] not in pids else None)(
        {lane["pid"] for lane in lanes_of(b)}), 30, "B to replace the killed lane")
    assert after - before, (before, after)
    assert b.shoal("verify").code == 0


@pytest.mark.timeout(240)
def test_a_lying_holder_lane_is_caught_per_block(swarm: Swarm, tmp_path: Path) -> None:
    data = write_random(tmp_path / "w.bin", 8 * MiB + 5, seed=191)
    liar = start(swarm, "L", hook="corrupt")
    cid = liar.put(tmp_path / "w.bin")
    honest = start(swarm, "A")
    assert honest.put(tmp_path / "w.bin") == cid
    b = start(swarm, "B", bootstrap=[liar.addr, honest.addr])
    connect(b, liar, honest)

    doc = api_get(b, cid, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert doc["lanes"]["outcomes"].get("corrupt", 0) >= 1, doc
    rec = next(p for p in b.peers() if p["peer_id"] == liar.peer_id)
    assert rec["corrupt"] > 0 and rec["reputation"] < 0.5, rec
    good = next(p for p in b.peers() if p["peer_id"] == honest.peer_id)
    assert good["corrupt"] == 0 and good["delivered"] > 0, good
    assert b.shoal("verify").code == 0

    # Only the liar (the others, which now hold it too, are stopped: peer
    # exchange would lead W to them): a clean one-line error, no file, no
    # corrupt block stored.
    honest.stop()
    b.stop()
    w = start(swarm, "W", bootstrap=[liar.addr])
    connect(w, liar)
    r = w.shoal("get", cid, "-o", str(tmp_path / "nothing.bin"), timeout=90)
    assert_one_line_error(r)
    assert "lanes" in r.err, r.err
    assert not (tmp_path / "nothing.bin").exists()
    assert not [p for p in tmp_path.glob(".shoal-*")]
    assert w.shoal("verify").code == 0
    assert w.running


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fetcher_lanes,holder_lanes", [("1", "2"), ("2", "1")])
def test_lanes_1_on_either_side_is_todays_get(swarm: Swarm, tmp_path: Path, fetcher_lanes: str,
                                              holder_lanes: str) -> None:
    a = start(swarm, "A", lanes=holder_lanes)
    data = write_random(tmp_path / "f.bin", 6 * MiB + 1, seed=201)
    cid = a.put(tmp_path / "f.bin")
    b = start(swarm, "B", lanes=fetcher_lanes, bootstrap=[a.addr])
    wait_until(lambda: a.peer_id in b.connected_ids(), 20, "B to connect to A")
    assert (len(lanes_of(b)) == 0) == (fetcher_lanes == "1")
    doc = api_get(b, cid, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert "lanes" not in doc, doc
    assert doc["fetched_bytes"] >= len(data) and doc["fetched_blocks"] == 8, doc  # 7 leaves and the root
    cli = get(b, cid, tmp_path / "cli.bin")
    assert (tmp_path / "cli.bin").read_bytes() == data
    assert set(cli) >= {"cid", "output", "fetched_blocks", "fetched_bytes", "local_blocks", "holders"}


@pytest.mark.timeout(240)
def test_blocks_no_lane_holder_has_come_from_holders_without_lanes(swarm: Swarm, tmp_path: Path) -> None:
    # A (lanes) lost two leaves; C (--lanes 1) has everything. The lanes
    # cannot get those two, so the get goes on in-process over every holder,
    # keeping what the lanes stored.
    from shoal.store.chunking.profiles import UNIXFS_V1_2025
    from shoal.store.dag.exporter import Leaf, file_layout
    from shoal.store.dag.importer import import_bytes
    from shoal.store.ipld.cid import block_key
    from shoal.store.persist.blockstore import MemoryBlockstore

    data = write_random(tmp_path / "f.bin", 8 * MiB + 77, seed=211)
    a = start(swarm, "A")
    cid = a.put(tmp_path / "f.bin")
    c = start(swarm, "C", lanes="1")
    assert c.put(tmp_path / "f.bin") == cid
    mem = MemoryBlockstore()
    root = import_bytes(data, mem, UNIXFS_V1_2025).cid
    assert str(root) == cid
    leaves = [p for p in file_layout(mem, root) if isinstance(p, Leaf)]
    for leaf in (leaves[2], leaves[5]):
        (path,) = list((a.repo / "blocks").rglob(block_key(leaf.cid) + ".data"))
        path.unlink()
    b = start(swarm, "B", bootstrap=[a.addr, c.addr])
    connect(b, a)
    wait_until(lambda: c.peer_id in b.connected_ids(), 20, "B to connect to C")

    doc = api_get(b, cid, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert "lanes" not in doc and doc["holders"] == 2, doc  # the in-process get finished it
    # What the first attempt stored was kept (its root at least): 9 leaves and the root in all.
    assert doc["local_blocks"] >= 1 and doc["local_blocks"] + doc["fetched_blocks"] == len(leaves) + 1, doc
    assert "trying every holder in-process" in b.log_text()
    assert b.shoal("verify").code == 0
