"""`shoal get` of a directory writes its files while the blocks arrive.

The fetch requests blocks in the order of the DAG's depth-first walk (the
export's order) even though the roots of the files arrive in any order, so
the export takes every leaf from the fetch's hand-off instead of reading it
back from the store (p2p/exchange/handoff.py). A fetch that fails part way
leaves no tree behind: the files written before the failure are removed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, write_random
from tests.integration.swarm import Swarm, swarm, wait_until  # noqa: F401  (fixture)

MiB = 1 << 20


def _model_dir(root: Path, files: int, size: int) -> Path:
    src = root / "model"
    src.mkdir()
    for i in range(files):
        write_random(src / f"model-{i:05d}-of-{files:05d}.safetensors", size, seed=100 + i)
    (src / "config.json").write_text('{"architectures": ["Test"]}')
    return src


@pytest.mark.timeout(180)
def test_directory_get_hands_every_leaf_to_the_export(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("A")
    b = swarm.add("B", bootstrap=[a.addr])
    src = _model_dir(tmp_path, files=6, size=12 * MiB)
    cid = a.put(src)
    wait_until(lambda: a.peer_id in b.connected_ids(), 30, "B to connect to A")
    out = tmp_path / "out"
    got = b.api("POST", "/v1/get", {"cid": cid, "output": str(out)}).json()
    for path in src.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    # Every block the export needed came from the hand-off, but for the few
    # inner nodes it reads twice (a file's root: once to plan, once to write).
    assert got["fetched_blocks"] > 6 * 12
    assert got["export_handed_off"] >= got["fetched_blocks"] - 8, got
    assert got["export_store_reads"] <= 2 * 8, got


@pytest.mark.timeout(180)
def test_failed_directory_get_leaves_no_tree(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("A")
    b = swarm.add("B", bootstrap=[a.addr])
    src = _model_dir(tmp_path, files=3, size=6 * MiB)
    last = src / "zz-last.bin"
    last.write_bytes(b"the last file, one raw block that no holder has " * 100)
    cid = a.put(src)
    # Drop the last file's block from A: the first files arrive and are
    # written, then the fetch fails.
    victims = [p for p in (a.repo / "blocks").rglob("*.data") if p.read_bytes() == last.read_bytes()]
    assert len(victims) == 1
    victims[0].unlink()
    wait_until(lambda: a.peer_id in b.connected_ids(), 30, "B to connect to A")
    out = tmp_path / "out"
    r = b.shoal("get", cid, "-o", str(out), timeout=120)
    assert_one_line_error(r)
    assert not out.exists(), sorted(out.rglob("*"))
