"""SHA-256 chaining values: the hash state between two segments of one piece.

Why this exists: a proof-of-storage commitment over 2 KiB segments hashes
every byte of an object a second time, on top of the SHA-256 of each 1 MiB
block that names it (store/proofs/commitment.py). Both hashes run over the same bytes in
the same order, so the commitment can be made of the states SHA-256 passes
through while it hashes a block: the leaf of a segment is the chaining value
after it, and the leaf of a piece's last segment is the piece's digest,
which for a raw 1 MiB leaf block *is* the block's multihash digest. Hashing
each block once then gives both its CID and its segments' leaves.

hashlib does not expose the state, so this module drives libcrypto's
`SHA256_Update` directly (the library CPython's own `_hashlib` is linked to,
found in /proc/self/maps, so no second OpenSSL is loaded) through cffi's ABI
mode (no compiler). `SHA256_CTX`'s layout has been the same since OpenSSL
0.9.8 and the functions are exported by OpenSSL 3 (deprecated for new code,
not removed). Without them a pure-Python SHA-256 compression function does
the same work, ~1,000x slower: fine for verifying a proof, hopeless for a
commitment over gigabytes, which is why `available()` is offered.

States are exchanged as 32 bytes, the eight 32-bit words big-endian (the
byte order of a SHA-256 digest). A state is only defined after a whole
number of 64-byte blocks, hence segment sizes that are multiples of 64.
"""

from __future__ import annotations

import hashlib
import operator
import struct
import sys
from array import array
from collections import deque

TYPE_CHECKING = False  # typing costs a helper process ~9 ms to import
if TYPE_CHECKING:
    from typing import Any

__all__ = ["IV", "BLOCK", "available", "piece_leaves", "resume", "ChainError"]

BLOCK = 64
IV = bytes.fromhex("6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19")
_WORDS = struct.Struct(">8I")
_SWAP = sys.byteorder == "little"


class ChainError(ValueError):
    """Arguments that do not describe a whole-block SHA-256 state."""


# ---------------------------------------------------------------- libcrypto

_CDEF = """
typedef struct {
    unsigned int h[8];
    unsigned int Nl, Nh;
    unsigned int data[16];
    unsigned int num, md_len;
} SHA256_CTX;
int SHA256_Init(SHA256_CTX *c);
int SHA256_Update(SHA256_CTX *c, const void *data, size_t len);
int SHA256_Final(unsigned char *md, SHA256_CTX *c);
"""


def _libcrypto_path() -> str | None:
    """The libcrypto `_hashlib` was loaded with (None if not found)."""
    import importlib

    importlib.import_module("_hashlib")  # loads libcrypto into this process

    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(" ", 5)[-1].strip()
                name = path.rsplit("/", 1)[-1]
                if name.startswith("libcrypto.so") or name.startswith("libcrypto-"):
                    return path
    except OSError:
        pass
    return None


def _ffi() -> Any:
    """The declarations: precompiled (store/proofs/_sha256_ffi.py, no parser to
    import: ~3 ms instead of ~55 for cffi's C parser, paid by every put
    helper), else parsed from `_CDEF` now; None without cffi."""
    try:
        from shoal.store.proofs._sha256_ffi import ffi

        return ffi
    except Exception:  # an older or newer cffi may refuse the precompiled form
        pass
    try:
        import cffi
    except ImportError:
        return None
    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    return ffi


