"""The DHT in a swarm of real `shoal node` processes on 127.0.0.1.

25 nodes (issue 17's number), peer exchange off, bootstrapped as a binary
tree: node i knows only node (i-1)//2, so no node knows more than three
others at start. Content is found through the DHT (`/ipfs/kad/1.0.0` in
server mode, the default on loopback): a file put on one leaf is found by
`shoal routing findprovs` and fetched by `shoal get` on a leaf of the other
subtree, byte-identical. Then 20 % of the nodes (the inner nodes on both
leaves' paths to the root) are killed with SIGKILL; lookups still succeed,
records outlive their (scaled-down) expiry because the provider re-provides
them, and a file put after the kills is fetched across the damaged tree.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.p2p.secure.identity import Identity
from tests.helpers import MANY_NODES, assert_one_line_error, random_bytes, run_shoal
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = [MANY_NODES, pytest.mark.integration]

NODES = int(os.environ.get("SHOAL_DHT_SWARM_NODES", "25"))
EXPIRY = 20.0  # provider records live 20 s; the provider re-provides every 5 s
ROUTING = f"""
[routing]
mode = "server"
scan_interval = 0.5
reprovide_interval = 5
provider_expiry = {EXPIRY}
"""


def configure(node: NodeProc) -> None:
    config = node.repo / "config.toml"
    text = config.read_text().replace("[node]\n", "[node]\npeer_exchange = false\n", 1)
    config.write_text(text + ROUTING)


def start_tree(swarm: Swarm, n: int) -> list[NodeProc]:
    """Node i bootstraps to node (i-1)//2; each depth of the tree starts at once."""
    nodes: list[NodeProc] = []
    depth_start = 0
    width = 1
    while depth_start < n:
        wave = []
        for i in range(depth_start, min(n, depth_start + width)):
            parent = [nodes[(i - 1) // 2].addr] if i else []
            node = swarm.node(f"n{i:02d}", bootstrap=parent)
            configure(node)
            node.start(wait=False)
            wave.append(node)
        for node in wave:
            node.wait_ready(timeout=120)
        nodes.extend(wave)
        depth_start += width
        width *= 2
    return nodes


def findprovs(node: NodeProc, cid: str) -> list[dict[str, Any]]:
    r = node.shoal("routing", "findprovs", cid, "--json", timeout=60)
    assert r.code == 0, f"findprovs on {node.name} failed: {r.err}"
    found: list[dict[str, Any]] = json.loads(r.text)
    return found


def provider_ids(node: NodeProc, cid: str) -> set[str]:
    return {p["peer_id"] for p in findprovs(node, cid)}


def get_bytes(node: NodeProc, cid: str, out: Path) -> bytes:
    r = node.shoal("get", cid, "-o", str(out), timeout=180)
    assert r.code == 0, f"get on {node.name} failed: {r.err}\n{node.log_tail()}"
    return out.read_bytes()


@pytest.mark.timeout(900)
def test_twenty_five_nodes_find_and_fetch_through_the_dht(swarm: Swarm, tmp_path: Path) -> None:
    nodes = start_tree(swarm, NODES)
    deepest = 2 ** (NODES.bit_length() - 1) - 1  # first node of the last full depth (15 of 25)
    provider, fetcher = nodes[deepest], nodes[NODES - 1]  # leaves of the root's two subtrees
    # At start nobody is connected to more than its parent and children.
    assert provider.peer_id not in fetcher.connected_ids()

    data = random_bytes(3_000_000, 17)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    cid = provider.put(src)

    # The fetcher finds the provider through the DHT...
    found = wait_until(lambda: [p for p in findprovs(fetcher, cid) if p["peer_id"] == provider.peer_id],
                       90, f"{fetcher.name} to find {provider.name} as a provider of {cid}")
    assert found[0]["addrs"] == [a.rsplit("/p2p/", 1)[0] for a in provider.addrs]
    # ...and `get` (no connected peer may have it) dials it and fetches, byte-identical.
    assert get_bytes(fetcher, cid, tmp_path / "out1.bin") == data
    # It came through the DHT: the fetcher looked the providers up and connected one.
    assert f"1 provider(s) of {cid} found, 1 connected" in fetcher.log_text()
    table = fetcher.json("routing", "table")
    assert table["mode"] == "server" and table["size"] >= 5
    peer = fetcher.json("routing", "findpeer", provider.peer_id)
    assert peer == {"peer_id": provider.peer_id, "addrs": found[0]["addrs"]}
    nobody = fetcher.shoal("routing", "findpeer", str(Identity.generate().peer_id), timeout=60)
    assert nobody.code != 0 and "not found" in nobody.err
    assert_one_line_error(nobody)

    # SIGKILL 20 %: the inner nodes on both leaves' paths to the root, then more inner ones.
    def ancestors(i: int) -> list[int]:
        return [] if i <= 0 else ([(i - 1) // 2] + ancestors((i - 1) // 2) if (i - 1) // 2 else [])

    inner = sorted(set(ancestors(deepest) + ancestors(NODES - 1)))
    inner += [i for i in range(1, deepest) if i not in inner]
    doomed_idx = inner[: max(1, NODES // 5)]
    for i in doomed_idx:
        nodes[i].kill()
    alive = [n for i, n in enumerate(nodes) if i not in doomed_idx and n is not provider]
    killed_at = time.monotonic()

    # Lookups still succeed from every side of the broken tree.
    for node in (alive[3], alive[len(alive) // 2], fetcher):
        wait_until(lambda node=node: provider.peer_id in provider_ids(node, cid), 60,
                   f"{node.name} to find the provider after the kills")
    # Past the records' expiry they are still found: the provider re-provided them.
    time.sleep(max(0.0, EXPIRY + 2 - (time.monotonic() - killed_at)))
    wait_until(lambda: provider.peer_id in provider_ids(alive[-2], cid), 60,
               "the provider record to be re-provided past its expiry")

    # A file put after the kills on another leaf is fetched across the damaged tree.
    second = random_bytes(1_000_000, 18)
    src2 = tmp_path / "second.bin"
    src2.write_bytes(second)
    putter, getter = nodes[deepest + 1], nodes[NODES - 2]
    cid2 = putter.put(src2)
    wait_until(lambda: putter.peer_id in provider_ids(getter, cid2), 90,
               f"{getter.name} to find {putter.name} as a provider after the kills")
    assert get_bytes(getter, cid2, tmp_path / "out2.bin") == second


@pytest.mark.timeout(60)
def test_routing_commands_need_a_running_node(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    for args in (("routing", "table"), ("routing", "findprovs", "bafkqaaa")):
        r = run_shoal(repo, *args)
        assert r.code != 0 and "no running node" in r.err
        assert_one_line_error(r)
