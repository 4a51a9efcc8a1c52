"""Proofs of storage, part 2: which segments an audit challenges, and how many.

Both sides derive the same k segment indices from a fresh nonce, the
committed root and the holder's id (`challenge_indices`; rejection sampling
keeps them uniform), so a holder cannot predict them before the audit and
two holders of one object get different ones. `default_k` picks k from
the loss fraction to catch and the odds wanted; `MAX_K` caps it. How many
challenges fit a proof byte budget depends on the proof's encoding and
lives with it (shoal.store.proofs.proof.max_challenges).

Pure functions; no I/O.
"""

from __future__ import annotations

import hashlib
import math

from shoal.store.proofs.tree_shape import HASH_LEN

__all__ = ["MAX_K", "challenge_indices", "detection_probability", "default_k"]

MAX_K = 4096  # a 1 % loss at 99.9 % needs 688; more is abuse

_sha256 = hashlib.sha256

_U64 = 1 << 64


def _uniform(digest: bytes, n: int) -> int:
    """Map a digest to [0, n) without modulo bias (rejection sampling).

    Take the first 8 bytes as a big-endian u64 v; accept v mod n if v is below
    the largest multiple of n that fits in 2^64, else re-hash
    SHA-256(previous digest ‖ counter as 4-byte BE), counter = 1, 2, ...
    The re-hash input is 36 bytes, shorter than any first-round input, so the
    two rounds can never collide. Rejection odds are < n / 2^64 per draw.
    """
    limit = _U64 - _U64 % n
    counter = 0
    while True:
        v = int.from_bytes(digest[:8], "big")
        if v < limit:
            return v % n
        counter += 1
        digest = _sha256(digest + counter.to_bytes(4, "big")).digest()


def challenge_indices(nonce: bytes, root: bytes, holder_id: bytes, k: int, n_segments: int) -> list[int]:
    """The k segment indices of one audit (with repeats, in draw order).

    index j = uniform(SHA-256(nonce ‖ root ‖ holder_id ‖ j as 8-byte BE), n).
    nonce and root are fixed at 32 bytes, so the only variable-length field is
    unambiguous. Unpredictable before the nonce, and different per holder.
    """
    if len(nonce) != HASH_LEN or len(root) != HASH_LEN:
        raise ValueError("nonce and root must be 32 bytes")
    if not 0 <= k <= MAX_K:
        raise ValueError("k out of range")
    if not 0 <= n_segments <= _U64:
        raise ValueError("n_segments out of range")
    if n_segments == 0:
        return []
    prefix = nonce + root + holder_id
    return [_uniform(_sha256(prefix + j.to_bytes(8, "big")).digest(), n_segments) for j in range(k)]


def detection_probability(loss_fraction: float, k: int) -> float:
    """P(at least one of k uniform challenges hits a lost segment) = 1 - (1-f)^k."""
    if not 0.0 <= loss_fraction <= 1.0 or k < 0:
        raise ValueError("loss fraction in [0, 1], k >= 0")
    return 1.0 - (1.0 - loss_fraction) ** k


def default_k(target_loss: float = 0.10, detection: float = 0.999) -> int:
    """Smallest k that catches a `target_loss` fraction with `detection` odds.

    default_k() == 66 (0.9^66 = 0.00095); default_k(0.01) == 688.
    """
    if not 0.0 < target_loss < 1.0 or not 0.0 < detection < 1.0:
        raise ValueError("target_loss and detection must be in (0, 1)")
    k = max(1, math.ceil(math.log1p(-detection) / math.log1p(-target_loss)))
    while k > 1 and detection_probability(target_loss, k - 1) >= detection:
        k -= 1
    while detection_probability(target_loss, k) < detection:
        k += 1
    return k
