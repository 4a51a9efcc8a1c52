"""FastCDC chunker: losslessness, size bounds, determinism, shift resistance, streaming."""

from __future__ import annotations

import hashlib
import io
import random
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.store.chunking import cdc
from shoal.store.chunking.cdc import GEAR, MAX_BLOCK, FastCDCChunker, spread_mask

SMALL = dict(min_size=2048, avg_size=8192, max_size=65536)


def data_of(n: int, seed: bytes = b"cdc") -> bytes:
    return hashlib.shake_256(seed).digest(n)


def lengths(chunker: FastCDCChunker, data: bytes, stream: io.RawIOBase | None = None) -> list[int]:
    return [len(c) for c in chunker.chunks(stream or io.BytesIO(data))]  # type: ignore[arg-type]


class ShortReads(io.RawIOBase):
    """A stream that returns at most a random few bytes per read, like a pipe."""

    def __init__(self, data: bytes, seed: int, most: int) -> None:
        self._data, self._pos, self._rng, self._most = data, 0, random.Random(seed), most

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        k = self._rng.randint(1, self._most)
        if n >= 0:
            k = min(k, n)
        out = self._data[self._pos : self._pos + k]
        self._pos += len(out)
        return out


@pytest.fixture(params=["numpy", "python"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(cdc, "_np", None)
    elif cdc._np is None:
        pytest.skip("numpy not installed")
    yield request.param


def test_known_answer_default_sizes() -> None:
    # Pinned: a change here changes every CDC CID ever published. Bump "v1".
    data = data_of(6 << 20, b"shoal/cdc/kat")
    assert lengths(FastCDCChunker(), data) == [
        572875, 569936, 1036144, 220246, 792182, 541475, 621874, 542458, 286855, 871620, 235791,
    ]
    assert FastCDCChunker().spec == "fastcdc-v1-131072-524288-1048576-nc2"


def test_known_answer_small_sizes_both_backends(backend: str) -> None:
    data = data_of(200_000, b"shoal/cdc/kat")
    assert lengths(FastCDCChunker(**SMALL), data) == [
        11182, 8367, 9890, 11423, 9942, 2534, 7327, 8368, 3419, 10128, 3478, 9101,
        10965, 9185, 12822, 10149, 10190, 13539, 9314, 8393, 8342, 5894, 6048,
    ]


def test_gear_table_follows_documented_recipe() -> None:
    assert len(GEAR) == 256 and len(set(GEAR)) == 256
    for b in (0, 1, 255):
        digest = hashlib.sha256(b"shoal/cdc/gear/v1" + bytes([b])).digest()
        assert GEAR[b] == int.from_bytes(digest[:8], "little")


def test_masks_are_nested_and_spread() -> None:
    for bits in range(1, 49):
        m = spread_mask(bits)
        assert bin(m).count("1") == bits
        assert m >> 16 << 16 == m and m < 1 << 64
        if bits > 1:
            assert spread_mask(bits - 1) & ~m == 0
    chunker = FastCDCChunker()
    assert bin(chunker.mask_s).count("1") == 21 and bin(chunker.mask_l).count("1") == 17
    with pytest.raises(ValueError):
        spread_mask(49)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_size=1024, avg_size=8192, max_size=MAX_BLOCK + 1),
        dict(min_size=32, avg_size=64, max_size=128),
        dict(min_size=4096, avg_size=3000, max_size=8192),
        dict(min_size=4096, avg_size=12288, max_size=65536),
        dict(read_size=0),
        dict(normalization=19),
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FastCDCChunker(**kwargs)


def test_empty_and_tiny_streams(backend: str) -> None:
    assert list(FastCDCChunker(**SMALL).chunks(io.BytesIO(b""))) == []
    assert list(FastCDCChunker(**SMALL).chunks(io.BytesIO(b"abc"))) == [b"abc"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 300_000), seed=st.binary(max_size=8))
def test_lossless_and_bounded(size: int, seed: bytes) -> None:
    data = data_of(size, seed)
    chunker = FastCDCChunker(**SMALL)
    chunks = list(chunker.chunks(io.BytesIO(data)))
    assert b"".join(chunks) == data
    assert all(2048 <= len(c) <= 65536 for c in chunks[:-1])
    assert all(0 < len(c) <= 65536 for c in chunks)