def emit_ffi_module(path: str) -> None:
    """Write the precompiled declarations (`_ffi`): cffi's out-of-line ABI
    mode, generated from `_CDEF` (tests/unit/test_sha256_chain.py checks
    the committed file is what this writes)."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    ffi.set_source("shoal.store.proofs._sha256_ffi", None)
    ffi.emit_python_code(path)


def _load() -> tuple[Any, Any] | None:
    ffi = _ffi()
    if ffi is None:
        return None
    for name in (_libcrypto_path(), "libcrypto.so.3", "libcrypto.so"):
        if not name:
            continue
        try:
            lib = ffi.dlopen(name)
            lib.SHA256_Update  # noqa: B018  (raises if the symbol is missing)
        except (OSError, AttributeError):
            continue
        if _self_test(ffi, lib):
            return ffi, lib
    return None


def _self_test(ffi: Any, lib: Any) -> bool:
    """The loaded functions agree with hashlib (a wrong struct layout would not)."""
    ctx = ffi.new("SHA256_CTX *")
    md = ffi.new("unsigned char[32]")
    data = bytes(range(256)) * 3
    lib.SHA256_Init(ctx)
    lib.SHA256_Update(ctx, data, len(data))
    lib.SHA256_Final(md, ctx)
    return bytes(ffi.buffer(md)) == hashlib.sha256(data).digest()


_UNLOADED: Any = object()
_NATIVE: Any = _UNLOADED  # (ffi, lib), or None for the fallback; loaded on first use


def _native() -> tuple[Any, Any] | None:
    """libcrypto's functions, loaded the first time a state is needed (not at
    import: every `shoal` command imports this module, few hash with it)."""
    global _NATIVE
    if _NATIVE is _UNLOADED:
        _NATIVE = _load()
    return _NATIVE  # type: ignore[no-any-return]


def available() -> bool:
    """True if states come from libcrypto (fast); else the pure-Python fallback."""
    return _native() is not None


def _to_canonical(raw: bytes | bytearray) -> bytes:
    """Native-order h words (as SHA256_CTX holds them) to big-endian bytes."""
    if not _SWAP:
        return bytes(raw)
    words = array("I")
    words.frombytes(raw)
    words.byteswap()
    return words.tobytes()


def _native_piece_leaves(data: Any, segment_size: int) -> bytes:
    ffi, lib = _NATIVE
    total = len(data)
    ctx = ffi.new("SHA256_CTX *")
    lib.SHA256_Init(ctx)
    base = ffi.from_buffer(data)
    update = lib.SHA256_Update
    h = ffi.buffer(ctx.h)
    last = (total - 1) // segment_size * segment_size
    states = bytearray(32 * (last // segment_size))
    pos = 0
    for off in range(0, last, segment_size):
        update(ctx, base + off, segment_size)
        states[pos : pos + 32] = h
        pos += 32
    update(ctx, base + last, total - last)
    md = ffi.new("unsigned char[32]")
    lib.SHA256_Final(md, ctx)
    return _to_canonical(states) + bytes(ffi.buffer(md))


def _native_resume(state: bytes, offset: int, segment: Any, final: bool) -> bytes:
    ffi, lib = _NATIVE
    ctx = ffi.new("SHA256_CTX *")
    ctx.h = list(_WORDS.unpack(state))
    bits = offset * 8
    ctx.Nl = bits & 0xFFFFFFFF
    ctx.Nh = bits >> 32
    ctx.num = 0
    ctx.md_len = 32
    lib.SHA256_Update(ctx, ffi.from_buffer(segment), len(segment))
    if final:
        md = ffi.new("unsigned char[32]")
        lib.SHA256_Final(md, ctx)
        return bytes(ffi.buffer(md))
    return _WORDS.pack(*ctx.h)


# ---------------------------------------------------------------- pure Python

_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)
_M = 0xFFFFFFFF


def _compress(h: list[int], block: bytes) -> list[int]:
    """One SHA-256 compression (FIPS 180-4 §6.2.2) of a 64-byte block."""
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        x, y = w[t - 15], w[t - 2]
        s0 = ((x >> 7 | x << 25) ^ (x >> 18 | x << 14) ^ (x >> 3)) & _M
        s1 = ((y >> 17 | y << 15) ^ (y >> 19 | y << 13) ^ (y >> 10)) & _M
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M)
    a, b, c, d, e, f, g, hh = h
    for t in range(64):
        s1 = ((e >> 6 | e << 26) ^ (e >> 11 | e << 21) ^ (e >> 25 | e << 7)) & _M
        ch = (e & f) ^ (~e & g)
        t1 = (hh + s1 + ch + _K[t] + w[t]) & _M
        s0 = ((a >> 2 | a << 30) ^ (a >> 13 | a << 19) ^ (a >> 22 | a << 10)) & _M
        maj = (a & b) ^ (a & c) ^ (b & c)
        hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & _M, c, b, a, (t1 + s0 + maj) & _M
    return [(x + y) & _M for x, y in zip(h, (a, b, c, d, e, f, g, hh))]


def _py_resume(state: bytes, offset: int, segment: Any, final: bool) -> bytes:
    h = list(_WORDS.unpack(state))
    data = bytes(segment)
    whole = len(data) - len(data) % BLOCK
    for i in range(0, whole, BLOCK):
        h = _compress(h, data[i : i + BLOCK])
    if not final:
        return _WORDS.pack(*h)
    total = offset + len(data)
    tail = data[whole:] + b"\x80"
    tail += bytes(-(len(tail) + 8) % BLOCK) + struct.pack(">Q", total * 8)
    for i in range(0, len(tail), BLOCK):
        h = _compress(h, tail[i : i + BLOCK])
    return _WORDS.pack(*h)


def _py_piece_leaves(data: Any, segment_size: int) -> bytes:
    mv = memoryview(data).cast("B")
    total = len(mv)
    last = (total - 1) // segment_size * segment_size
    out = []
    state = IV
    for off in range(0, last, segment_size):
        state = _py_resume(state, off, mv[off : off + segment_size], False)
        out.append(state)
    out.append(_py_resume(state, last, mv[last:], True))
    return b"".join(out)


# ---------------------------------------------------------------- the API


def _check_segment_size(segment_size: int) -> None:
    if segment_size <= 0 or segment_size % BLOCK:
        raise ChainError("segment size must be a positive multiple of 64")


def piece_leaves(data: Any, segment_size: int) -> bytes:
    """The leaves of one piece (`data`, 1 byte or more), concatenated.

    Segment i covers data[i*s : (i+1)*s] (the last may be short). Its leaf is
    the SHA-256 state after hashing data up to the end of segment i, except
    the last segment's, which is SHA-256(data) itself. 32 bytes each.
    """
    _check_segment_size(segment_size)
    if len(data) == 0:
        raise ChainError("a piece has at least one byte")
    if _native() is not None:
        return _native_piece_leaves(data, segment_size)
    return _py_piece_leaves(data, segment_size)


def resume(state: bytes, offset: int, segment: Any, final: bool) -> bytes:
    """The leaf of one segment, from the state before it (the verifier's step).

    `state` is the state after the piece's first `offset` bytes (IV at 0);
    `offset` must be a multiple of 64. If `final`, the segment ends its piece
    and the result is the piece's digest; else the segment must be a whole
    number of 64-byte blocks and the result is the state after it.
    """
    if len(state) != 32:
        raise ChainError("a state is 32 bytes")
    if offset < 0 or offset % BLOCK or offset >= 1 << 61:
        raise ChainError("a state exists only after whole 64-byte blocks")
    if not final and len(segment) % BLOCK:
        raise ChainError("a segment that does not end its piece is whole blocks")
    if _native() is not None:
        return _native_resume(state, offset, segment, final)
    return _py_resume(state, offset, segment, final)


class BufferChain:
    """`piece_leaves` over pieces of one long-lived buffer (a shared ring).

    Why: for a buffer that outlives many pieces (the put's ring of slots),
    everything about a piece's 512 steps but the bytes is the same each
    time, so each slot's steps are planned once: the argument lists of the
    alternating `SHA256_Update(ctx, segment, s)` and `memmove(state_i,
    ctx.h, 32)` calls, run by `map(operator.call, ...)` with no bytecode per
    step. That is ~0.25 CPU-s per GiB over hashlib's one-call SHA-256,
    against ~0.4 for a Python loop. Falls back to `piece_leaves` for the
    pure-Python path.
    """

    def __init__(self, buffer: Any, segment_size: int) -> None:
        _check_segment_size(segment_size)
        self._buffer = buffer
        self._mv = memoryview(buffer).cast("B")
        self._s = segment_size
        self._plans: dict[tuple[int, int], tuple[list[Any], ...]] = {}
        native = _native()
        if native is not None:
            ffi, lib = native
            self._base = ffi.from_buffer(buffer)
            self._ctx = ffi.new("SHA256_CTX *")
            self._md = ffi.new("unsigned char[32]")
            self._states = bytearray(0)
            self._states_ptr: Any = None

    def _plan(self, offset: int, steps: int) -> tuple[list[Any], ...]:
        ffi, lib = _NATIVE
        if len(self._states) < 32 * steps:
            self._states = bytearray(32 * steps)
            self._states_ptr = ffi.from_buffer(self._states)
            self._plans.clear()  # their pointers were into the old states buffer
        s, ctx, h = self._s, self._ctx, self._ctx.h
        funcs: list[Any] = [lib.SHA256_Update, ffi.memmove] * steps
        first: list[Any] = []
        second: list[Any] = []
        third: list[Any] = []
        for i in range(steps):
            first += (ctx, self._states_ptr + 32 * i)
            second += (self._base + offset + s * i, h)
            third += (s, 32)
        return funcs, first, second, third

    def leaves(self, offset: int, length: int) -> bytes:
        """piece_leaves(buffer[offset : offset + length])."""
        if not 0 <= offset <= offset + length <= len(self._mv) or length == 0:
            raise ChainError("piece outside the buffer")
        if _native() is None:
            return _py_piece_leaves(self._mv[offset : offset + length], self._s)
        s = self._s
        last = (length - 1) // s * s
        steps = last // s
        key = (offset, steps)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(offset, steps)
            if len(self._plans) < 256:
                self._plans[key] = plan
        ffi, lib = _NATIVE
        ctx = self._ctx
        lib.SHA256_Init(ctx)
        deque(map(operator.call, *plan), 0)
        lib.SHA256_Update(ctx, self._base + offset + last, length - last)
        lib.SHA256_Final(self._md, ctx)
        return _to_canonical(self._states[: 32 * steps]) + bytes(ffi.buffer(self._md))
