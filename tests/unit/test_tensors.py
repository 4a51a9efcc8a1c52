"""Lazy safetensors reads (shoal.store.dag.tensor_ranges) and the pure range walk (shoal.p2p.exchange.range_fetch.RangeWalk).

"Reads only the covering blocks" is checked by counting the blocks a
reader pulls out of the blockstore, not by timing.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shoal.p2p.exchange.range_fetch import RangeWalk
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.chunking.chunker import FixedChunker
from shoal.store.ipld.cid import CID
from shoal.store.errors import InvalidInput, MalformedBlock
from shoal.store.dag.exporter import read_file
from shoal.store.dag.importer import import_bytes, import_path
from shoal.store.chunking.profiles import UNIXFS_V1_2025
from shoal.store.chunking.safetensors import SafetensorsChunker, parse_header
from shoal.store.dag.tensor_ranges import SafetensorsObject, tensor_window
from tests.helpers_safetensors import make_safetensors, model_shapes

SHAPES = model_shapes(layers=3, hidden=256, vocab=500)  # ~3.6 MB, tensors 0.5 KB .. 0.5 MB


class Counting:
    """A block getter that records what was read."""

    def __init__(self, bs: MemoryBlockstore) -> None:
        self.bs = bs
        self.reads: list[tuple[CID, int]] = []

    def __call__(self, cid: CID) -> bytes:
        data = self.bs.get(cid)
        self.reads.append((cid, len(data)))
        return data

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.reads)


@pytest.fixture(scope="module")
def model() -> bytes:
    return make_safetensors(SHAPES, seed=3, metadata={"format": "pt"})


def _put(data: bytes, chunker: object, chunk: int = 64 * 1024) -> tuple[MemoryBlockstore, CID]:
    bs = MemoryBlockstore()
    profile = UNIXFS_V1_2025.with_overrides(chunk_size=chunk, max_links=8)
    return bs, import_bytes(data, bs, profile, chunker).cid  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["safetensors", "fixed"])
def test_every_tensor_reads_back(model: bytes, kind: str) -> None:
    chunker = SafetensorsChunker(64 * 1024) if kind == "safetensors" else FixedChunker(64 * 1024)
    bs, cid = _put(model, chunker)
    obj = SafetensorsObject.open(bs, cid)
    header = parse_header(model)
    assert list(obj.tensors) == [t.name for t in header.tensors]
    assert obj.metadata == {"format": "pt"}
    for t in header.tensors:
        assert obj.read_tensor(t.name) == model[header.data_start + t.begin:header.data_start + t.end]


def test_one_tensor_touches_only_its_blocks(model: bytes) -> None:
    bs, cid = _put(model, SafetensorsChunker(64 * 1024))
    header = parse_header(model)
    name = "layers.1.mlp.up.weight"  # 512 KiB: 8 leaves under 2 parents
    info = header.tensor(name)
    counting = Counting(bs)
    obj = SafetensorsObject.open(counting, cid)
    header_reads = counting.bytes
    assert obj.read_tensor(name) == model[header.data_start + info.begin:header.data_start + info.end]
    tensor_reads = counting.bytes - header_reads
    leaves = [n for c, n in counting.reads if c.codec.name == "raw"]
    nodes = sum(n for c, n in counting.reads if c.codec.name == "dag-pb")
    # Header: root + the header leaf (read twice: prefix, then JSON). Tensor: its leaves + path nodes.
    assert header_reads <= 2 * header.data_start + 3 * 4096
    assert tensor_reads <= info.nbytes + nodes
    assert sum(leaves) <= info.nbytes + 2 * header.data_start
    assert len(counting.reads) < len(list(bs.keys())) / 4


def test_window_inside_tensor_and_clipping(model: bytes) -> None:
    bs, cid = _put(model, SafetensorsChunker(64 * 1024))
    header = parse_header(model)
    info = header.tensor("embed.weight")
    base = header.data_start + info.begin
    assert tensor_window(bs, cid, "embed.weight") == (base, info.nbytes)
    assert tensor_window(bs, cid, "embed.weight", 10, 20) == (base + 10, 20)
    assert tensor_window(bs, cid, "embed.weight", info.nbytes - 5, 100) == (base + info.nbytes - 5, 5)
    assert tensor_window(bs, cid, "embed.weight", info.nbytes + 7)[1] == 0
    with pytest.raises(InvalidInput, match="no tensor named"):
        tensor_window(bs, cid, "nope")


@pytest.mark.parametrize("data,match", [
    (b"", "shorter than"),
    (b"\x05\x00\x00\x00\x00\x00\x00\x00{}", "past the end"),
    ((2).to_bytes(8, "little") + b"[]", "JSON object"),
    ((2).to_bytes(8, "little") + b"{}" + b"extra", "after the last tensor"),
])
def test_not_safetensors_is_invalid_input(data: bytes, match: str) -> None:
    bs, cid = _put(data, FixedChunker(4))
    with pytest.raises(InvalidInput, match=match):
        SafetensorsObject.open(bs, cid)


def test_directory_is_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"x")
    bs = MemoryBlockstore()
    cid = import_path(tmp_path / "d", bs).cid
    with pytest.raises(InvalidInput, match="dir"):
        tensor_window(bs, cid, "x")


def _walk(bs: MemoryBlockstore, root: CID, offset: int, length: int | None) -> set[str]:
    """Drive the pure RangeWalk over a local store; return the CIDs it asked for."""
    walk = RangeWalk(root, offset, length)
    asked: set[str] = set()
    todo = walk.start()
    while todo:
        cid = todo.pop()
        asked.add(str(cid))
        todo += walk.on_block(cid, bs.get(cid))
    return asked


def test_range_walk_asks_for_exactly_what_the_exporter_reads() -> None:
    data = random.Random(1).randbytes(300_000) + bytes(50_000)  # zero tail: repeated leaves
    bs, cid = _put(data, FixedChunker(1000), chunk=1000)
    rng = random.Random(2)
    cases = [(0, None), (0, 0), (299_999, 2), (len(data) - 1, 10), (len(data) + 5, 3)]
    cases += [(rng.randrange(len(data)), rng.randrange(1, 40_000)) for _ in range(30)]
    for offset, length in cases:
        counting = Counting(bs)
        out = b"".join(read_file(counting, cid, offset, length))
        end = len(data) if length is None else offset + length
        assert out == data[offset:end]
        expected = {str(c) for c, _ in counting.reads} if (length is None or length > 0) else set()
        assert _walk(bs, cid, offset, length) == expected, (offset, length)


def test_range_walk_rejects_lying_blocksizes() -> None:
    from shoal.store.ipld import dagpb, unixfs
    from shoal.store.ipld.cid import make_cid

    leaf = b"x" * 10
    leaf_cid = make_cid("raw", leaf)
    fs = unixfs.UnixFSData(unixfs.DataType.FILE, blocksizes=(11,))
    block = dagpb.encode(dagpb.PBNode((dagpb.PBLink(bytes(leaf_cid), "", 10),), unixfs.encode(fs)))
    root = make_cid("dag-pb", block)
    walk = RangeWalk(root, 0, None)
    assert walk.start() == [root]
    [child] = walk.on_block(root, block)
    with pytest.raises(MalformedBlock):
        walk.on_block(child, leaf)