def test_default_sizes_bounded_and_deterministic() -> None:
    data = data_of(12 << 20)
    first = lengths(FastCDCChunker(), data)
    assert first == lengths(FastCDCChunker(), data)
    assert sum(first) == len(data)
    assert all(128 * 1024 <= n <= MAX_BLOCK for n in first[:-1])
    assert 400 * 1024 < sum(first) / len(first) < 800 * 1024


def test_low_entropy_input_stays_bounded(backend: str) -> None:
    for data in (bytes(300_000), b"ab" * 150_000):
        sizes = lengths(FastCDCChunker(**SMALL), data)
        assert sum(sizes) == len(data)
        assert all(2048 <= n <= 65536 for n in sizes[:-1])


def test_python_and_numpy_backends_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    if cdc._np is None:
        pytest.skip("numpy not installed")
    data = data_of(700_000, b"agree") + bytes(70_000) + data_of(300_000, b"more")
    expected = lengths(FastCDCChunker(**SMALL), data)
    monkeypatch.setattr(cdc, "_np", None)
    assert lengths(FastCDCChunker(**SMALL), data) == expected


@pytest.mark.parametrize("read_size", [1, 63, 64, 1000, 65536, 1 << 20])
def test_read_size_does_not_move_boundaries(read_size: int) -> None:
    data = data_of(400_000, b"reads")
    expected = lengths(FastCDCChunker(**SMALL), data)
    assert lengths(FastCDCChunker(**SMALL, read_size=read_size), data) == expected


def test_short_reads_do_not_move_boundaries(backend: str) -> None:
    data = data_of(300_000, b"short")
    expected = lengths(FastCDCChunker(**SMALL), data)
    assert lengths(FastCDCChunker(**SMALL), data, ShortReads(data, seed=7, most=5000)) == expected


def test_short_reads_default_sizes() -> None:
    data = data_of(5 << 20, b"short-default")
    expected = lengths(FastCDCChunker(), data)
    stream = ShortReads(data, seed=3, most=300_000)
    assert lengths(FastCDCChunker(read_size=123_457), data, stream) == expected


def shared_fraction_after(original: bytes, edited: bytes, edit_end: int) -> float:
    """Fraction of the edited file's bytes past the edit that lie in unchanged chunks."""
    chunker = FastCDCChunker()
    old = {hashlib.sha256(c).digest() for c in chunker.chunks(io.BytesIO(original))}
    shared = total = pos = 0
    for c in chunker.chunks(io.BytesIO(edited)):
        end = pos + len(c)
        if end > edit_end:
            total += len(c)
            shared += len(c) if hashlib.sha256(c).digest() in old else 0
        pos = end
    return shared / total


@pytest.mark.parametrize("edit", ["insert", "delete", "overwrite"])
def test_shift_resistance(edit: str) -> None:
    rng = random.Random(edit)
    original = rng.randbytes(8 << 20)
    at = rng.randrange(1000, 200_000)
    if edit == "insert":
        edited = original[:at] + rng.randbytes(100) + original[at:]
    elif edit == "delete":
        edited = original[:at] + original[at + 100 :]
    else:
        edited = original[:at] + rng.randbytes(100) + original[at + 100 :]
    assert shared_fraction_after(original, edited, at + 100) > 0.85


def test_fixed_chunking_baseline_is_not_shift_resistant() -> None:
    # Sanity check of the measure itself: a 1-byte insert defeats fixed chunks.
    from shoal.store.chunking.chunker import FixedChunker

    rng = random.Random(1)
    original = rng.randbytes(8 << 20)
    edited = original[:10] + b"x" + original[10:]
    fixed = FixedChunker()
    old = set(fixed.chunks(io.BytesIO(original)))
    assert not any(c in old for c in fixed.chunks(io.BytesIO(edited)))
    assert shared_fraction_after(original, edited, 11) > 0.85


def test_reads_ahead_at_most_max_plus_read_size() -> None:
    data = data_of(3 << 20, b"bounded")
    stream = io.BytesIO(data)
    chunker = FastCDCChunker(read_size=100_000)
    emitted = 0
    for chunk in chunker.chunks(stream):
        emitted += len(chunk)
        assert stream.tell() - (emitted - len(chunk)) <= chunker.max_size + chunker.read_size
    assert emitted == len(data)
