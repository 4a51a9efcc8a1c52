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

