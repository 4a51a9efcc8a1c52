"""Encode an object into K + M shards, reconstruct it from any K, rebuild lost shards.

The code: zfec's systematic Reed–Solomon over GF(2^8) (Vandermonde matrix,
the Tahoe-LAFS codec; C, wheels for CPython 3.11, ~300 MB/s per core here).
Shards 0..K-1 are the stripe's data pieces unchanged; K..K+M-1 are parity.

Streaming: every operation walks the stripes in order and holds one stripe
at a time (K + M pieces of `piece_size`), plus the block being cut or
filled (at most dagpb.MAX_BLOCK_SIZE); the layout's tables (block CIDs and
piece hashes, ~70 bytes per block and 32 per piece) are the only part that
grows with the object.

How a lying shard is caught, twice:
1. Before decoding: every shard carries every shard's piece hashes
   (shoal.store.erasure.shard); each piece read is checked against the
   table, so a corrupt shard is named (index, stripe) and, when more than K
   shards were offered, dropped and replaced by a spare. The table itself
   is trusted only if every offered shard carries the same one (same
   `layout_id`) or it equals the one the caller expects (later: the one
   the owner signed).
2. After decoding: every block cut from the stream is hashed against its
   CID, and the blocks must be exactly the DAG under the object's CID in
   depth-first order (each block is the one the walk from the root expects
   next, and the walk ends with the table). So even a set of shards forged
   together, with a self-consistent table, cannot pass off other bytes as
   the object: the root CID anchors everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

import zfec

from shoal.store.dag.walk import DagWalk, block_identity
from shoal.store.erasure.layout import (
    DEFAULT_PIECE_SIZE, MAX_PIECE_SIZE, BlockRef, ErasureError, Layout, dag_blocks, dag_links, sha256_of,
)
from shoal.store.erasure.shard import (
    MAX_HEADER_BYTES, ShardCorrupt, ShardHeader, ShardInfo, ShardReader, header_size, shard_cid,
)
from shoal.store.errors import HashMismatch
from shoal.store.ipld.cid import CID, RAW_CODE
from shoal.store.proofs.commitment import MerkleBuilder

__all__ = [
    "NotEnoughShards", "LayoutMismatch", "plan", "plan_object", "encode", "encode_object",
    "reconstruct", "rebuild", "rebuild_from_blocks",
]


class NotEnoughShards(ErasureError):
    """Fewer than K distinct, healthy shards to decode from."""


class LayoutMismatch(ErasureError):
    """Shards that disagree on the encoding, or an encoding of another object,
    or blocks that are not the object's DAG in order."""


def plan(blocks: Sequence[BlockRef], k: int, m: int, piece_size: int = DEFAULT_PIECE_SIZE) -> Layout:
    """The layout of `blocks` (the object's DAG, root first, DFS order).

    Doubles the piece size while the shard header (which grows with the
    stripe count) would exceed its bound: very large objects get larger pieces.
    """
    layout = Layout.plan(blocks, k, m, piece_size)
    while header_size(layout) > MAX_HEADER_BYTES:
        if layout.piece_size * 2 > MAX_PIECE_SIZE:
            raise ErasureError("object too large for one erasure layout")
        layout = Layout.plan(blocks, k, m, layout.piece_size * 2)
    return layout


def plan_object(root: CID, get: Callable[[CID], bytes], size: Callable[[CID], int], k: int, m: int,
                piece_size: int = DEFAULT_PIECE_SIZE) -> Layout:
    """The layout of the DAG under `root`: reads inner nodes for their links,
    asks only the size of raw leaves (`size` is a Blockstore's `size`)."""
    refs: list[BlockRef] = []
    walk = DagWalk([root], key=block_identity)
    for cid in walk:
        if int(cid.codec.code) == RAW_CODE:
            refs.append(BlockRef(cid, size(cid)))
            continue
        data = get(cid)
        refs.append(BlockRef(cid, len(data)))
        walk.push(dag_links(cid, data))
    return plan(refs, k, m, piece_size)


