"""shoal.store.dag.exporter read-ahead (`prefetch=`): same bytes, bounded, errors in order.

Reading ahead in worker threads must change nothing a caller can see but
the speed: the bytes of any range of any tree shape are those of the serial
walk; no more than `prefetch` blocks are ever ahead; a missing block fails
the read when the walk reaches it, after every byte before it was yielded;
and closing the reader early stops the read-ahead.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import CID
from shoal.store.errors import BlockNotFound
from shoal.store.dag.exporter import read_file
from shoal.store.dag.importer import import_bytes
from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025, Profile
from tests.helpers import random_bytes


class _TrackingStore(MemoryBlockstore):
    """Counts gets in flight at once (thread-safe), and can hide blocks."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.hidden: set[bytes] = set()
        self.gate = threading.Event()
        self.gate.set()

    def get(self, cid: CID) -> bytes:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.gate.wait(5)
            if bytes(cid) in self.hidden:
                raise BlockNotFound(cid)
            return super().get(cid)
        finally:
            with self._lock:
                self.in_flight -= 1


@settings(max_examples=80, deadline=None)
@given(size=st.integers(0, 3000), chunk=st.integers(1, 64), links=st.integers(2, 5),
       legacy=st.booleans(), depth=st.integers(1, 9), cut=st.tuples(st.integers(0, 3100), st.integers(0, 3100)))
def test_same_bytes_as_the_serial_walk(size: int, chunk: int, links: int, legacy: bool, depth: int,
                                       cut: tuple[int, int]) -> None:
    profile: Profile = (KUBO_LEGACY if legacy else UNIXFS_V1_2025).with_overrides(chunk_size=chunk, max_links=links)
    bs = MemoryBlockstore()
    data = random_bytes(size, seed=chunk)
    root = import_bytes(data, bs, profile).cid
    offset, length = min(cut), max(cut) - min(cut)
    serial = b"".join(read_file(bs, root, offset, length))
    assert serial == data[offset:offset + length]
    assert b"".join(read_file(bs, root, offset, length, prefetch=depth)) == serial
    assert b"".join(read_file(bs, root, prefetch=depth)) == data


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_read_ahead_is_bounded(depth: int) -> None:
    bs = _TrackingStore()
    data = random_bytes(200 * 16)
    root = import_bytes(data, bs, UNIXFS_V1_2025.with_overrides(chunk_size=16, max_links=50)).cid
    pieces = read_file(bs, root, prefetch=depth)
    got = bytearray()
    for piece in pieces:
        got += piece
        # the walk's own get may run beside `depth` read-ahead gets
        assert bs.max_in_flight <= depth + 1
    assert bytes(got) == data


def test_missing_block_fails_where_the_walk_reaches_it() -> None:
    bs = _TrackingStore()
    data = random_bytes(40 * 16)
    root = import_bytes(data, bs, UNIXFS_V1_2025.with_overrides(chunk_size=16, max_links=64)).cid
    from shoal.store.dag.exporter import iter_links

    leaves = iter_links(root, bs.get(root))
    bs.hidden.add(bytes(leaves[10]))
    got = bytearray()
    with pytest.raises(BlockNotFound):
        for piece in read_file(bs, root, prefetch=8):
            got += piece
    assert bytes(got) == data[: 10 * 16]  # everything before the hole, nothing after


def test_closing_early_stops_reading_ahead() -> None:
    bs = _TrackingStore()
    data = random_bytes(100 * 16)
    root = import_bytes(data, bs, UNIXFS_V1_2025.with_overrides(chunk_size=16, max_links=128)).cid
    reader = read_file(bs, root, prefetch=8)
    next(reader)
    reader.close()
    for _ in range(200):
        if bs.in_flight == 0:
            break
        threading.Event().wait(0.01)
    assert bs.in_flight == 0
