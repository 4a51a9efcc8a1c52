"""Bounds on what a replica and an audit can cost (issue 12, items 4, 5, 12).

- The challenge cap: `max_challenges` is derived from the proof encoding
  (`max_proof_bytes`) and the wire's MAX_PROOF_BYTES; at the cap every proof
  fits, one more challenge could overflow; an AuditProof of the largest
  allowed proof fits one frame.
- Work a hostile DAG can ask for: a file declaring far more bytes than its
  distinct blocks hold is measured without reading the declared bytes, and a
  commitment pass stops on its cancel flag and on its length bound, leaving
  no temp file.
- `Holder.run_heavy`: a cancelled caller stops the thread's work within a
  step, and the work never holds more than HEAVY_THREADS threads.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import trio

from shoal.p2p.wire import codec
from shoal.p2p.wire import limits as L
from shoal.store.proofs.commit_files import build_commitment, committed_length, stored_dag_bytes
from shoal.p2p.replication.holder import HEAVY_THREADS, Holder, pull_budget
from shoal.p2p.wire.messages import AuditProof
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.cancel import Cancelled
from shoal.store.ipld.cid import cid_from_bytes
from shoal.store.errors import StoreError
from shoal.store.dag.importer import import_bytes
from shoal.store.proofs.challenge import MAX_K
from shoal.store.proofs.commitment import Commitment, MerkleTree, check_stop, reduce_nodes
from shoal.store.proofs.proof import make_proof, max_challenges, max_proof_bytes, prove_indices
from tests.integration.evil_replication import bomb_dag

HOLDER = bytes(range(38))  # an Ed25519 peer id's length


def tree_of(n: int, seg: int = 2048, seed: int = 0) -> MerkleTree:
    rng = random.Random(seed)
    leaves = [rng.randbytes(32) for _ in range(n)]
    return MerkleTree(leaves, Commitment(reduce_nodes(leaves), n * seg - 7, seg))


@pytest.mark.parametrize("n", [1, 7, 1024, 4096, 1 << 16])
def test_at_the_challenge_cap_every_proof_fits_and_one_more_may_not(n: int) -> None:
    tree = tree_of(n, seed=n)
    c = tree.commitment
    cap = max_challenges(c, L.MAX_PROOF_BYTES, len(HOLDER))
    assert 1 <= cap <= MAX_K
    assert max_proof_bytes(c, cap, len(HOLDER)) <= L.MAX_PROOF_BYTES
    if cap < MAX_K:
        assert max_proof_bytes(c, cap + 1, len(HOLDER)) > L.MAX_PROOF_BYTES

    def read(i: int) -> bytes:
        return b"\x00" * c.segment_length(i)

    rng = random.Random(n)
    for _ in range(3):
        proof = make_proof(read, tree, rng.randbytes(32), HOLDER, cap)
        assert len(proof.encode()) <= max_proof_bytes(c, cap, len(HOLDER)) <= L.MAX_PROOF_BYTES
    # The shape no nonce is likely to give but the bound must still cover:
    # every index first in its group of 4 (its prior leaf in the group
    # before), spread as far apart as the tree allows.
    m = min(cap, n)
    spread = sorted({(i * n // m) // 4 * 4 for i in range(m)})
    proof = prove_indices(read, tree, spread, rng.randbytes(32), HOLDER)
    assert len(proof.encode()) <= max_proof_bytes(c, len(spread), len(HOLDER))


def test_the_default_audit_fits_big_objects_and_1024_did_not() -> None:
    """k = 66 is far under the cap even at 2^64 bytes; 1,024 challenges of a
    1 GiB object (the issue's 2.2 MB proof) is over it, so it is capped."""
    huge = Commitment(b"\x01" * 32, (1 << 64) - 1, 2048)
    assert max_challenges(huge, L.MAX_PROOF_BYTES, len(HOLDER)) > 66
    gib = Commitment(b"\x01" * 32, 1 << 30, 2048)
    assert max_proof_bytes(gib, L.MAX_AUDIT_CHALLENGES, len(HOLDER)) > L.MAX_PROOF_BYTES
    assert 688 <= max_challenges(gib, L.MAX_PROOF_BYTES, len(HOLDER)) < L.MAX_AUDIT_CHALLENGES


def test_an_audit_proof_at_the_proof_cap_fits_one_frame() -> None:
    msg = AuditProof(L.MAX_REQUEST_ID, b"\x01" * L.MAX_CID_BYTES, b"\x02" * 32, b"\x03" * L.MAX_PROOF_BYTES,
                     b"\x04" * 64)
    assert len(codec.encode(msg)) <= L.MAX_FRAME_BYTES


def test_an_exabyte_file_of_five_blocks_is_measured_without_reading_it() -> None:
    dag = bomb_dag(3)
    store = MemoryBlockstore()
    for raw, data in dag.blocks.items():
        store.put(cid_from_bytes(raw), data)
    assert committed_length(store, dag.root) == 1 << 60
    stored = stored_dag_bytes(store, dag.root)
    assert stored == sum(len(b) for b in dag.blocks.values()) < 2 << 20
    with pytest.raises(Cancelled):
        stored_dag_bytes(store, dag.root, should_stop=lambda: True)


def test_commitment_pass_stops_on_its_flag_and_on_its_length(tmp_path: Path) -> None:
    store = MemoryBlockstore()
    root = import_bytes(random.Random(5).randbytes(3 << 20), store).cid
    calls = {"n": 0}

    def stop_after_one() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(Cancelled):
        build_commitment(store, tmp_path, root, should_stop=stop_after_one)
    with pytest.raises(StoreError, match="more than"):
        build_commitment(store, tmp_path, root, max_length=(1 << 20) + 5)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no temp file, no leaf file left
    assert build_commitment(store, tmp_path, root, max_length=3 << 20).length == 3 << 20
    bomb = bomb_dag(4)
    for raw, data in bomb.blocks.items():
        store.put(cid_from_bytes(raw), data)
    started = time.monotonic()
    with pytest.raises(StoreError, match="more than"):
        build_commitment(store, tmp_path, bomb.root, max_length=1 << 20)
    assert time.monotonic() - started < 5


def test_pull_budget_is_the_declared_size_and_a_little() -> None:
    assert pull_budget(0) == 1 << 20
    assert (1 << 30) < pull_budget(1 << 30) <= (1 << 30) + (1 << 20) + (1 << 30) // 64


class _Node:
    pass


async def test_run_heavy_stops_its_thread_when_cancelled_and_caps_the_threads() -> None:
    holding = Holder(_Node(), None)  # type: ignore[arg-type]
    running = {"now": 0, "max": 0}
    lock = threading.Lock()
    stopped: list[bool] = []

    def spin(should_stop: object) -> None:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        try:
            while True:
                check_stop(should_stop)  # type: ignore[arg-type]
                time.sleep(0.001)
        except Cancelled:
            stopped.append(True)
            raise
        finally:
            with lock:
                running["now"] -= 1

    started = trio.current_time()
    with trio.move_on_after(0.5):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(holding.run_heavy, spin)
    assert trio.current_time() - started < 2.0
    assert running["now"] == 0  # every thread has returned: nothing runs on
    assert running["max"] == HEAVY_THREADS
    assert len(stopped) == HEAVY_THREADS  # the others never got a thread
