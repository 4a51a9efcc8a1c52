"""Hugging Face names across real node processes (issue 14 item 5).

`shoal hf import` on one node; the signed record spreads to connected peers
(offered on connect, pushed on import); trust decides where it resolves;
forged, relayed and malformed records sent by a hostile peer change nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.names.publish import sign
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.wire.messages import Error, ErrorCode, NameAck, NamePublish, Message
from shoal.store.names.book import BOOK_FILE, NameBook
from shoal.store.names.records import NameRecord
from tests.helpers import assert_one_line_error
from tests.integration.evil_client import EvilConnection, _hello
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)
from tests.unit.test_name_records import cid_of, record

pytestmark = pytest.mark.integration


def make_model(folder: Path, weights: bytes) -> Path:
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(b'{"model_type": "tiny"}')
    (folder / "sub" / "model.safetensors.bin").write_bytes(weights)
    return folder


def hf_import(node: NodeProc, folder: Path, repo: str = "org/tiny") -> dict[str, Any]:
    r = node.shoal("hf", "import", str(folder), "--repo", repo, "--json")
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.out)
    assert list(sorted(doc)) == ["cid", "commit", "files", "repo", "revision"]
    return doc


def listing(node: NodeProc) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = node.call("GET", "/v1/hf/ls")
    return rows


def stored_records(node: NodeProc) -> list[NameRecord]:
    """What the node's book holds, trusted or not (read beside the running node, WAL)."""
    with NameBook(node.repo / BOOK_FILE, read_only=True) as book:
        return list(book.records())


@pytest.mark.timeout(150)
def test_names_spread_in_a_private_swarm_and_newer_seq_wins(swarm: Swarm, tmp_path: Path) -> None:
    key_file = tmp_path / "swarm.key"
    key_file.write_bytes(SwarmKey.generate().encode())
    key_file.chmod(0o600)
    a = swarm.add("A", extra_args=["--swarm-key", str(key_file)])
    folder = make_model(tmp_path / "tiny", os.urandom(2 * 1024 * 1024 + 3))
    first = hf_import(a, folder)
    assert [f["path"] for f in first["files"]] == ["config.json", "sub/model.safetensors.bin"]

    # B connects after the import: A offers its records on connect.
    b = swarm.add("B", bootstrap=[a.addr], extra_args=["--swarm-key", str(key_file)])
    rows = wait_until(lambda: listing(b), 20, "B to resolve A's record",
                      on_timeout=lambda: "\n" + b.log_tail())
    assert [(r["repo"], r["cid"], r["commit"], r["publisher"], r["seq"]) for r in rows] == [
        ("org/tiny", first["cid"], first["commit"], a.peer_id, 1)]

    # A re-import with changed content: seq 2, pushed to the connected B, and it wins there.
    (folder / "sub" / "model.safetensors.bin").write_bytes(os.urandom(1024 * 1024))
    second = hf_import(a, folder)
    assert second["cid"] != first["cid"] and second["commit"] != first["commit"]
    rows = wait_until(lambda: [r for r in listing(b) if r["seq"] == 2], 20, "B to take seq 2",
                      on_timeout=lambda: "\n" + b.log_tail())
    assert [(r["cid"], r["commit"]) for r in rows] == [(second["cid"], second["commit"])]
    r = b.shoal("hf", "ls", "--json")
    assert r.code == 0 and [row["cid"] for row in json.loads(r.out)] == [second["cid"]], r


@pytest.mark.timeout(150)
def test_public_swarm_default_trust_resolves_only_own_records(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("A")
    b = swarm.add("B", bootstrap=[a.addr])
    swarm.wait_connected(b, [a.peer_id])
    doc = hf_import(a, make_model(tmp_path / "tiny", b"weights" * 1000))
    wait_until(lambda: [r for r in stored_records(b) if r.cid == doc["cid"]], 20,
               "B to store A's record", on_timeout=lambda: "\n" + b.log_tail())
    assert [r["cid"] for r in listing(a)] == [doc["cid"]], "A resolves its own record"
    assert listing(b) == [], "without a swarm key, B trusts only itself"
    r = b.shoal("hf", "ls", "--json")
    assert r.code == 0 and json.loads(r.out) == []


async def _ask(conn: EvilConnection, msg: NamePublish) -> Message:
    """Send one NamePublish and return the node's answer to it (other traffic skipped)."""
    await conn.send(msg)  # on /shoal/names/1.0.0, opened by the first one
    with trio.fail_after(10):
        while True:
            got = await conn.next_message()
            assert got is not None, "the node closed the connection"
            reply = got[1]
            if reply.request_id == msg.request_id and isinstance(reply, (Error, NameAck)):
                return reply


@pytest.mark.timeout(120)
def test_forged_relayed_and_malformed_records_are_refused(swarm: Swarm) -> None:
    a = swarm.add("A", extra_args=[], start=False)
    config = a.repo / "config.toml"
    config.write_text(config.read_text() + '\n[names]\ntrust = "swarm"\n')  # would resolve any sender's record
    a.start()
    host, port = a.addr.split("/")[2], int(a.addr.split("/")[4])
    evil, other = Identity.generate(), Identity.generate()
    honest = sign(record(signature=b""), evil)
    forged = dataclasses.replace(honest, seq=honest.seq + 1, cid=cid_of(b"another directory"))
    relayed = sign(record(repo="org/relayed", signature=b""), other)

    async def attack() -> list[Message]:
        conn = await EvilConnection.open(host, port, PeerId.from_string(a.peer_id), evil)
        try:
            await conn.send(_hello())
            return [await _ask(conn, NamePublish(rid, data)) for rid, data in (
                (1, forged.encode()), (2, relayed.encode()), (3, b"\x92\x01\x02"),
                (4, honest.encode()), (5, honest.encode()))]
        finally:
            await conn.aclose()

    replies = trio.run(attack)
    assert [(type(r).__name__, getattr(r, "code", None)) for r in replies[:3]] == [
        ("Error", ErrorCode.REFUSED), ("Error", ErrorCode.REFUSED), ("Error", ErrorCode.MALFORMED)]
    assert replies[3:] == [NameAck(4, True), NameAck(5, False)]
    assert stored_records(a) == [honest], "only the honest record was stored"
    assert [r["cid"] for r in listing(a)] == [honest.cid]
    assert a.running, "the node survived"


@pytest.mark.timeout(60)
def test_hf_cli_errors_are_one_line(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("A", start=False)
    folder = make_model(tmp_path / "tiny", b"w")
    (folder / "leak").symlink_to("/etc/hostname")
    for args in (["hf", "import", str(folder), "--repo", "org/../evil"],
                 ["hf", "import", str(folder), "--repo", "noslash"],
                 ["hf", "import", str(tmp_path / "absent"), "--repo", "org/x"],
                 ["hf", "import", str(folder), "--repo", "org/x"],
                 ["hf", "import", str(folder), "--repo", "org/x", "--revision", "a//b"]):
        assert_one_line_error(a.shoal(*args))
    a.start()
    r = a.shoal("hf", "import", str(folder), "--repo", "org/x")
    assert_one_line_error(r)
    assert "outside" in r.err
    assert listing(a) == []
