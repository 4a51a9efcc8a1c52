"""The gateway's on-demand fetch through lanes (issue 14 item 9 over issue 15's lanes).

Holders a and b run `--lanes 2` and hold a small HF-shaped model (a by `shoal
hf import`, b by `shoal put`); gateway node c holds nothing. With `--lanes
2` on c, every block of a file c serves (the /ipfs/ path whole and by
Range, the Hub's /resolve for `snapshot_download`) is fetched by c's lanes
from the holders' lanes, verified and stored there, and handed back to the
response: c's main process receives (almost) no block bytes (`/v1/stats`
received_bytes counts what its own fetches got; only directories and roots
remain), and c's lanes' byte counters (`/v1/node/status`) cover the files.
With `--lanes 1` c serves exactly as before: its own fetches get the bytes.

A holder whose LANE lies (the worker's test hook: every block it serves has
a bit flipped) is caught per block by c's lanes (c's record of the holder
counts it corrupt) and the responses complete from the honest holder with
exact bytes, nothing false stored. A lane of c SIGKILLed while a response
is running (c's lanes are stopped first, so the response's jobs are in
flight on them): its jobs come back lane_died, the dispatcher runs them
again on the other lane (or the replacement), and the response COMPLETES
with exact bytes.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hf_helpers import make_model, run_client
from tests.helpers import MANY_NODES, shoal_env, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until

__all__ = ["swarm"]

pytestmark = [MANY_NODES, pytest.mark.integration, pytest.mark.timeout(300)]

MiB = 1024 * 1024
BIG = 6 * MiB + 4321  # 7 blocks of the default chunker
MAIN_BYTES_MAX = 256 * 1024  # what c's main process may fetch itself: directories and file roots

SNAPSHOT = """
import json, os
from huggingface_hub import snapshot_download
p = snapshot_download("org/tiny", cache_dir=os.environ["HF_HUB_CACHE"])
print(json.dumps({"snapshot": p}))
"""


def gateway_url(node: NodeProc) -> str:
    url = node.json("id").get("gateway")
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:")
    return url


def lanes_of(node: NodeProc) -> list[dict[str, Any]]:
    doc: dict[str, Any] = node.call("GET", "/v1/node/status")
    return list(doc["lanes"])


def lane_bytes(node: NodeProc) -> int:
    return sum(int(lane["bytes"]) for lane in lanes_of(node))


def holder(swarm: Swarm, name: str, bootstrap: list[str], hook: str | None = None) -> NodeProc:
    node = swarm.node(name, bootstrap, ["--lanes", "2"])
    if hook is not None:
        env = shoal_env()
        env["SHOAL_LANE_TEST_HOOK"] = hook
        node.env = env
    node.start()
    return node


def setup(swarm: Swarm, tmp: Path, *, gateway_lanes: str = "2", hook_a: str | None = None,
          hook_b: str | None = None) -> tuple[NodeProc, NodeProc, NodeProc, str, dict[str, bytes]]:
    """Holders a, b of the model (root CID returned) and gateway c (`--lanes gateway_lanes`) that holds nothing."""
    folder = tmp / "tiny"
    files = make_model(folder)
    (folder / "weights").mkdir()
    files["weights/big.bin"] = write_random(folder / "weights" / "big.bin", BIG, seed=91)
    files["weights/big2.bin"] = write_random(folder / "weights" / "big2.bin", BIG + 999, seed=92)
    write_random(tmp / "probe.bin", 1000, seed=93)
    a = holder(swarm, "a", [], hook_a)
    b = holder(swarm, "b", [a.addr], hook_b)
    r = a.shoal("hf", "import", str(folder), "--repo", "org/tiny", "--json")
    assert r.code == 0, r.err
    root = b.put(folder)
    probe_cid = a.put(tmp / "probe.bin")
    assert b.put(tmp / "probe.bin") == probe_cid
    c = swarm.add("c", bootstrap=[a.addr, b.addr],
                  extra_args=["--gateway", "127.0.0.1:0", "--lanes", gateway_lanes], start=False)
    config = c.repo / "config.toml"
    config.write_text(config.read_text() + '\n[names]\ntrust = "swarm"\n')
    c.start()
    swarm.wait_connected(c, 2)
    if gateway_lanes != "1":
        # c learns where the holders' lanes are right after each Hello: wait until a lane job
        # reaches them (a lying holder's answer is "corrupt", and reached it too).
        for h in (a, b):
            wait_until(lambda: c.call("POST", "/v1/lanes/fetch", {"cid": probe_cid, "holder": h.peer_id})
                       ["outcome"] in ("ok", "corrupt"), 30, f"c's lanes to reach {h.name}'s")
    url = gateway_url(c)
    wait_until(lambda: httpx.get(url + "/api/models/org/tiny/revision/main", timeout=10).status_code == 200,
               30, "c to resolve org/tiny")
    return a, b, c, root, files


def received(node: NodeProc) -> int:
    return int(node.stats()["received_bytes"])


def test_gateway_lanes_fetch_files_ranges_and_hub_downloads(swarm: Swarm, tmp_path: Path) -> None:
    a, b, c, root, files = setup(swarm, tmp_path)
    url = gateway_url(c)
    assert len(lanes_of(c)) == 2
    before = lane_bytes(c)

    whole = httpx.get(f"{url}/ipfs/{root}/weights/big.bin", timeout=120)
    assert whole.status_code == 200, whole.text
    assert whole.content == files["weights/big.bin"]

    ranged = httpx.get(f"{url}/ipfs/{root}/weights/big2.bin", headers={"Range": "bytes=1500000-4200000"},
                       timeout=120)
    assert ranged.status_code == 206, ranged.text
    assert ranged.content == files["weights/big2.bin"][1500000:4200001]

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    snap = Path(run_client(SNAPSHOT, url, cache)["snapshot"])
    for rel, content in files.items():
        assert (snap / rel).read_bytes() == content, rel

    served = sum(len(v) for v in files.values())
    # The lanes moved the files' blocks; c's main process fetched only directories and roots.
    assert lane_bytes(c) - before >= served - 8 * 1024, (lane_bytes(c), served)
    assert received(c) < MAIN_BYTES_MAX, c.stats()
    assert sum(int(lane["jobs"]) for lane in lanes_of(c)) >= 2 * (BIG // MiB)
    r = c.shoal("verify")
    assert r.code == 0, r.err


def test_gateway_without_lanes_fetches_in_its_own_process(swarm: Swarm, tmp_path: Path) -> None:
    a, b, c, root, files = setup(swarm, tmp_path, gateway_lanes="1")
    url = gateway_url(c)
    assert lanes_of(c) == []
    whole = httpx.get(f"{url}/ipfs/{root}/weights/big.bin", timeout=120)
    assert whole.status_code == 200 and whole.content == files["weights/big.bin"]
    ranged = httpx.get(f"{url}/ipfs/{root}/weights/big2.bin", headers={"Range": "bytes=10-2000000"}, timeout=120)
    assert ranged.status_code == 206 and ranged.content == files["weights/big2.bin"][10:2000001]
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    snap = Path(run_client(SNAPSHOT, url, cache)["snapshot"])
    for rel, content in files.items():
        assert (snap / rel).read_bytes() == content, rel
    assert received(c) >= BIG + 2000000  # today's data plane: c's own fetches got the bytes


def test_a_lying_holder_lane_is_caught_per_block_and_the_response_completes(swarm: Swarm, tmp_path: Path) -> None:
    a, b, c, root, files = setup(swarm, tmp_path, hook_a="corrupt")
    url = gateway_url(c)
    for name in ("weights/big.bin", "weights/big2.bin"):
        resp = httpx.get(f"{url}/ipfs/{root}/{name}", timeout=120)
        assert resp.status_code == 200, resp.text
        assert resp.content == files[name], name
    liar = next(p for p in c.peers() if p["peer_id"] == a.peer_id)
    honest = next(p for p in c.peers() if p["peer_id"] == b.peer_id)
    assert liar["corrupt"] >= 1, liar
    assert honest["corrupt"] == 0 and honest["delivered"] >= 1, honest
    assert received(c) < MAIN_BYTES_MAX, c.stats()  # the honest bytes came through the lanes too
    r = c.shoal("verify")  # no lie was stored
    assert r.code == 0, r.err


def test_a_lane_killed_mid_response_is_retried_and_the_response_completes(swarm: Swarm, tmp_path: Path) -> None:
    a, b, c, root, files = setup(swarm, tmp_path)
    url = gateway_url(c)
    victim, other = (int(lane["pid"]) for lane in lanes_of(c))
    # Both of c's lanes stopped: the response's jobs wait in them, so the kill finds some in flight.
    for pid in (victim, other):
        os.kill(pid, signal.SIGSTOP)
    out: dict[str, Any] = {}

    def download() -> None:
        try:
            resp = httpx.get(f"{url}/ipfs/{root}/weights/big2.bin", timeout=180)
            out["status"], out["body"] = resp.status_code, resp.content
        except httpx.HTTPError as exc:
            out["error"] = exc

    worker = threading.Thread(target=download)
    worker.start()
    busy: dict[str, Any] | None = None
    try:
        busy = wait_until(lambda: next((lane for lane in lanes_of(c) if lane["inflight"] > 0), None), 60,
                          "the response's jobs on c's stopped lanes")
    finally:
        os.kill(int(busy["pid"]) if busy else victim, signal.SIGKILL)
        for pid in (victim, other):
            if not busy or pid != int(busy["pid"]):
                os.kill(pid, signal.SIGCONT)
        worker.join(timeout=200)
    assert not worker.is_alive()
    assert "error" not in out, out.get("error")
    assert out["status"] == 200 and out["body"] == files["weights/big2.bin"]
    assert busy is not None
    killed = int(busy["pid"])
    after = wait_until(lambda: (lambda pids: pids if len(pids) == 2 and killed not in pids else None)(
        {int(lane["pid"]) for lane in lanes_of(c)}), 30, "c to replace the killed lane")
    assert killed not in after
    assert received(c) < MAIN_BYTES_MAX, c.stats()  # the retries went through lanes too
    r = c.shoal("verify")
    assert r.code == 0, r.err
