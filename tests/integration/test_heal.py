"""Issue 12 A3 against real processes: a corrupt block is named by its CID,
moved aside by `verify --repair`, restored by a re-put offline or from a peer
through a node, and a node's own read of it falls back to a peer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.store.ipld.cid import block_key, parse_cid
from tests.helpers import run_shoal, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def leaf_files(repo: Path) -> list[Path]:
    """The 1 MiB raw-leaf block files of the repo, in a stable order."""
    return sorted(p for p in (repo / "blocks").rglob("*.data") if p.stat().st_size == MiB)


def flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # same size: only re-hashing tells
    path.write_bytes(bytes(raw))


def key_of(path: Path) -> str:
    return path.name[: -len(".data")]


@pytest.mark.timeout(120)
def test_offline_verify_names_cids_repair_quarantines_and_reput_heals(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    src = tmp_path / "model.bin"
    data = write_random(src, 3 * MiB + 5, seed=4)
    r = run_shoal(repo, "put", str(src), "--quiet")
    assert r.code == 0, r.err
    cid = r.text.strip()
    victim = leaf_files(repo)[0]
    flip(victim)

    r = run_shoal(repo, "put", str(src), "--quiet")  # a re-put must not dedupe against the bad copy
    assert r.code == 0 and r.text.strip() == cid
    r = run_shoal(repo, "verify", "--json")
    assert r.code == 0, r.text  # healed by the re-put
    flip(victim)

    r = run_shoal(repo, "verify", "--json")
    assert r.code == 1
    doc = json.loads(r.text)
    (named,) = doc["corrupt_blocks"]
    assert block_key(parse_cid(named)) == key_of(victim)  # a CID, not the flatfs key
    assert named.startswith("b") and named != key_of(victim)

    r = run_shoal(repo, "verify", "--repair")
    assert r.code == 1
    assert f"corrupt block: {named} (moved to quarantine)" in r.text
    assert "re-put" in r.err and "Traceback" not in r.err
    assert not victim.exists() and (repo / "quarantine" / victim.name).exists()
    assert run_shoal(repo, "put", str(src), "--quiet").code == 0
    assert run_shoal(repo, "verify").code == 0
    out = tmp_path / "out.bin"
    assert run_shoal(repo, "get", cid, "-o", str(out)).code == 0
    assert out.read_bytes() == data


@pytest.mark.timeout(180)
def test_node_read_of_a_corrupt_block_falls_back_to_a_peer_and_repair_fetches(
        swarm: Swarm, tmp_path: Path) -> None:
    owner, peer = swarm.chain(["owner", "peer"])
    wait_until(lambda: owner.peer_id in peer.connected_ids(), 15, "peer connected to owner")
    wait_until(lambda: peer.peer_id in owner.connected_ids(), 15, "owner connected to peer")
    src = tmp_path / "model.bin"
    data = write_random(src, 4 * MiB, seed=5)
    cid = owner.put(src)
    r = peer.shoal("pin", "add", cid)
    assert r.code == 0, r.err
    first, second, *_ = leaf_files(owner.repo)

    flip(first)  # the owner's `get` reads it, finds it bad, and takes the peer's copy
    out = tmp_path / "out.bin"
    r = owner.shoal("get", cid, "-o", str(out))
    assert r.code == 0, r.err
    assert out.read_bytes() == data
    assert (owner.repo / "quarantine" / first.name).exists()

    flip(second)  # same through `cat`
    r = owner.shoal("cat", cid)
    assert r.code == 0, r.err
    assert r.out == data

    third = leaf_files(owner.repo)[2]
    flip(third)  # `verify --repair` with the node running: aside, then fetched from the peer
    r = owner.shoal("verify", "--repair", "--json")
    assert r.code == 0, r.text + r.err
    doc = json.loads(r.text)
    assert doc["ok"] and doc["repaired_pins"] == [cid] and doc["incomplete_pins"] == []
    assert [block_key(parse_cid(c)) for c in doc["quarantined"]] == [key_of(third)]
    r = owner.shoal("verify", "--json")
    assert r.code == 0 and json.loads(r.text)["corrupt_blocks"] == []