class _ShardWriters:
    """Sinks being written front to back, each hashed as it goes (and, with
    `commit_segment_size`, fed to a storage-commitment builder)."""

    def __init__(self, indexes: Sequence[int], sinks: Sequence[BinaryIO],
                 commit_segment_size: int | None = None) -> None:
        if len(indexes) != len(sinks):
            raise ErasureError("one sink per shard")
        self.indexes = list(indexes)
        self.sinks = list(sinks)
        self.hashers = [hashlib.sha256() for _ in sinks]
        self.builders = ([MerkleBuilder(commit_segment_size) for _ in sinks]
                         if commit_segment_size is not None else None)
        self.lengths = [0] * len(sinks)

    def write(self, slot: int, data: bytes | memoryview) -> None:
        self.sinks[slot].write(data)
        self.hashers[slot].update(data)
        if self.builders is not None:
            self.builders[slot].update(data)
        self.lengths[slot] += len(data)

    def finish(self, layout: Layout, piece_hashes: bytes) -> list[ShardInfo]:
        out = []
        for slot, index in enumerate(self.indexes):
            header = ShardHeader(layout, piece_hashes, index)
            raw = header.encode()
            self.write(slot, raw)
            self.write(slot, header.footer(len(raw)))
            commitment = None if self.builders is None else self.builders[slot].finish()
            out.append(ShardInfo(index, shard_cid(self.hashers[slot].digest()), self.lengths[slot], commitment))
        return out


def _stripes_of(layout: Layout, blocks: Iterable[tuple[CID, bytes | memoryview]],
                verify: bool) -> Iterator[memoryview]:
    """The padded stripes (K * piece_size bytes each) of the blocks' stream,
    checking the blocks are the layout's (CID, length, and hash if `verify`).
    Yields views of one reused buffer: use each before asking for the next."""
    size = layout.stripe_bytes
    buf = bytearray(size)
    view = memoryview(buf)
    fill = 0
    it = iter(blocks)
    for ref in layout.blocks:
        try:
            cid, data = next(it)
        except StopIteration:
            raise LayoutMismatch("fewer blocks than the layout lists") from None
        if bytes(cid) != bytes(ref.cid) or len(data) != ref.length:
            raise LayoutMismatch(f"block {cid} is not the layout's next block {ref.cid}")
        if verify and hashlib.sha256(data).digest() != sha256_of(cid):
            raise HashMismatch(cid)
        src = memoryview(data)
        while src:
            n = min(len(src), size - fill)
            view[fill:fill + n] = src[:n]
            fill += n
            src = src[n:]
            if fill == size:
                yield view
                fill = 0
    if next(it, None) is not None:
        raise LayoutMismatch("more blocks than the layout lists")
    if fill:
        view[fill:] = bytes(size - fill)
        yield view


def encode(layout: Layout, blocks: Iterable[tuple[CID, bytes | memoryview]],
           sinks: Sequence[BinaryIO], *, verify: bool = True,
           commit_segment_size: int | None = None) -> list[ShardInfo]:
    """Write the K + M shards of `layout` to `sinks` (sink i gets shard i).

    `blocks` yields (CID, bytes) in the layout's order (`dag_blocks` gives
    them). Each sink is written front to back once (pipes and sockets do);
    returns each shard's CID and length, and its storage commitment if
    `commit_segment_size` is given.
    """
    if len(sinks) != layout.n:
        raise ErasureError(f"need {layout.n} sinks, got {len(sinks)}")
    k, n, p = layout.k, layout.n, layout.piece_size
    enc = zfec.Encoder(k, n)
    parity = tuple(range(k, n))
    writers = _ShardWriters(range(n), sinks, commit_segment_size)
    hashes = bytearray()
    for stripe in _stripes_of(layout, blocks, verify):
        data = tuple(stripe[j * p:(j + 1) * p] for j in range(k))
        pieces: list[bytes | memoryview] = list(data)
        if parity:
            pieces += enc.encode(data, parity)
        for j, piece in enumerate(pieces):
            hashes += hashlib.sha256(piece).digest()
            writers.write(j, piece)
    return writers.finish(layout, bytes(hashes))


def encode_object(root: CID, get: Callable[[CID], bytes], size: Callable[[CID], int],
                  sinks: Sequence[BinaryIO], k: int, m: int, piece_size: int = DEFAULT_PIECE_SIZE,
                  commit_segment_size: int | None = None) -> tuple[Layout, list[ShardInfo]]:
    """Plan and encode the DAG under `root` from a blockstore's `get`/`size`
    (whose `get` already verifies, so blocks are not hashed twice)."""
    layout = plan_object(root, get, size, k, m, piece_size)
    return layout, encode(layout, dag_blocks(root, get), sinks, verify=False,
                          commit_segment_size=commit_segment_size)


