"""Kademlia keys: SHA-256 of the peer id bytes or of the multihash, XOR distance.

libp2p's kad-dht spec places peers and content in one 256-bit key space: a
peer at sha256(peer id bytes), a provider record at sha256(multihash). Keys
are kept as Python ints so distance is one XOR and comparisons are native.
"""

from __future__ import annotations

import hashlib

KEY_BITS = 256


def kad_key(data: bytes) -> int:
    """The Kademlia key of a peer id's bytes or of a multihash (sha256, big-endian)."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def distance(a: int, b: int) -> int:
    """XOR distance between two keys."""
    return a ^ b


def common_prefix_len(a: int, b: int) -> int:
    """Number of leading bits a and b share (256 when they are equal)."""
    return KEY_BITS - (a ^ b).bit_length()


def random_key_in_bucket(local: int, cpl: int, rand_bits: int) -> int:
    """A key sharing exactly `cpl` leading bits with `local` (for bucket refresh).

    `rand_bits` supplies the free low bits (the caller owns the randomness so
    simulations stay reproducible). Requires 0 <= cpl < 256.
    """
    if not 0 <= cpl < KEY_BITS:
        raise ValueError("cpl out of range")
    flip = 1 << (KEY_BITS - 1 - cpl)
    low_mask = flip - 1
    return ((local ^ flip) & ~low_mask) | (rand_bits & low_mask)
