"""A real node against peers that break the protocol or lie.

What these tests show: garbage frames, malformed messages, unknown types and
versions, unsolicited responses, oversize length prefixes and undecryptable
Noise frames get an ERROR or a closed connection — never a crashed node, and
honest peers are still served afterwards; a holder that sends blocks not
matching their CIDs is caught by verification, its reputation marked, and
the fetch completes from an honest holder (or fails cleanly, storing
nothing, when there is none); hundreds of garbage TCP connections leave the
node alive and serving.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import trio

from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import ErrorCode
from tests.helpers import MANY_NODES, PROJECT_ROOT, assert_one_line_error, shoal_env, write_random
from tests.integration import evil_client
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = [MANY_NODES, pytest.mark.integration]

MiB = 1024 * 1024


def host_port(node: NodeProc) -> tuple[str, int]:
    parts = node.addr.split("/")
    return parts[2], int(parts[4])


def wait_connected(node: NodeProc, peer_ids: set[str], timeout: float = 15) -> None:
    wait_until(lambda: peer_ids <= node.connected_ids(), timeout, f"{node.name} to connect to {peer_ids}")


def get(node: NodeProc, cid: str, out: Path, timeout: float = 60) -> dict[str, Any]:
    r = node.shoal("get", cid, "-o", str(out), "--json", timeout=timeout)
    assert r.code == 0, f"get on {node.name} failed: {r.err}"
    doc: dict[str, Any] = json.loads(r.text)
    return doc


@pytest.mark.timeout(120)
def test_protocol_garbage_never_crashes_the_node(swarm: Swarm, tmp_path: Path) -> None:
    n = swarm.add("N")
    data = write_random(tmp_path / "w.bin", 3 * MiB + 5, seed=21)
    cid = n.put(tmp_path / "w.bin")
    host, port = host_port(n)

    reactions = trio.run(evil_client.run_attacks, host, port, PeerId.from_string(n.peer_id))
    by_name = {r.name: r for r in reactions}
    report = "\n".join(map(str, reactions))

    assert n.running, report + "\n" + n.log_tail()
    # Bad messages are answered with ERROR, and the connection survives a few.
    assert by_name["random frames"].error_codes or by_name["random frames"].closed, report
    malformed = by_name["malformed messages"]
    assert len(malformed.error_codes) == len(evil_client.malformed_payloads(random.Random(0))), report
    assert not malformed.closed, report
    odd = by_name["unknown type and version"]
    assert ErrorCode.UNKNOWN_TYPE in odd.error_codes and ErrorCode.UNSUPPORTED_VERSION in odd.error_codes, report
    assert "Pong" in odd.answered, report
    assert "Pong" in by_name["unsolicited responses"].answered, report
    # Framing errors and floods end the connection.
    for name in ["flood of malformed", "oversize length prefix", "length one over the cap",
                 "zero length frame", "undecryptable noise frame", "garbage before the handshake"]:
        assert by_name[name].closed, f"{name} did not close the connection\n{report}"
    many = by_name["many block requests"]
    assert "BlockMissing" in many.answered or ErrorCode.BUSY in many.error_codes, report

    # Still up, still serving an honest peer.
    assert n.running and n.api("GET", "/v1/id").status_code == 200
    d = swarm.add("D", bootstrap=[n.addr])
    wait_connected(d, {n.peer_id})
    get(d, cid, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert n.running


@pytest.fixture
def evil_holder(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """The corrupt holder as a subprocess; yields (its multiaddr, its log path).

    Extra command-line arguments come from indirect parametrization.
    """
    extra: list[str] = list(getattr(request, "param", []))
    log_path = tmp_path / "evil.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*evil_client_cmd(), "holder", *extra], stdout=subprocess.PIPE, stderr=log,
            env=shoal_env(), cwd=PROJECT_ROOT,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().decode().strip()  # bounded by the test timeout
            assert first.startswith("listening on /ip4/"), first + log_path.read_text()
            addr = first.removeprefix("listening on ")

            def drain() -> None:
                assert proc.stdout is not None
                with open(log_path, "ab") as out:
                    for line in proc.stdout:
                        out.write(line)
                        out.flush()

            threading.Thread(target=drain, daemon=True).start()
            yield addr, log_path
        finally:
            proc.kill()
            proc.wait(timeout=10)
            print("----- evil holder log -----\n" + log_path.read_text(errors="replace")[-3000:])


def evil_client_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "tests.integration.evil_client"]


@pytest.mark.timeout(120)
def test_corrupt_holder_is_caught_and_honest_holder_completes(
        swarm: Swarm, tmp_path: Path, evil_holder: tuple[str, Path]) -> None:
    evil_addr, evil_log = evil_holder
    evil_id = evil_addr.rsplit("/", 1)[1]
    a = swarm.add("A")
    data = write_random(tmp_path / "model.bin", 6 * MiB + 99, seed=31)
    cid = a.put(tmp_path / "model.bin")

    # --lanes 1: the get in V's own process, which asks every holder alike;
    # with lanes, leaves go only to holders with lanes (the evil one has none),
    # and a lying lane is tests/integration/test_laned_get.py's.
    v = swarm.add("V", bootstrap=[evil_addr, a.addr], extra_args=["--lanes", "1"])
    wait_connected(v, {evil_id, a.peer_id})
    doc = get(v, cid, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert doc["holders"] == 2, doc  # the evil peer did claim to hold it
    assert "want-block" in evil_log.read_text(), "the corrupt holder was never asked for a block"
    r = v.shoal("verify")
    assert r.code == 0, r.err
    rec = next(p for p in v.peers() if p["peer_id"] == evil_id)
    assert rec["corrupt"] > 0 and rec["reputation"] < 0.5, rec
    honest = next(p for p in v.peers() if p["peer_id"] == a.peer_id)
    assert honest["corrupt"] == 0 and honest["delivered"] > 0, honest

    # With only the liar to ask, the get fails cleanly and stores nothing.
    w = swarm.add("W", bootstrap=[evil_addr])
    wait_connected(w, {evil_id})
    r = w.shoal("get", cid, "-o", str(tmp_path / "nothing.bin"), timeout=60)
    assert_one_line_error(r)
    assert not (tmp_path / "nothing.bin").exists()
    assert w.block_count() == 0
    r = w.shoal("verify")
    assert r.code == 0, r.err
    rec = next(p for p in w.peers() if p["peer_id"] == evil_id)
    assert rec["corrupt"] > 0, rec
    assert w.running

    # A block whose hash is right but whose dag-pb is garbage: a clean one-line
    # error (not an HTTP 500), and the node stays up.
    bad_root = evil_client.malformed_root_cid()
    r = w.shoal("get", bad_root, "-o", str(tmp_path / "bad.bin"), timeout=60)
    assert_one_line_error(r)
    assert "malformed" in r.err, r.err
    assert w.running and w.api("GET", "/v1/id").status_code == 200


@pytest.mark.timeout(120)
def test_hundreds_of_garbage_connections(swarm: Swarm, tmp_path: Path) -> None:
    n = swarm.add("N")
    data = write_random(tmp_path / "w.bin", 4 * MiB + 3, seed=41)
    cid = n.put(tmp_path / "w.bin")
    d = swarm.add("D", bootstrap=[n.addr])
    wait_connected(d, {n.peer_id})
    host, port = host_port(n)

    opened: list[int] = []
    flood = threading.Thread(target=lambda: opened.append(
        trio.run(evil_client.garbage_connections, host, port, 300, 4.0)), daemon=True)
    flood.start()
    try:
        # While the junk is held open, the API answers and a connected peer is served.
        wait_until(lambda: not flood.is_alive() or n.stats()["connected_peers"] >= 1, 10, "the flood to start")
        get(d, cid, tmp_path / "during.bin")
        assert (tmp_path / "during.bin").read_bytes() == data
    finally:
        flood.join(timeout=60)
    assert not flood.is_alive(), "the garbage connections did not finish"
    assert opened and opened[0] >= 250, opened
    assert n.running, n.log_tail()

    # Afterwards the node accepts new peers again (its connection slots were freed).
    e = swarm.add("E", bootstrap=[n.addr])
    wait_connected(e, {n.peer_id}, timeout=30)
    get(e, cid, tmp_path / "after.bin")
    assert (tmp_path / "after.bin").read_bytes() == data
    assert n.running


def tarpit_max(log: Path) -> int:
    values = [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("tarpit-max ")]
    return max(values, default=0)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("evil_holder", [["--fake-peers", "64"]], indirect=True)
def test_poisoned_peer_exchange_does_not_pile_up_dials(
        swarm: Swarm, evil_holder: tuple[str, Path]) -> None:
    evil_addr, evil_log = evil_holder
    v = swarm.add("V", bootstrap=[evil_addr])
    wait_until(lambda: len(v.api("GET", "/v1/peers").json()) >= 65, 15, "V to learn the 64 made-up peers")
    # Each dial to the tarpit hangs until V's handshake timeout (10 s), while
    # peer exchange runs every 2 s: a node that starts a new dial per round
    # without waiting for the last one holds ~5 dials per fake peer at once.
    wait_until(lambda: tarpit_max(evil_log) >= 16, 15, "V to dial the made-up peers")
    deadline = time.monotonic() + 8  # four exchange rounds, each dial still hanging
    while time.monotonic() < deadline:
        seen = tarpit_max(evil_log)
        assert seen <= 64, f"{seen} concurrent dials to 64 fake peers: dials pile up"
        time.sleep(0.5)
    assert v.running and v.api("GET", "/v1/id").status_code == 200