class _StripeSource:
    """Verified pieces of each stripe from a pool of shards, K at a time.

    Prefers data shards (no decoding when all are healthy), then parity.
    A shard whose piece fails its hash is dropped for the rest of the walk
    (recorded in `bad`) and the next spare takes its place.
    """

    def __init__(self, shards: Sequence[ShardReader], layout_id: bytes | None, object_cid: CID | None) -> None:
        if not shards:
            raise NotEnoughShards("no shards")
        ids = {s.header.layout_id for s in shards}
        if layout_id is None:
            if len(ids) != 1:
                raise LayoutMismatch("the shards disagree on the layout (pass the signed layout id)")
            layout_id = ids.pop()
        pool = [s for s in shards if s.header.layout_id == layout_id]
        if not pool:
            raise LayoutMismatch("no shard carries the expected layout")
        self.header = pool[0].header
        self.layout = self.header.layout
        if object_cid is not None and bytes(self.layout.object_cid) != bytes(object_cid):
            raise LayoutMismatch(f"shards encode {self.layout.object_cid}, not {object_cid}")
        # several copies of one shard index (fetched from two holders) are spares of each other
        self.pool = sorted(pool, key=lambda r: r.index)
        self.bad: dict[int, ShardCorrupt] = {}  # position in pool -> why it was dropped
        self._dec = zfec.Decoder(self.layout.k, self.layout.n)
        self._check_enough()

    def _check_enough(self) -> None:
        healthy = len({r.index for pos, r in enumerate(self.pool) if pos not in self.bad})
        if healthy < self.layout.k:
            detail = "; ".join(str(e) for e in self.bad.values())
            raise NotEnoughShards(f"{healthy} healthy shards, need {self.layout.k}" + (f" ({detail})" if detail else ""))

    def pieces(self, stripe: int) -> tuple[list[bytes], list[int]]:
        """K verified pieces of `stripe` from K distinct shards, and their indexes."""
        got: list[bytes] = []
        idx: list[int] = []
        for pos, r in enumerate(self.pool):
            if len(got) == self.layout.k:
                break
            if pos in self.bad or (idx and idx[-1] == r.index):
                continue
            try:
                got.append(r.piece(stripe))
                idx.append(r.index)
            except ShardCorrupt as exc:
                self.bad[pos] = exc
                self._check_enough()
        if len(got) < self.layout.k:
            self._check_enough()
            raise NotEnoughShards(f"only {len(got)} shards answered for stripe {stripe}")
        return got, idx

    def data(self, stripe: int) -> tuple[bytes | memoryview, ...]:
        """The K data pieces of `stripe`, decoded if a data shard is missing."""
        got, idx = self.pieces(stripe)
        if idx == list(range(self.layout.k)):
            return tuple(got)
        return tuple(self._dec.decode(tuple(got), tuple(idx)))


def reconstruct(shards: Sequence[ShardReader], object_cid: CID, *,
                layout_id: bytes | None = None) -> Iterator[tuple[CID, bytes]]:
    """The object's blocks, in the layout's order, from any K healthy shards.

    `shards` may hold more than K (spares replace shards found corrupt).
    Each block is checked against its CID and against the DAG walk from
    `object_cid`; raises ShardCorrupt-derived NotEnoughShards, LayoutMismatch
    or HashMismatch instead of yielding a wrong block.
    """
    src = _StripeSource(shards, layout_id, object_cid)
    layout = src.layout
    walk = DagWalk([object_cid], key=block_identity)
    refs = iter(layout.blocks)
    current: BlockRef | None = None
    buf = bytearray()

    def finish(ref: BlockRef, data: bytes) -> tuple[CID, bytes]:
        expected = next(walk, None)
        if expected is None or block_identity(expected) != block_identity(ref.cid):
            raise LayoutMismatch(f"block {ref.cid} is not the next block of the DAG under {object_cid}")
        if hashlib.sha256(data).digest() != sha256_of(ref.cid):
            raise HashMismatch(ref.cid, "rebuilt from shards")
        walk.push(dag_links(expected, data))
        return ref.cid, data

    def next_ref() -> BlockRef | None:
        return next(refs, None)

    current = next_ref()
    remaining = layout.data_length
    for s in range(layout.stripes):
        for piece in src.data(s):  # piece by piece: never a joined copy of the stripe
            take = min(remaining, len(piece))
            remaining -= take
            stream = memoryview(piece)[:take]
            while current is not None:
                need = current.length - len(buf)
                if need > len(stream):
                    buf += stream
                    break
                buf += stream[:need]
                stream = stream[need:]
                block = bytes(buf)
                buf.clear()
                yield finish(current, block)
                del block
                current = next_ref()
    while current is not None and current.length == 0:  # empty blocks at the very end
        yield finish(current, b"")
        current = next_ref()
    if current is not None or next(walk, None) is not None:
        raise LayoutMismatch(f"the layout does not hold the whole DAG under {object_cid}")


