"""Private swarms and the peer allowlist, with real node processes on 127.0.0.1.

A swarm key (libp2p pnet) set three ways (flag, config, <repo>/swarm.key):
members connect and fetch; a keyless node and a node with another key never
connect, cannot fetch, and a keyless prober is closed at once without
receiving a single byte. An allowlist admits only the listed peer ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from shoal.p2p.libp2p import multistream as mss
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.noise import NoiseHandshake, Role
from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.secure.secure_stream import encode_frame
from shoal.p2p.secure.pnet_stream import protect
from shoal.store.persist.config import load_config, save_config
from tests.helpers import assert_one_line_error, run_shoal, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PROMPT_S = 3.0
"""A refused prober must be closed well inside the 10 s handshake timeout
(p2p/wire/limits.py), which is what a node without the first-message check took."""


def wait_connected(node: NodeProc, others: list[NodeProc], timeout: float = 15) -> None:
    want = {o.peer_id for o in others}
    wait_until(lambda: want <= node.connected_ids(), timeout,
               f"{node.name} to be connected to {[o.name for o in others]}")


def wait_dial_failed(node: NodeProc, timeout: float = 15) -> str:
    """The node's log once it says a dial failed; returns that line."""
    def failed_line() -> str | None:
        return next((line for line in node.log_text().splitlines() if "dial" in line and "failed" in line), None)

    return wait_until(failed_line, timeout, f"{node.name} to log a failed dial",
                      on_timeout=lambda: "\n" + node.log_tail())


def probe(host_port: str, key: SwarmKey | None, until_eof: bool = True) -> tuple[bytes, float]:
    """Dial like a libp2p dialer (optionally behind `key`): multistream-select's
    header and the `/noise` proposal, then Noise message 1, in one write.

    Returns (bytes received, seconds taken): until the node closes, or with
    `until_eof=False` until its first reply.
    """
    host, port = host_port.split("/")[2], int(host_port.split("/")[4])

    async def run() -> tuple[bytes, float]:
        received = bytearray()
        stream = protect(await trio.open_tcp_stream(host, port), key)
        start = trio.current_time()
        await stream.send_all(mss.encode_message(mss.HEADER) + mss.encode_message("/noise")
                              + encode_frame(NoiseHandshake(Role.INITIATOR, Identity.generate()).write_message()))
        with trio.fail_after(15):
            try:
                while chunk := await stream.receive_some(65536):
                    received.extend(chunk)
                    if not until_eof:
                        break
            except trio.BrokenResourceError:
                pass  # a reset is a close too
        await stream.aclose()
        return bytes(received), trio.current_time() - start

    return trio.run(run)


