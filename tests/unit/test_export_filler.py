"""shoal.store.dag.disk_export with a `filler`: raw leaves written by someone else.

A laned export reads only a file's inner nodes and has a `LeafFiller` put
every raw leaf into the temp file at its offset (in the node, lane processes
do it). Whatever the DAG's shape, the file must come out byte for byte what
the plain export writes; the export itself must never read a raw leaf of a
dag-pb file; a leaf listed at several offsets lands at each; a filler that
fails (or a leaf of the wrong size) leaves nothing behind.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shoal.store.cancel import CancelFlag, Cancelled
from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025, Profile
from shoal.store.dag import disk_export
from shoal.store.dag.disk_export import export_to_path
from shoal.store.dag.exporter import Inline, Leaf, file_layout
from shoal.store.dag.importer import import_bytes, import_path
from shoal.store.errors import BlockNotFound, MalformedBlock
from shoal.store.ipld.cid import CID, RAW
from shoal.store.persist.blockstore import MemoryBlockstore
from tests.helpers import random_bytes


class LeafHidingStore(MemoryBlockstore):
    """A source that refuses to hand out raw leaves of files: the export must not read them."""

    def __init__(self, inner: MemoryBlockstore, allowed: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__()
        self.inner = inner
        self.allowed = set(allowed)
        self.raw_reads = 0

    def get(self, cid: CID) -> bytes:
        if cid.codec.name == RAW and bytes(cid) not in self.allowed:
            self.raw_reads += 1
            raise BlockNotFound(cid)
        return self.inner.get(cid)

    def has(self, cid: CID) -> bool:
        return self.inner.has(cid)


class MemoryFiller:
    """Writes each leaf from a blockstore by opening the temp file by name, as a lane does."""

    def __init__(self, store: MemoryBlockstore, reverse: bool = False) -> None:
        self.store = store
        self.reverse = reverse  # fill back to front: order must not matter
        self.calls: list[list[Leaf]] = []
        self.lock = threading.Lock()

    def fill(self, path: str, leaves: Iterable[Leaf], cancel: CancelFlag | None) -> None:
        got = list(leaves)
        with self.lock:
            self.calls.append(got)
        fd = os.open(path, os.O_WRONLY)
        try:
            for leaf in (reversed(got) if self.reverse else got):
                data = self.store.get(leaf.cid)
                if len(data) != leaf.size:
                    raise MalformedBlock(f"{leaf.cid}: {len(data)} bytes, parent says {leaf.size}")
                os.pwrite(fd, data, leaf.offset)
        finally:
            os.close(fd)


def _profile(chunk: int, links: int, legacy: bool) -> Profile:
    return (KUBO_LEGACY if legacy else UNIXFS_V1_2025).with_overrides(chunk_size=chunk, max_links=links)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 4000), chunk=st.integers(1, 300), links=st.integers(2, 6), legacy=st.booleans(),
       reverse=st.booleans(), seed=st.integers(0, 3))
def test_filled_file_equals_the_exported_bytes(tmp_path: Path, size: int, chunk: int, links: int,
                                               legacy: bool, reverse: bool, seed: int) -> None:
    # Small alphabets (seed picks 1..4 distinct byte values) make equal chunks,
    # so one leaf CID turns up at several offsets.
    alphabet = bytes(range(seed + 1))
    data = bytes(alphabet[b % len(alphabet)] for b in random_bytes(size, seed=size)) if seed < 3 \
        else random_bytes(size, seed=chunk)
    bs = MemoryBlockstore()
    root = import_bytes(data, bs, _profile(chunk, links, legacy)).cid
    out = tmp_path / f"out-{size}-{chunk}-{links}-{legacy}-{reverse}-{seed}"
    if root.codec.name == RAW:  # one raw block: written from the source as before, no filler
        export_to_path(bs, root, out, filler=MemoryFiller(bs, reverse))
        assert out.read_bytes() == data
        return
    source = LeafHidingStore(bs)
    filler = MemoryFiller(bs, reverse)
    export_to_path(source, root, out, filler=filler)
    assert out.read_bytes() == data
    assert source.raw_reads == 0
    if not legacy:  # raw leaves: every byte came through the filler, each offset once
        leaves = [leaf for call in filler.calls for leaf in call]
        assert sum(leaf.size for leaf in leaves) == size
        assert sorted(leaf.offset for leaf in leaves) == [leaf.offset for leaf in leaves]


def test_a_leaf_at_several_offsets_is_written_at_each(tmp_path: Path) -> None:
    chunk = b"\x07" * 64
    data = chunk * 10 + b"tail"
    bs = MemoryBlockstore()
    root = import_bytes(data, bs, _profile(64, 3, False)).cid
    pieces = list(file_layout(bs, root))
    leaves = [p for p in pieces if isinstance(p, Leaf)]
    assert not [p for p in pieces if isinstance(p, Inline)]
    assert len({bytes(leaf.cid) for leaf in leaves}) == 2 and len(leaves) == 11
    out = tmp_path / "dup"
    export_to_path(LeafHidingStore(bs), root, out, filler=MemoryFiller(bs, reverse=True))
    assert out.read_bytes() == data


def test_inline_data_of_inner_nodes_is_written_by_the_export(tmp_path: Path) -> None:
    data = random_bytes(3000, seed=5)
    bs = MemoryBlockstore()
    root = import_bytes(data, bs, _profile(200, 4, True)).cid  # legacy: dag-pb leaves, bytes inline
    pieces = list(file_layout(bs, root))
    assert pieces and all(isinstance(p, Inline) for p in pieces)
    out = tmp_path / "inline"
    filler = MemoryFiller(bs)
    export_to_path(bs, root, out, filler=filler)
    assert out.read_bytes() == data
    assert filler.calls == [[]]


def test_directory_of_files_filled_two_at_a_time(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {f"shard-{i}.bin": random_bytes(5000 + 331 * i, seed=i) for i in range(5)}
    files["small.json"] = b'{"a": 1}'
    for name, content in files.items():
        (src / name).write_bytes(content)
    (src / "sub" / "deep.bin").write_bytes(random_bytes(9000, seed=99))
    bs = MemoryBlockstore()
    root = import_path(src, bs, _profile(512, 4, False)).cid
    small = import_bytes(b'{"a": 1}', MemoryBlockstore(), _profile(512, 4, False)).cid

    class Concurrent(MemoryFiller):
        def __init__(self) -> None:
            super().__init__(bs)
            self.now = 0
            self.most = 0
            self.started = 0
            self.both = threading.Barrier(2, timeout=10)

        def fill(self, path: str, leaves: Iterable[Leaf], cancel: CancelFlag | None) -> None:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                index = self.started
                self.started += 1
            if index < 2:
                self.both.wait()  # the first two files meet: both are being filled at once
            try:
                super().fill(path, leaves, cancel)
            finally:
                with self.lock:
                    self.now -= 1

    filler = Concurrent()
    out = tmp_path / "out"
    export_to_path(LeafHidingStore(bs, allowed={bytes(small)}), root, out, filler=filler)
    for name, content in files.items():
        assert (out / name).read_bytes() == content
    assert (out / "sub" / "deep.bin").read_bytes() == (src / "sub" / "deep.bin").read_bytes()
    assert filler.most == disk_export.FILL_FILES
    assert not [p for p in out.rglob("*") if p.name.startswith(".shoal-")]


class FailingFiller(MemoryFiller):
    def __init__(self, store: MemoryBlockstore, fail_on: int) -> None:
        super().__init__(store)
        self.fail_on = fail_on
        self.seen_cancel = 0

    def fill(self, path: str, leaves: Iterable[Leaf], cancel: CancelFlag | None) -> None:
        with self.lock:
            n = len(self.calls)
            self.calls.append([])
        if n == self.fail_on:
            raise BlockNotFound("no holder had it")
        assert cancel is not None
        # A sibling failed: the flag stops this fill as a lane wait would stop.
        for _ in range(500):
            if cancel.is_set():
                with self.lock:
                    self.seen_cancel += 1
                cancel.check()
            threading.Event().wait(0.01)
        super().fill(path, leaves, cancel)


def test_a_failed_fill_undoes_the_whole_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.bin").write_bytes(random_bytes(3000, seed=i))
    bs = MemoryBlockstore()
    root = import_path(src, bs, _profile(256, 4, False)).cid
    out = tmp_path / "out"
    filler = FailingFiller(bs, fail_on=1)
    with pytest.raises(BlockNotFound):
        export_to_path(bs, root, out, filler=filler)
    assert not out.exists()
    assert filler.seen_cancel == 1  # the file filled beside the failing one was stopped
    assert list(tmp_path.iterdir()) == [src]


def test_cancel_stops_a_fill_and_leaves_no_file(tmp_path: Path) -> None:
    data = random_bytes(4000, seed=1)
    bs = MemoryBlockstore()
    root = import_bytes(data, bs, _profile(256, 4, False)).cid
    flag = CancelFlag()
    flag.set("the client went away")
    out = tmp_path / "f"
    with pytest.raises(Cancelled):
        export_to_path(bs, root, out, filler=MemoryFiller(bs), cancel=flag)
    assert list(tmp_path.iterdir()) == []


def test_a_leaf_longer_than_its_parent_says_is_malformed(tmp_path: Path) -> None:
    data = random_bytes(1000, seed=3)
    bs = MemoryBlockstore()
    root = import_bytes(data, bs, _profile(256, 4, False)).cid

    class Overlong(MemoryFiller):
        def fill(self, path: str, leaves: Iterable[Leaf], cancel: CancelFlag | None) -> None:
            got = list(leaves)
            with open(path, "r+b") as f:  # a filler that trusts nothing but writes too much
                for leaf in got:
                    f.seek(leaf.offset)
                    f.write(self.store.get(leaf.cid) + b"XX")

    with pytest.raises(MalformedBlock):
        export_to_path(bs, root, tmp_path / "f", filler=Overlong(bs))
    assert list(tmp_path.iterdir()) == []


def test_read_only_file_mode_is_kept_and_filler_can_write(tmp_path: Path) -> None:
    data = random_bytes(2000, seed=4)
    bs = MemoryBlockstore()
    root = import_bytes(data, bs, _profile(256, 4, False)).cid
    out = tmp_path / "ro"
    export_to_path(bs, root, out, filler=MemoryFiller(bs), umask=0o222)
    assert out.read_bytes() == data
    assert out.stat().st_mode & 0o777 == 0o444