def rebuild(lost: Sequence[int], healthy: Sequence[ShardReader], sinks: Sequence[BinaryIO], *,
            layout_id: bytes | None = None, commit_segment_size: int | None = None) -> list[ShardInfo]:
    """Write shards `lost` (sink i gets lost[i]) from any K healthy shards.

    Each rebuilt piece must hash to the layout's record of it, so a repair
    never places a shard that differs from the one that was lost (same CID:
    its commitment and the owner's signature stay valid; with
    `commit_segment_size` the commitment is rebuilt in the same pass, for
    the new holder's leaf file).
    """
    src = _StripeSource(healthy, layout_id, None)
    layout = src.layout
    if len(set(lost)) != len(lost) or not all(0 <= i < layout.n for i in lost):
        raise ErasureError("lost shard indexes must be distinct and in range")
    writers = _ShardWriters(lost, sinks, commit_segment_size)
    enc = zfec.Encoder(layout.k, layout.n)
    want = tuple(lost)
    for s in range(layout.stripes):
        data = src.data(s)
        pieces = enc.encode(data, want) if want else []
        for slot, piece in enumerate(pieces):
            if hashlib.sha256(piece).digest() != src.header.piece_hash(s, want[slot]):
                raise LayoutMismatch(f"rebuilt piece of shard {want[slot]} at stripe {s} does not match the layout")
            writers.write(slot, piece)
    return writers.finish(layout, src.header.piece_hashes)


def rebuild_from_blocks(layout: Layout, blocks: Iterable[tuple[CID, bytes | memoryview]], lost: Sequence[int],
                        sinks: Sequence[BinaryIO], *, layout_id: bytes, verify: bool = True,
                        commit_segment_size: int | None = None) -> list[ShardInfo]:
    """Write shards `lost` (sink i gets lost[i]) by encoding the object's own
    blocks again: what an owner that still holds the object does instead of
    fetching K shards (one object's worth of traffic) to rebuild one.

    zfec produces only the parity pieces asked for, but every shard's header
    carries every piece's hash, so each stripe is encoded whole (one stripe
    in memory, as `encode`) and only the lost pieces are written. The result
    must be the encoding named `layout_id` (the one the shards were placed
    under): otherwise LayoutMismatch, and the caller discards the sinks, so
    a repair never places a shard that differs from the lost one.
    """
    if len(set(lost)) != len(lost) or not all(0 <= i < layout.n for i in lost):
        raise ErasureError("lost shard indexes must be distinct and in range")
    if len(sinks) != len(lost):
        raise ErasureError("one sink per lost shard")
    k, n, p = layout.k, layout.n, layout.piece_size
    enc = zfec.Encoder(k, n)
    parity = tuple(range(k, n))
    slots = {index: slot for slot, index in enumerate(lost)}
    writers = _ShardWriters(lost, sinks, commit_segment_size)
    hashes = bytearray()
    for stripe in _stripes_of(layout, blocks, verify):
        pieces: list[bytes | memoryview] = [stripe[j * p:(j + 1) * p] for j in range(k)]
        pieces += enc.encode(tuple(pieces), parity)
        for j, piece in enumerate(pieces):
            hashes += hashlib.sha256(piece).digest()
            slot = slots.get(j)
            if slot is not None:
                writers.write(slot, piece)
    if ShardHeader(layout, bytes(hashes), 0).layout_id != layout_id:
        raise LayoutMismatch(f"the local blocks of {layout.object_cid} encode to another layout than the shards'")
    return writers.finish(layout, bytes(hashes))
