"""The node's event loop keeps running while a large put records its index rows.

Issue 12 item 15: a put of many blocks ends in one index transaction that
records every block of the pin. SQLite calls made on the trio loop used to
share the writer's connection (and its lock), so a read on the loop (an API
status call, the repair loop's scan) waited for that whole transaction and
every peer and API request stalled with it. The node measures its own loop
latency (`shoal node status --json`, worst stall over the last minute); this
test drives a put of tens of thousands of blocks through a real node while
a client keeps asking for a status that reads the index, and requires the
worst stall to stay under the bound the issue demands.

The probe measures wall-clock lateness, so it also counts the time the
machine did not run the node at all: on CI's 2 cores the other pytest-xdist
worker (or anything else) shares the CPU, and the test failed on that alone.
A bare reference probe in its own process runs through the same put and
measures what the machine imposed on any process; the node may stall by the
bound plus that, not more. A node that blocks its own loop (a read waiting
for the writer's transaction) still fails: the reference sees none of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import MANY_NODES
from tests.integration.swarm import Swarm, swarm  # noqa: F401  (fixture)

pytestmark = [MANY_NODES, pytest.mark.timeout(240)]

FILES = 100_000
"""One block per tiny file (plus the HAMT shards): a pin of ~30k block keys,
recorded in one transaction that takes a good fraction of a second."""

MAX_STALL_S = 0.25  # the bound issue 12 demands

REFERENCE_PROBE = """
import select, sys, time
worst = 0.0
while True:  # the node's probe, bare: wake every 50 ms, record how late; stop at stdin's EOF
    start = time.monotonic()
    if select.select([sys.stdin], [], [], 0.05)[0]:
        break
    worst = max(worst, time.monotonic() - start - 0.05)
print(worst)
"""
"""How late the machine woke a process that does nothing else (seconds)."""


def _many_files(root: Path, count: int) -> Path:
    top = root / "many"
    top.mkdir()
    for i in range(count):
        (top / f"f{i:06d}").write_bytes(b"loop-probe %d\n" % i)
    return top


def test_worst_loop_stall_during_a_large_put_stays_small(swarm: Swarm, tmp_path: Path) -> None:  # noqa: F811
    node = swarm.add("a")
    small = tmp_path / "small.txt"
    small.write_bytes(b"an object whose status reads the index\n")
    small_cid = node.put(small)
    status = node.json("node", "status")
    assert status["peer_id"] == node.peer_id
    assert status["loop"]["window_s"] == 60 and status["loop"]["samples"] > 0

    source = _many_files(tmp_path, FILES)
    put = node.popen("put", str(source), "--quiet")
    polled: list[int] = []
    stop = threading.Event()

    def poll_status() -> None:
        # Index reads on the node, one after another, for as long as the put runs.
        while not stop.is_set():
            resp = node.api("GET", f"/v1/status?cid={small_cid}", timeout=60)
            polled.append(resp.status_code)

    poller = threading.Thread(target=poll_status, daemon=True)
    poller.start()
    reference = subprocess.Popen([sys.executable, "-c", REFERENCE_PROBE], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
    try:
        out, err = put.communicate(timeout=180)
    finally:
        stop.set()
        ref_out, _ = reference.communicate(timeout=30)  # EOF on its stdin ends it
        poller.join(timeout=60)
        if put.poll() is None:
            put.kill()
            put.wait()
    machine_stall = float(ref_out)
    assert put.returncode == 0, err.decode(errors="replace")
    root = out.decode().strip()
    assert root.startswith("bafy"), out
    assert polled and set(polled) == {200}, polled

    status = node.json("node", "status")
    loop = status["loop"]
    assert loop["samples"] > 0
    assert loop["worst_stall_s"] < MAX_STALL_S + machine_stall, (
        f"the event loop stalled {loop['worst_stall_s']:.3f}s during a put of {FILES} blocks "
        f"({len(polled)} status reads meanwhile; a bare process was woken at most {machine_stall:.3f}s late): "
        f"{json.dumps(loop)}")
    assert node.json("status", root)["role"] == "local"  # the put really landed in the index
