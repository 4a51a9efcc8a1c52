"""A `get` through a node whose export is refused (here `--max-size`) must
stop fetching at once: the export and the fetch run side by side, and the
request used to wait for the whole DAG to arrive (and be stored, unpinned)
before it answered with the refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, write_random
from tests.integration.swarm import Swarm, swarm, wait_until  # noqa: F401  (fixture)

MiB = 1 << 20
SIZE = 128 * MiB


@pytest.mark.timeout(180)
def test_refused_export_stops_the_fetch(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("A")
    b = swarm.add("B", bootstrap=[a.addr])
    write_random(tmp_path / "weights.bin", SIZE, seed=12)
    cid = a.put(tmp_path / "weights.bin")
    wait_until(lambda: a.peer_id in b.connected_ids(), 30, "B to connect to A")
    out = tmp_path / "out.bin"
    r = b.shoal("get", cid, "-o", str(out), "--max-size", "1M", timeout=120)
    assert_one_line_error(r)
    assert not out.exists()
    received = b.stats()["received_bytes"]
    assert received < SIZE // 2, f"B fetched {received} bytes for a get it had refused"
