"""The commitment tree's shape: 4-ary, level by level, a lone last node promoted.

One job: turn a level of nodes into the level above, by the rule in
store/proofs/commitment.py's docstring. Levels travel as flat bytes (32 bytes a node,
concatenated), since that is what a leaf file and a helper's leaf buffer
already are, and slicing 128-byte groups out of one bytes object is the
cheapest way CPython has to feed hashlib. It imports nothing but hashlib, so
the put's helper processes (store/proofs/piece_hashers.py) start fast.
"""

from __future__ import annotations

import hashlib

ARITY = 4
HASH_LEN = 32
PIECE_SEGMENTS = 512  # segments per piece: 1 MiB at 2 KiB, one default chunk
PIECE_LEVEL = 4  # 4^4 = 256 leaves: a whole piece is two whole subtrees of this level
NODE_PREFIX = b"\x01"

_sha256 = hashlib.sha256
_GROUP = HASH_LEN * ARITY


def node_hash(*children: bytes) -> bytes:
    """Hash of an inner node over 2 to 4 children."""
    return _sha256(NODE_PREFIX + b"".join(children)).digest()


def next_level(flat: bytes) -> bytes:
    """The level above `flat`: groups of four hashed, a lone last node promoted."""
    size = len(flat) - len(flat) % _GROUP
    out = [_sha256(NODE_PREFIX + flat[i : i + _GROUP]).digest() for i in range(0, size, _GROUP)]
    rest = flat[size:]
    if len(rest) == HASH_LEN:
        out.append(rest)
    elif rest:
        out.append(_sha256(NODE_PREFIX + rest).digest())
    return b"".join(out)


def reduce_flat(flat: bytes, levels: int | None = None) -> bytes:
    """`levels` levels up from a level that starts aligned, or up to its root."""
    if len(flat) % HASH_LEN:
        raise ValueError("a level is a whole number of 32-byte nodes")
    done = 0
    while len(flat) > HASH_LEN and (levels is None or done < levels):
        flat = next_level(flat)
        done += 1
    return flat


def piece_nodes(flat_leaves: bytes) -> bytes:
    """A piece's level-4 nodes from its leaves: two for a whole piece, else one."""
    return reduce_flat(flat_leaves, PIECE_LEVEL)


def tree_depth(n: int) -> int:
    """Levels above the leaves of an n-leaf tree (0 for n <= 1)."""
    depth, width = 0, n
    while width > 1:
        width, depth = -(-width // ARITY), depth + 1
    return depth
