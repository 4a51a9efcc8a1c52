"""A `shoal node` fetches, through the DHT and Bitswap, a file only a Helia node holds (issue 17 item 4).

Three processes on 127.0.0.1:

* J, a js-libp2p node with `@libp2p/kad-dht` in server mode (dht_peer.mjs):
  the bootstrap of both others.
* H, Helia 7 (helia_dht_peer.mjs: TCP, Noise, yamux, identify, Bitswap and
  kad-dht in server mode) bootstrapped to J: it adds a multi-block file and
  provides its CID to the DHT (J is the closest, indeed the only, peer).
* S, a real `shoal node` with J as its ONLY bootstrap and peer exchange off:
  nothing tells it about H except the DHT.

`shoal routing findprovs CID --json` on S names H with its address (from
J's GET_PROVIDERS answer), and `shoal get CID -o OUT` finds no connected
Shoal peer with the root, asks the DHT, connects H (an IPFS node: kept for
Bitswap) and fetches every block from it: identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until

__all__ = ["swarm"]

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

HERE = Path(__file__).parent
HELIA_FILE_BYTES = 1_500_000  # Helia's 256 KiB chunks: 6 raw leaves and a dag-pb root
ROUTING = """
[routing]
mode = "server"
scan_interval = 0.5
"""


class JsProcs:
    """The js processes of one test: started with pipes, killed and reaped on any exit."""

    def __init__(self, node22: Path, tmp_path: Path) -> None:
        self.node22 = node22
        self.tmp_path = tmp_path
        self.procs: list[tuple[subprocess.Popen[str], Path]] = []

    def start(self, name: str, *args: str, stdin: bool = False) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        """Start `node SCRIPT ARGS` and read its first JSON line (which must be `ready`)."""
        err_path = self.tmp_path / f"{name}.stderr"
        with open(err_path, "w") as err:
            proc = subprocess.Popen([str(self.node22), *args], cwd=HERE, text=True, stderr=err,
                                    stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else None,
                                    env={**os.environ, "DEBUG": ""})
        self.procs.append((proc, err_path))
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the script's own --timeout and pytest-timeout
        assert line, f"{name} ended without a word:\n{err_path.read_text(errors='replace')[-3000:]}"
        event: dict[str, Any] = json.loads(line)
        assert event["event"] == "ready", (event, err_path.read_text(errors="replace")[-3000:])
        return proc, event

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            pipes: list[IO[str] | None] = [proc.stdin, proc.stdout]
            for pipe in pipes:
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def js(node22: Path, tmp_path: Path) -> Iterator[JsProcs]:
    procs = JsProcs(node22, tmp_path)
    try:
        yield procs
    finally:
        procs.close()


def dht_only(node: NodeProc) -> None:
    """Peer exchange off and the DHT in server mode: S learns of H through the DHT alone."""
    config = node.repo / "config.toml"
    text = config.read_text().replace("[node]\n", "[node]\npeer_exchange = false\n", 1)
    config.write_text(text + ROUTING)


def test_shoal_get_finds_helia_through_the_dht_and_fetches_over_bitswap(
        swarm: Swarm, js: JsProcs, tmp_path: Path) -> None:
    _, j = js.start("j", "dht_peer.mjs", "--timeout", "220000", stdin=True)  # stdin open: J stays up
    j_addr = j["addrs"][0]
    _, h = js.start("h", "helia_dht_peer.mjs", "--bootstrap", j_addr, "--size", str(HELIA_FILE_BYTES),
                    "--timeout", "220000")
    cid = h["file"]

    s = swarm.node("s", bootstrap=[j_addr])
    dht_only(s)
    s.start()
    assert h["peer"] not in s.connected_ids()

    # S finds H as the provider, with H's own address, through J's DHT.
    def found() -> list[dict[str, Any]] | None:
        r = s.shoal("routing", "findprovs", cid, "--json", timeout=60)
        assert r.code == 0, r.err
        provs = [p for p in json.loads(r.text) if p["peer_id"] == h["peer"]]
        return provs or None

    provs = wait_until(found, 60, f"S to find Helia as a provider of {cid}",
                       on_timeout=lambda: "\n" + s.log_tail())
    assert provs[0]["addrs"] == [a.rsplit("/p2p/", 1)[0] for a in h["addrs"]]

    # `get`: no Shoal peer has the root, the DHT names H, S connects it and asks it over Bitswap.
    out = tmp_path / "from-helia.bin"
    r = s.shoal("get", cid, "-o", str(out), "--json", timeout=120)
    assert r.code == 0, f"{r.err}\n{s.log_tail()}"
    data = out.read_bytes()
    assert len(data) == h["file_size"] == HELIA_FILE_BYTES
    assert hashlib.sha256(data).hexdigest() == h["file_sha256"]
    doc = json.loads(r.text)
    assert doc["fetched_blocks"] == 7 and doc["holders"] == 1, doc  # the root and 6 leaves, from Helia
    log = s.log_text()
    assert f"1 provider(s) of {cid} found, 1 connected" in log, s.log_tail()
    assert s.stats()["connected_peers"] == 0  # Helia was never a Shoal peer: it all came over Bitswap
