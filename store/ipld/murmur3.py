"""MurmurHash3 x64-128 in pure Python, for UnixFS HAMT sharding.

Why: UnixFS HAMT directories place each entry by the murmur3 hash of its
name (multicodec 0x22, "murmur3-x64-64": the first 64 bits of x64-128), and
Shoal must place entries exactly as the IPFS importers do to get the same
CIDs. Names are short and a directory has at most a few hundred thousand of
them, so a pure-Python hash (a few microseconds per name) is fast enough and
avoids a native dependency.

Output convention: `murmur3_x64_128` returns 16 bytes, h1 then h2, each
big-endian, which is how the npm `@multiformats/murmur3` package returns it.
Not here: the 32-bit variants.
"""

from __future__ import annotations

__all__ = ["murmur3_x64_128", "murmur3_x64_64"]

_M64 = (1 << 64) - 1
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    k ^= k >> 33
    return k


def _mix_k1(k1: int) -> int:
    return (_rotl((k1 * _C1) & _M64, 31) * _C2) & _M64


def _mix_k2(k2: int) -> int:
    return (_rotl((k2 * _C2) & _M64, 33) * _C1) & _M64


def murmur3_x64_128(data: bytes, seed: int = 0) -> bytes:
    """MurmurHash3_x64_128 of `data` as 16 bytes (h1 big-endian, then h2 big-endian)."""
    if not 0 <= seed <= 0xFFFFFFFF:
        raise ValueError("seed must be an unsigned 32-bit integer")
    n = len(data)
    h1 = h2 = seed
    nblocks = n // 16
    for i in range(nblocks):
        k1 = int.from_bytes(data[16 * i: 16 * i + 8], "little")
        k2 = int.from_bytes(data[16 * i + 8: 16 * i + 16], "little")
        h1 ^= _mix_k1(k1)
        h1 = (_rotl(h1, 27) + h2) & _M64
        h1 = (h1 * 5 + 0x52DCE729) & _M64
        h2 ^= _mix_k2(k2)
        h2 = (_rotl(h2, 31) + h1) & _M64
        h2 = (h2 * 5 + 0x38495AB5) & _M64
    tail = data[16 * nblocks:]
    if len(tail) > 8:
        h2 ^= _mix_k2(int.from_bytes(tail[8:], "little"))
    if tail:
        h1 ^= _mix_k1(int.from_bytes(tail[:8], "little"))
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    return h1.to_bytes(8, "big") + h2.to_bytes(8, "big")


def murmur3_x64_64(data: bytes, seed: int = 0) -> bytes:
    """The first 64 bits of x64-128 (h1, big-endian): the UnixFS HAMT hash."""
    return murmur3_x64_128(data, seed)[:8]
