"""Proof-of-storage audits on the wire: challenge a holder, answer a challenge.

Auditor (`challenge`): a fresh 32-byte nonce, k = shoal.store.proofs.challenge.default_k()
challenges (66: a 10 % loss is caught with >= 99.9 % odds per audit), and a
deadline of `BASE_DEADLINE_S` plus `SLACK_S_PER_GIB` per GiB of the object.
The answer must decode, be signed by the holder's key, name the same nonce
and root, and recompute the committed root from the challenged segments;
anything else is a proven loss (`Outcome.INVALID`), as is the holder saying
it does not have the data (ERROR not-found). Silence, a broken connection
or ERROR internal is a timeout (`Outcome.TIMEOUT`): maybe transient. ERROR
busy is asked again (`BUSY_RETRIES` times, a fresh nonce each time, backing
off); still busy, the audit ends `Outcome.BUSY`, which the policy counts
toward a proven loss (shoal.p2p.replication.repair_policy): a holder must not be able to hide
a loss behind "busy". k is capped per object so that the worst-case proof
fits one AuditProof (`shoal.store.proofs.proof.max_challenges`).

Prover (`prove`): runs in a worker thread; reads only the challenged
segments through the hash-checking blockstore and takes the Merkle nodes
from the leaf-hash file. A missing or corrupt block raises (there is no
honest answer then) and the caller replies ERROR not-found.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
import trio

from shoal.store.persist.blockstore import Blockstore
from shoal.store.ipld.cid import CID
from shoal.store.errors import StoreError
from shoal.store.proofs.challenge import default_k
from shoal.store.proofs.commitment import Commitment, NodeSource
from shoal.store.proofs.proof import Proof, make_proof, max_challenges, verify_proof

from shoal.p2p.wire import limits as L
from shoal.store.proofs.commit_files import object_bytes
from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import AuditChallenge, AuditProof, ErrorCode
from shoal.p2p.replication.repair_policy import Outcome

__all__ = ["AuditResult", "challenge", "prove", "deadline_for", "DEFAULT_K"]

DEFAULT_K = default_k()  # 66
BASE_DEADLINE_S = 5.0
SLACK_S_PER_GIB = 2.0  # reading k blocks is fast; a cold leaf file costs ~0.3 s/GiB to load
GiB = 1 << 30
BUSY_RETRIES = 2  # asked three times in all within one audit
BUSY_BACKOFF_S = 1.0  # then 2 s: an honest holder's in-flight burst is long over


@dataclass(frozen=True)
class AuditResult:
    peer_id: str
    outcome: Outcome
    challenged: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def as_json(self) -> dict[str, object]:
        return {"peer_id": self.peer_id, "ok": self.ok, "outcome": self.outcome.value,
                "challenged": self.challenged, "error": self.error or None}


def deadline_for(size: int) -> float:
    """Seconds a holder gets to answer for an object of `size` bytes."""
    return min(L.MAX_AUDIT_DEADLINE_MS / 1000, BASE_DEADLINE_S + SLACK_S_PER_GIB * size / GiB)


async def challenge(conn: PeerConnection | None, peer: PeerId, cid: CID, commitment: Commitment,
                    size: int, k: int = DEFAULT_K, busy_retries: int = BUSY_RETRIES,
                    busy_backoff: float = BUSY_BACKOFF_S) -> AuditResult:
    """Audit `peer` once for `cid`; never raises for anything the peer does."""
    who = str(peer)
    if conn is None:
        return AuditResult(who, Outcome.TIMEOUT, 0, "unreachable")
    k = max(1, min(k, max_challenges(commitment, L.MAX_PROOF_BYTES, len(peer.to_bytes()))))
    deadline = deadline_for(size)
    root = bytes(cid)
    for attempt in range(busy_retries + 1):
        nonce = secrets.token_bytes(L.NONCE_BYTES)
        try:
            replies = await conn.request(
                lambda rid: AuditChallenge(rid, root, nonce, k, int(deadline * 1000)), timeout=deadline)
        except RequestFailed as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                return AuditResult(who, Outcome.INVALID, k, f"holder reports the data missing: {exc}")
            if exc.code == ErrorCode.BUSY:
                if attempt < busy_retries:
                    await trio.sleep(busy_backoff * 2**attempt)
                    continue
                return AuditResult(who, Outcome.BUSY, k, f"busy {busy_retries + 1} times: {exc}")
            return AuditResult(who, Outcome.TIMEOUT, k, str(exc))
        break
    reply = replies[0] if replies else None
    if not isinstance(reply, AuditProof) or reply.nonce != nonce or reply.root_cid != root:
        return AuditResult(who, Outcome.INVALID, k, "answer does not match the challenge")
    why = await trio.to_thread.run_sync(_check, commitment, nonce, peer, k, reply)
    if why:
        return AuditResult(who, Outcome.INVALID, k, why)
    return AuditResult(who, Outcome.OK, k)


def _check(commitment: Commitment, nonce: bytes, peer: PeerId, k: int, reply: AuditProof) -> str:
    """'' if the proof is valid, else why not."""
    try:
        proof = Proof.decode(reply.proof, commitment)
    except StoreError as exc:
        return f"malformed proof: {exc}"
    if not peer.verify(reply.sig, proof.signing_bytes()):
        return "proof signature is not the holder's"
    if not verify_proof(commitment, nonce, peer.to_bytes(), k, proof):
        return "proof does not verify against the commitment"
    return ""


def prove(store: Blockstore, cid: CID, tree: NodeSource, nonce: bytes, holder: PeerId, k: int) -> Proof:
    """Build the proof for one challenge (worker thread). Raises StoreError if data is lost."""
    seg = tree.commitment.segment_size
    reader = object_bytes(store, cid).segment_reader(seg)
    return make_proof(reader, tree, nonce, holder.to_bytes(), k)


def verify_local(store: Blockstore, cid: CID, tree: NodeSource, me: PeerId, k: int) -> str:
    """An owner's self-check of its own copy: '' if a fresh proof verifies."""
    nonce = secrets.token_bytes(L.NONCE_BYTES)
    try:
        proof = prove(store, cid, tree, nonce, me, k)
    except (StoreError, OSError) as exc:
        return f"local copy damaged: {exc}"
    if not verify_proof(tree.commitment, nonce, me.to_bytes(), k, proof):
        return "local copy does not match its commitment"
    return ""