@pytest.mark.timeout(150)
def test_only_peers_with_the_swarm_key_connect_and_fetch(swarm: Swarm, tmp_path: Path) -> None:
    key, other = SwarmKey.generate(), SwarmKey.generate()
    key_file, other_file = tmp_path / "swarm.key", tmp_path / "other.key"
    key_file.write_bytes(key.encode())
    key_file.chmod(0o600)
    other_file.write_bytes(other.encode())
    other_file.chmod(0o644)

    a = swarm.add("A", extra_args=["--swarm-key", str(key_file)])  # by flag
    assert f"private swarm: only peers with the swarm key {key.fingerprint()}" in a.log_text()
    assert "readable by other users" not in a.log_text()
    data = write_random(tmp_path / "model.bin", 3 * MiB + 5, seed=3)
    cid = a.put(tmp_path / "model.bin")

    b = swarm.add("B", bootstrap=[a.addr], start=False)
    (b.repo / "swarm.key").write_bytes(key.encode())  # as kubo: the repo's own swarm.key
    b.start()
    keyless = swarm.add("C", bootstrap=[a.addr])
    wrong = swarm.add("D", bootstrap=[a.addr], start=False)
    config = load_config(wrong.repo / "config.toml")
    config["node"]["swarm_key"] = str(other_file)  # by config
    save_config(wrong.repo / "config.toml", config)
    wrong.start()

    wait_connected(b, [a])
    r = b.shoal("get", cid, "-o", str(tmp_path / "b.bin"))
    assert r.code == 0, r.err
    assert (tmp_path / "b.bin").read_bytes() == data

    for node in (keyless, wrong):
        line = wait_dial_failed(node)
        r = node.shoal("get", cid, "-o", str(tmp_path / f"{node.name}.bin"), timeout=60)
        assert r.code != 0 and "no connected peer" in r.err, (node.name, r)
        assert not (tmp_path / f"{node.name}.bin").exists()
        assert not node.connected_ids(), node.name
    assert "same swarm key" in wait_dial_failed(wrong), "a mis-keyed node should say why its dials fail"
    assert f"swarm key {other_file} is readable by other users" in wrong.log_text()
    # Peer exchange ran meanwhile: A and B only ever had each other.
    assert a.connected_ids() == {b.peer_id} and b.connected_ids() == {a.peer_id}
    assert {keyless.peer_id, wrong.peer_id}.isdisjoint({p["peer_id"] for p in a.peers()})

    # A prober without the key (or with another) learns nothing but that the port is open
    # (and the node's random 24-byte pnet nonce, which libp2p's protector sends first:
    # js-libp2p waits for it): no multistream-select or Noise byte comes back, and the
    # node closes at once instead of waiting out the handshake.
    for prober_key in (None, other):
        received, took = probe(a.host_port, prober_key)
        assert len(received) <= 24, received[:64]
        assert took < PROMPT_S, f"closed after {took:.1f}s"
    # The same probe with the key gets the node's answer (multistream-select, then Noise):
    # the port does speak to members.
    received, _ = probe(a.host_port, key, until_eof=False)
    assert len(received) > 2


@pytest.mark.timeout(120)
def test_allowlist_admits_only_listed_peers(swarm: Swarm, tmp_path: Path) -> None:
    b = swarm.add("B", start=False)
    b_id = b.json("id")["peer_id"]  # offline: the id a user would copy into the list
    allow = tmp_path / "allow.txt"
    allow.write_text(f"# the lab\n{b_id}   # bob's machine\n")
    a = swarm.add("A", extra_args=["--allow-peers", str(allow)])
    assert "allowlist: only 1 listed peer(s) may connect" in a.log_text()
    data = write_random(tmp_path / "w.bin", MiB + 1, seed=5)
    cid = a.put(tmp_path / "w.bin")

    b.bootstrap = [a.addr]
    b.start()
    outsider = swarm.add("C", bootstrap=[a.addr])
    wait_connected(b, [a])
    assert b.shoal("get", cid, "-o", str(tmp_path / "b.bin")).code == 0
    assert (tmp_path / "b.bin").read_bytes() == data

    wait_until(lambda: f"refused {outsider.peer_id}: not on the allowlist" in a.log_text(), 15,
               "A to refuse the outsider", on_timeout=lambda: "\n" + a.log_tail())
    assert outsider.peer_id not in a.connected_ids() and a.peer_id not in outsider.connected_ids()
    r = outsider.shoal("get", cid, "-o", str(tmp_path / "c.bin"), timeout=60)
    assert r.code != 0 and not (tmp_path / "c.bin").exists(), r
    assert a.connected_ids() == {b.peer_id}


def test_bad_key_and_allowlist_files_are_one_line_errors(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    bad = tmp_path / "bad.key"
    bad.write_text("/key/swarm/psk/1.0.0/\n/base16/\nnothex\n")
    for args, words in [
        (["--swarm-key", str(bad)], "bad.key"),
        (["--swarm-key", str(tmp_path / "missing.key")], "missing.key"),
        (["--allow-peers", str(bad)], "not a peer id"),
    ]:
        r = run_shoal(repo, "node", "start", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0",
                      *args, timeout=60)
        assert_one_line_error(r)
        assert words in r.err, r.err
        assert "hint: " in r.err, r.err
