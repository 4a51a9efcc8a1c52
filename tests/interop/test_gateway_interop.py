"""CARs from Shoal's HTTP gateway read by the real JS stack (@ipld/car's
CarReader, ipfs-unixfs-exporter): node B holds nothing and fetches from A
while it streams the CAR; JS must see the same root, every block's hash
matching its CID, and the exact bytes of every file.

Helia's trustless-gateway block broker (issue 14 item 3) is exercised in
test_helia_gateway.py (with the pinned Node.js 22 binary).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.interop.test_car_interop import car_tool, expected_files, tree
from tests.integration.swarm import Swarm, swarm

__all__ = ["swarm", "tree"]

pytestmark = pytest.mark.interop


def test_gateway_car_read_by_js(swarm: Swarm, tree: Path, tmp_path: Path) -> None:
    a = swarm.add("a")
    b = swarm.add("b", bootstrap=[a.addr], extra_args=["--gateway", "127.0.0.1:0"])
    swarm.wait_connected(b, 1)
    cid = a.put(tree)
    url = b.json("id")["gateway"]
    car_path = tmp_path / "out.car"
    with httpx.stream("GET", f"{url}/ipfs/{cid}", headers={"Accept": "application/vnd.ipld.car"},
                      timeout=60) as resp:
        assert resp.status_code == 200, resp.read()
        with car_path.open("wb") as out:
            for chunk in resp.iter_bytes():
                out.write(chunk)
    js = car_tool("read", str(car_path))
    assert js["roots"] == [cid]
    assert all(ok for _, _, _, ok in js["blocks"])
    assert len({c for c, _, _, _ in js["blocks"]}) == len(js["blocks"])  # dups=n
    assert js["files"] == expected_files(tree)
