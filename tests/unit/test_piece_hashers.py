"""PieceHashers: real helper processes hashing pieces out of a shared ring."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from shoal.store.proofs import piece_hashers
from shoal.store.proofs.piece_hashers import PieceHashers
from shoal.store.proofs.commitment import commit, piece_leaves

SEG = 2048
PIECE = SEG * 512


def _run(tmp_path: Path, data: bytes, helpers: int = 2, order: list[int] | None = None) -> tuple[
        list[bytes], object, bytes]:
    """Feed `data` piece by piece through a ring of 3 slots; the digests, the commitment, the leaf file."""
    leaves = tmp_path / "leaves"
    fd = os.open(leaves, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        hashers = PieceHashers(fd, SEG, helpers)
        ring = hashers.ring(3)
        pieces = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]
        digests: dict[int, bytes] = {}
        for index in order if order is not None else range(len(pieces)):
            slot = index % 3
            ring[slot * PIECE : slot * PIECE + len(pieces[index])] = pieces[index]
            view = memoryview(ring)[slot * PIECE : slot * PIECE + len(pieces[index])]
            digests[index] = hashers.digest(index, view)
            view.release()
        commitment = hashers.finish()
        return [digests[i] for i in sorted(digests)], commitment, leaves.read_bytes()
    finally:
        os.close(fd)


@pytest.mark.parametrize("length", [1, 5000, PIECE, PIECE + 1, 4 * PIECE + 777])
def test_digests_leaves_and_commitment(tmp_path: Path, length: int) -> None:
    data = random.Random(length).randbytes(length)
    digests, commitment, leaves = _run(tmp_path, data)
    pieces = [data[i : i + PIECE] for i in range(0, length, PIECE)]
    assert digests == [hashlib.sha256(p).digest() for p in pieces]
    assert commitment == commit(data)
    assert leaves == b"".join(b"".join(piece_leaves(p, SEG)) for p in pieces)


def test_pieces_in_any_order_give_the_same_commitment(tmp_path: Path) -> None:
    """Workers finish out of order; the leaf file and the fold go by index."""
    data = random.Random(9).randbytes(3 * PIECE + 10)
    _, commitment, leaves = _run(tmp_path, data, helpers=3, order=[2, 0, 3, 1])
    assert commitment == commit(data)
    assert leaves == b"".join(b"".join(piece_leaves(data[i : i + PIECE], SEG)) for i in range(0, len(data), PIECE))


def test_a_gap_or_a_short_middle_piece_gives_no_commitment(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(3 * PIECE)
    digests, commitment, _ = _run(tmp_path, data, order=[0, 2])
    assert commitment is None and len(digests) == 2


def test_a_buffer_outside_the_ring_is_hashed_here(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "leaves", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        hashers = PieceHashers(fd, SEG, 1)
        hashers.ring(2)
        other = bytearray(b"x" * 100)
        assert hashers.digest(0, memoryview(other)) == hashlib.sha256(other).digest()
        assert hashers.finish() is None
    finally:
        os.close(fd)


def test_helpers_that_cannot_start_leave_hashing_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(piece_hashers.sys, "executable", str(tmp_path / "no-such-python"))
    data = random.Random(5).randbytes(PIECE + 3)
    digests, commitment, _ = _run(tmp_path, data)
    assert digests == [hashlib.sha256(data[:PIECE]).digest(), hashlib.sha256(data[PIECE:]).digest()]
    assert commitment is None


def test_abort_stops_the_helpers(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "leaves", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        hashers = PieceHashers(fd, SEG, 2)
        hashers.ring(2)
        procs = [h.proc for h in hashers._helpers]
        hashers.abort()
        assert all(p.poll() is not None for p in procs)
    finally:
        os.close(fd)


def test_helpers_that_cannot_import_the_package_fail_visibly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A helper whose imports fail (as after a package rename) must not go unnoticed:
    the put still gets every digest right, has no commitment, and says why."""
    monkeypatch.setattr(piece_hashers, "_CHILD", "import shoal_no_such_package\n")
    monkeypatch.setattr(piece_hashers, "REPLY_TIMEOUT_S", 2.0)
    data = random.Random(6).randbytes(2 * PIECE + 3)
    with caplog.at_level("WARNING", logger="shoal.put"):
        digests, commitment, _ = _run(tmp_path, data)
    assert digests == [hashlib.sha256(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE)]
    assert commitment is None
    assert [r.getMessage() for r in caplog.records if "piece-hashing helpers failed" in r.getMessage()], caplog.text


def test_the_real_helpers_start_and_hash_from_this_checkout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The helpers run with -I -S: they find shoal.store by the path they are given."""
    data = random.Random(7).randbytes(2 * PIECE)
    with caplog.at_level("WARNING", logger="shoal.put"):
        _, commitment, _ = _run(tmp_path, data)
    assert commitment == commit(data)
    assert "piece-hashing helpers failed" not in caplog.text
