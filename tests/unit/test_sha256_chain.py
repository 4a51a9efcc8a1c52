"""SHA-256 chaining values: libcrypto's, the pure-Python fallback's, and hashlib agree."""

from __future__ import annotations

import hashlib
import mmap
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.store.proofs import sha256_chain
from shoal.store.proofs.sha256_chain import IV, BufferChain, ChainError, piece_leaves, resume


def test_native_states_are_available_here() -> None:
    """CI and the benchmarks rely on the fast path; a silent fallback would hide a regression."""
    assert sha256_chain.available()


def test_iv_is_sha256s() -> None:
    # FIPS 180-4 §5.3.3: the first 32 bits of the fractional parts of the square roots of the first 8 primes
    words = [int((p ** 0.5 % 1) * 2**32) for p in (2, 3, 5, 7, 11, 13, 17, 19)]
    assert IV == b"".join(w.to_bytes(4, "big") for w in words)


@settings(max_examples=120, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), s=st.sampled_from([64, 128, 192, 1024]))
def test_native_and_pure_python_leaves_agree(data: bytes, s: int) -> None:
    native = piece_leaves(data, s)
    assert native == sha256_chain._py_piece_leaves(data, s)
    assert native[-32:] == hashlib.sha256(data).digest()
    assert len(native) == 32 * -(-len(data) // s)


@settings(max_examples=120, deadline=None)
@given(data=st.binary(min_size=1, max_size=4000), cut=st.integers(0, 60), final=st.booleans())
def test_resume_continues_any_whole_block_prefix(data: bytes, cut: int, final: bool) -> None:
    """From the state after the first 64*cut bytes, the rest gives the same state or digest."""
    split = min(64 * cut, (len(data) - 1) // 64 * 64)
    head, tail = data[:split], data[split:]
    if not final:
        tail = tail[: len(tail) - len(tail) % 64]
    state = sha256_chain._py_resume(IV, 0, head, False)
    got = resume(state, split, tail, final)
    assert got == sha256_chain._py_resume(state, split, tail, final)
    if final:
        assert got == hashlib.sha256(data).digest()
    else:
        assert got == sha256_chain._py_resume(IV, 0, head + tail, False)


def test_leaves_are_the_states_between_segments() -> None:
    data = random.Random(1).randbytes(64 * 10 + 5)
    leaves = piece_leaves(data, 128)
    state = IV
    for i in range(5):
        state = resume(state, 128 * i, data[128 * i : 128 * (i + 1)], False)
        assert leaves[32 * i : 32 * (i + 1)] == state
    assert leaves[-32:] == resume(state, 640, data[640:], True) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("bad", [
    lambda: piece_leaves(b"", 64),
    lambda: piece_leaves(b"x", 100),
    lambda: piece_leaves(b"x", 0),
    lambda: resume(IV[:31], 0, b"", True),
    lambda: resume(IV, 3, b"", True),
    lambda: resume(IV, -64, b"", True),
    lambda: resume(IV, 0, b"x" * 65, False),
])
def test_arguments_that_are_not_whole_block_states_are_refused(bad: object) -> None:
    with pytest.raises(ChainError):
        bad()  # type: ignore[operator]


def test_buffer_chain_matches_piece_leaves() -> None:
    rnd = random.Random(2)
    size = 3 << 20
    ring = mmap.mmap(-1, size)
    ring[:] = rnd.randbytes(size)
    chain = BufferChain(ring, 2048)
    for offset, length in [(0, 1 << 20), (1 << 20, 1 << 20), (0, 1 << 20), (5, 3000), (0, 1), (0, 2048),
                           (100, 2049), (2 << 20, 1 << 20), (0, size)]:
        assert chain.leaves(offset, length) == piece_leaves(ring[offset : offset + length], 2048), (offset, length)
    with pytest.raises(ChainError):
        chain.leaves(size - 10, 11)
    with pytest.raises(ChainError):
        chain.leaves(0, 0)


def test_pure_python_fallback_gives_the_same_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(3).randbytes(5000)
    fast = piece_leaves(data, 256)
    monkeypatch.setattr(sha256_chain, "_NATIVE", None)
    assert not sha256_chain.available()
    assert piece_leaves(data, 256) == fast
    ring = bytearray(data)
    assert BufferChain(ring, 256).leaves(0, 5000) == fast
    assert resume(fast[:32], 256, data[256:512], False) == fast[32:64]


def test_the_precompiled_declarations_are_what_the_cdef_gives(tmp_path: Path) -> None:
    """store/proofs/_sha256_ffi.py is generated; regenerate it and compare, so it cannot drift."""
    out = tmp_path / "_sha256_ffi.py"
    sha256_chain.emit_ffi_module(str(out))
    committed = Path(sha256_chain.__file__).with_name("_sha256_ffi.py")
    assert out.read_text() == committed.read_text()
