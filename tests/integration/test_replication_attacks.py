"""Attacks on replication, against real node processes (issue 12, items 4, 5, 10, 11, 12).

A hostile peer (tests/integration/evil_replication.py) speaks the real
protocol to a real `shoal node`:
- item 4: an offer whose DAG is far bigger than the size it declares, and
  one whose commitment is wrong: the node pulls no more than its byte
  budget, refuses, and keeps neither a pin nor the blocks;
- item 5: forty small offers of DAGs declaring an exabyte, and ten that
  declare 1 GiB from 1 MiB: all refused quickly, block requests still
  served meanwhile, SIGTERM stops the node within 10 s;
- item 10: another peer's object placed with a holder list the owner never
  signed (written by the requester, or the owner's list replayed by a
  stranger): refused, and the stranger cannot audit;
- item 11: a holder that answers every audit "busy" is a proven loss after a
  bounded number of audits, not a timeout;
- item 12: an audit count whose proof could not fit a frame is refused; the
  count at the cap gets a proof that fits and verifies.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.wire import limits as L
from shoal.p2p.replication.signed import Offer
from shoal.p2p.replication.audit import _check
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import (
    AuditChallenge, AuditProof, Block, Error, ErrorCode, StoreResponse, WantBlock,
)
from shoal.store.ipld.cid import parse_cid
from shoal.store.proofs.manifest import Manifest
from shoal.store.proofs.commitment import commit
from shoal.store.proofs.proof import max_challenges
from tests.helpers import MANY_NODES, random_bytes
from tests.integration.evil_replication import (
    EvilPeer, bomb_dag, fake_commitment, file_dag, manifest_for, signed_offer,
)
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = [MANY_NODES, pytest.mark.integration]

MiB = 1 << 20


def target(node: NodeProc) -> tuple[str, int, PeerId]:
    parts = node.addr.split("/")
    return parts[2], int(parts[4]), PeerId.from_string(parts[6])


def pinned(node: NodeProc) -> set[str]:
    r = node.shoal("pin", "ls", "--json")
    assert r.code == 0, r.err
    doc: Any = json.loads(r.text)
    rows = doc if isinstance(doc, list) else doc.get("pins", [])
    return {row["cid"] if isinstance(row, dict) else str(row) for row in rows}


def refused(answer: Any) -> bool:
    return isinstance(answer, StoreResponse) and not answer.accepted


# -- item 4: disk fill past --quota -------------------------------------------------------


@pytest.mark.timeout(120)
def test_offer_bigger_than_declared_is_cut_off_and_leaves_nothing(swarm: Swarm, tmp_path: Path) -> None:
    victim = swarm.add("V", extra_args=["--quota", "4M"])
    base_blocks = victim.block_count()
    evil = EvilPeer()
    big = file_dag(random_bytes(48 * MiB, 41))  # 48 MiB of DAG ...
    small = file_dag(random_bytes(3 * MiB, 42))  # ... and an honest size with a wrong commitment
    evil.add(big)
    evil.add(small)
    answers: dict[str, Any] = {}

    async def attack() -> None:
        async with trio.open_nursery() as nursery:
            await evil.connect(*target(victim), nursery)
            # ... declared as 1 MiB: within the 4 MiB quota.
            m = manifest_for(evil.identity, big.root, fake_commitment(MiB, 1))
            answers["big"] = await evil.offer(big.root, m, signed_offer(m, evil.identity, [evil.peer_id]))
            answers["served_big"] = evil.served_bytes
            m = manifest_for(evil.identity, small.root, fake_commitment(3 * MiB, 2))
            answers["small"] = await evil.offer(small.root, m, signed_offer(m, evil.identity, [evil.peer_id]))
            nursery.cancel_scope.cancel()

    trio.run(attack)
    assert refused(answers["big"]), answers["big"]
    assert refused(answers["small"]), answers["small"]
    # The pull stopped at the byte budget (2 MiB and a bit), give or take the
    # requests already in flight: far from the 48 MiB the old node took.
    assert answers["served_big"] < 24 * MiB, answers["served_big"]
    # Neither refusal left a pin or a block behind (no gc needed).
    assert str(big.root) not in pinned(victim) and str(small.root) not in pinned(victim)
    assert victim.block_count() == base_blocks, victim.log_tail()
    assert victim.stop() == 0


# -- item 5: exabyte DAGs pinning worker threads -------------------------------------------


@pytest.mark.timeout(180)
def test_exabyte_offers_are_refused_fast_blocks_still_served_and_sigterm_stops(
        swarm: Swarm, tmp_path: Path) -> None:
    victim = swarm.add("V")
    (tmp_path / "mine.bin").write_bytes(random_bytes(300_000, 51))
    mine = parse_cid(victim.put(tmp_path / "mine.bin"))
    evil = EvilPeer()
    bombs = [bomb_dag(seed) for seed in range(40)]  # 1 EiB each, from 5 blocks
    gib_bombs = [bomb_dag(1000 + seed, levels=1) for seed in range(10)]  # 1 GiB each, from 2 blocks
    for dag in bombs + gib_bombs:
        evil.add(dag)
    answers: list[Any] = []
    timings: dict[str, float] = {}

    async def attack() -> None:
        async with trio.open_nursery() as outer:
            await evil.connect(*target(victim), outer)

            async def one(dag: Any, declared: int) -> None:
                m = manifest_for(evil.identity, dag.root, fake_commitment(declared, len(answers)))
                answers.append(await evil.offer(dag.root, m, signed_offer(m, evil.identity, [evil.peer_id]),
                                                timeout=90))

            t0 = time.monotonic()
            async with trio.open_nursery() as nursery:
                for dag in bombs:
                    nursery.start_soon(one, dag, MiB)  # the manifest says 1 MiB, the DAG 1 EiB
                for dag in gib_bombs:
                    nursery.start_soon(one, dag, 1 << 30)  # honest size, 1,024 x one block
                await trio.sleep(0.5)
                # While they are in flight, the node still serves its own blocks.
                t1 = time.monotonic()
                replies = await evil.request(lambda rid: WantBlock(rid, (bytes(mine),)), timeout=10)
                timings["block"] = time.monotonic() - t1
                assert any(isinstance(r, Block) for r in replies), replies
            timings["all"] = time.monotonic() - t0
            outer.cancel_scope.cancel()

    trio.run(attack)
    assert len(answers) == 50 and all(refused(a) for a in answers), answers
    assert timings["all"] < 60, timings
    t0 = time.monotonic()
    code = victim.stop(timeout=10)
    assert code == 0 and time.monotonic() - t0 < 10, victim.log_tail()


@pytest.mark.timeout(120)
def test_sigterm_during_a_flood_of_offers_stops_within_10s(swarm: Swarm, tmp_path: Path) -> None:
    victim = swarm.add("V")
    evil = EvilPeer()
    # 2 GiB declared, honestly, by a file linking one 2 MiB block 1,024 times:
    # hashing each would keep a thread busy for seconds, forty of them for minutes.
    bombs = [(bomb_dag(2000 + seed, levels=1, leaf_size=2 * MiB), 2 << 30) for seed in range(40)]
    # And 128 MiB from one 2 MiB block, within the repetition a holder accepts:
    # these are really hashed (two at a time) when the SIGTERM comes.
    bombs += [(bomb_dag(3000 + seed, levels=1, fanout=64, leaf_size=2 * MiB), 128 * MiB) for seed in range(40)]
    for dag, _ in bombs:
        evil.add(dag)

    async def attack() -> None:
        async with trio.open_nursery() as nursery:
            await evil.connect(*target(victim), nursery)

            async def one(dag: Any, declared: int) -> None:
                m = manifest_for(evil.identity, dag.root, fake_commitment(declared, 7))
                try:
                    await evil.offer(dag.root, m, signed_offer(m, evil.identity, [evil.peer_id]), timeout=60)
                except (trio.TooSlowError, AssertionError):
                    pass  # the node went away: that is the point

            for dag, declared in bombs:
                nursery.start_soon(one, dag, declared)
            await trio.sleep(1.0)  # the old node is hashing in every thread by now; the new one in two
            assert victim.proc is not None
            victim.proc.terminate()
            state["sent"] = time.monotonic()
            with trio.move_on_after(15):
                while victim.proc.poll() is None:
                    await trio.sleep(0.1)
            state["stopped"] = time.monotonic()
            nursery.cancel_scope.cancel()

    state: dict[str, float] = {}
    trio.run(attack)
    assert victim.proc is not None
    assert victim.proc.poll() == 0, victim.log_tail()
    assert state["stopped"] - state["sent"] < 10, (state, victim.log_tail())
    assert "Traceback" not in victim.log_text()


# -- item 10: holder lists written by the requester ----------------------------------------


def repl_row(node: NodeProc, cid: str, column: str) -> bytes:
    db = sqlite3.connect(f"file:{node.repo / 'index.sqlite'}?mode=ro", uri=True)
    try:
        row = db.execute(f"SELECT {column} FROM repl_objects WHERE cid = ?", (cid,)).fetchone()
    finally:
        db.close()
    assert row is not None and row[0], (cid, column)
    return bytes(row[0])


@pytest.mark.timeout(150)
def test_unsigned_or_replayed_holder_lists_are_refused(swarm: Swarm, tmp_path: Path) -> None:
    owner = swarm.add("O", extra_args=["--audit-interval", "3600"])
    holder = swarm.add("H", bootstrap=[owner.addr], extra_args=["--audit-interval", "3600"])
    data = random_bytes(2 * MiB + 5, 61)
    (tmp_path / "w.bin").write_bytes(data)
    r = owner.shoal("put", str(tmp_path / "w.bin"), "--replicas", "2", "--json")
    assert r.code == 0, r.err
    cid = json.loads(r.text)["cid"]

    def placed() -> bool:
        doc = owner.api("GET", f"/v1/status?cid={cid}").json()
        return any(h["peer_id"] == holder.peer_id and h["state"] == "ok" for h in doc.get("holders", []))

    wait_until(placed, 60, "the replica on H", on_timeout=swarm.logs)
    manifest_bytes = repl_row(owner, cid, "manifest")
    owners_offer = repl_row(holder, cid, "offer")  # what the owner signed for H
    manifest = Manifest.decode(manifest_bytes)
    victim = swarm.add("V")  # never heard of the object
    evil = EvilPeer()
    dag = file_dag(data)
    assert str(dag.root) == cid
    evil.add(dag)
    owner_id = PeerId.from_string(owner.peer_id)
    answers: dict[str, Any] = {}

    async def attack() -> None:
        async with trio.open_nursery() as nursery:
            await evil.connect(*target(victim), nursery)
            ids = (owner_id.to_bytes(), evil.peer_id.to_bytes())
            # 1. The holder list written by the requester (the old offer format).
            v1 = Offer(manifest_bytes, 2, ids).encode()
            answers["v1"] = await evil.offer(dag.root, manifest, v1)
            # 2. The same list "signed", but with the requester's key.
            v2 = Offer(manifest_bytes, 2, ids).with_owner_sig(time.time_ns() // 1000, evil.identity.sign).encode()
            answers["self-signed"] = await evil.offer(dag.root, manifest, v2)
            # 3. The owner's real signed list, replayed by someone not on it.
            answers["replayed"] = await evil.offer(dag.root, manifest, owners_offer)
            # Nor may it audit what it could not place.
            replies = await evil.request(lambda rid: AuditChallenge(rid, bytes(dag.root), b"\x07" * 32, 8, 5000))
            answers["audit"] = replies[0] if replies else None
            nursery.cancel_scope.cancel()
        # The same stranger rewriting the list of the real holder H.
        async with trio.open_nursery() as nursery:
            h_evil = EvilPeer(identity=evil.identity, blocks=evil.blocks)
            await h_evil.connect(*target(holder), nursery)
            rewritten = Offer(manifest_bytes, 2, (owner_id.to_bytes(), h_evil.peer_id.to_bytes(),
                                                  PeerId.from_string(holder.peer_id).to_bytes())).encode()
            answers["rewrite"] = await h_evil.offer(dag.root, manifest, rewritten)
            nursery.cancel_scope.cancel()

    trio.run(attack)
    assert refused(answers["v1"]) and "signed by the owner" in answers["v1"].reason, answers
    assert refused(answers["self-signed"]) and "signed by the owner" in answers["self-signed"].reason, answers
    assert refused(answers["replayed"]) and "neither" in answers["replayed"].reason, answers
    audit = answers["audit"]
    assert isinstance(audit, Error) and audit.code in (ErrorCode.NOT_FOUND, ErrorCode.REFUSED), audit
    assert refused(answers["rewrite"]), answers["rewrite"]
    assert cid not in pinned(victim)
    doc = holder.json("status", cid)
    assert str(evil.peer_id) not in doc["known_holders"], doc


# -- item 11: "busy" instead of NOT_FOUND ---------------------------------------------------


@pytest.mark.timeout(150)
def test_holder_answering_busy_to_every_audit_is_a_proven_loss(swarm: Swarm, tmp_path: Path) -> None:
    owner = swarm.add("O", extra_args=["--audit-interval", "1"])
    evil = EvilPeer(holder_mode=True)
    (tmp_path / "w.bin").write_bytes(random_bytes(MiB + 11, 71))
    state: dict[str, Any] = {}

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await evil.connect(*target(owner), nursery)
            await trio.sleep(1.0)  # the owner learns our Hello (free space) first
            r = await trio.to_thread.run_sync(
                lambda: owner.shoal("put", str(tmp_path / "w.bin"), "--replicas", "2", "--json"))
            assert r.code == 0, r.err
            cid = json.loads(r.text)["cid"]
            state["cid"] = cid
            with trio.move_on_after(90):
                while True:
                    doc = await trio.to_thread.run_sync(
                        lambda: owner.api("GET", f"/v1/status?cid={cid}").json())
                    row = next((h for h in doc.get("holders", []) if h["peer_id"] == str(evil.peer_id)), None)
                    state["row"] = row
                    if row is not None and row["proven_loss"]:
                        break
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()

    trio.run(run)
    row = state.get("row")
    assert evil.stores_taken, "the owner never placed a replica on the evil holder"
    assert row is not None and row["state"] == "lost" and row["proven_loss"], (row, owner.log_tail())
    # Bounded: three busy audits, each asked three times.
    assert evil.audits_seen <= 3 * 3 + 3, evil.audits_seen


# -- item 12: audit counts whose proof cannot fit a frame ---------------------------------


@pytest.mark.timeout(120)
def test_audit_count_over_the_proof_cap_is_refused_and_the_cap_fits(swarm: Swarm, tmp_path: Path) -> None:
    victim = swarm.add("V")
    evil = EvilPeer()
    data = random.Random(81).randbytes(32 * MiB)  # 1,024 challenges: a ~2.5 MB proof
    dag = file_dag(data)
    evil.add(dag)
    commitment = commit(data)
    victim_id = PeerId.from_string(victim.peer_id)
    cap = max_challenges(commitment, L.MAX_PROOF_BYTES, len(victim_id.to_bytes()))
    assert 500 < cap < L.MAX_AUDIT_CHALLENGES
    answers: dict[str, Any] = {}

    async def attack() -> None:
        async with trio.open_nursery() as nursery:
            await evil.connect(*target(victim), nursery)
            m = manifest_for(evil.identity, dag.root, commitment)
            answers["store"] = await evil.offer(dag.root, m, signed_offer(m, evil.identity, [evil.peer_id]))
            for name, count, nonce in (("over", L.MAX_AUDIT_CHALLENGES, b"\x01" * 32), ("at", cap, b"\x02" * 32)):
                replies = await evil.request(
                    lambda rid: AuditChallenge(rid, bytes(dag.root), nonce, count, 30_000), timeout=40)
                answers[name] = (replies[0] if replies else None, nonce)
            nursery.cancel_scope.cancel()

    trio.run(attack)
    assert isinstance(answers["store"], StoreResponse) and answers["store"].accepted, answers["store"]
    over, _ = answers["over"]
    assert isinstance(over, Error) and over.code == ErrorCode.REFUSED and str(cap) in over.message, over
    at, nonce = answers["at"]
    assert isinstance(at, AuditProof), at
    assert len(at.proof) <= L.MAX_PROOF_BYTES
    assert _check(commitment, nonce, victim_id, cap, at) == ""
