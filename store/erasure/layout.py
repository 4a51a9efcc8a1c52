"""How an object's blocks are cut into stripes of K data pieces.

What is encoded: every block of the object's DAG, root and inner nodes
included, once each (deduplicated by codec + multihash, the blockstore's own
notion of "the same block"), in depth-first pre-order, the order of the one
DAG walk (shoal.store.dag.walk) and of CAR export. Why all blocks and not
only the leaves: a reader that has nothing but K shards must be able to
serve the object as it was put, with the same CID and DAG; the inner nodes
are a small share of the bytes (a 1 MiB-chunk file has one 174-link node
per 174 MiB) and without them the root could not be rebuilt. Why DFS order:
a reader can check, while blocks stream out, that each one is the next the
walk from the object's CID expects (so a consistent lie in the layout is
caught, not only a corrupted piece), and a reader of a byte range finds its
leaves in one run of stripes.

The byte stream: the blocks concatenated in that order, `data_length` bytes.
It is cut into stripes of K * `piece_size` bytes; stripe s holds stream
bytes [s*K*P, (s+1)*K*P), and its data piece j (shard j, j < K) is the j-th
P-byte slice of it, so data shards are plain object bytes (systematic: a
reader with all K data shards never decodes). Only the last stripe is short;
it is padded with zero bytes to K * P (the padding is never stored in any
block, and the reader drops it by `data_length`). Blocks may straddle
stripes: the stripe boundaries are fixed by bytes, not by blocks, so no
space is lost to packing. `piece_size` is the smallest multiple of 64 that
carries the stream in as many stripes as the requested piece size needs:
padding is under 64 bytes per piece, for small objects and large ones.

What describes a stripe: nothing stored per stripe but its pieces' hashes
(shoal.store.erasure.shard); the blocks a stripe covers follow from the
block table (CID and length of each block, in order) and the stripe's byte
range (`Layout.blocks_in_stripe`). That table is enough to cut rebuilt
bytes back into blocks and verify each against its CID.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from shoal.store.dag.walk import DagWalk, block_identity
from shoal.store.errors import InvalidCID, MalformedBlock, StoreError
from shoal.store.ipld import dagpb
from shoal.store.ipld.cid import CID, DAG_PB_CODE, cid_from_bytes, multihash_digest

__all__ = [
    "ErasureError", "BlockRef", "Layout", "PIECE_ALIGN", "DEFAULT_PIECE_SIZE", "MAX_PIECE_SIZE",
    "MAX_K", "MAX_SHARDS", "sha256_of", "dag_links", "dag_blocks", "dag_block_refs",
]

PIECE_ALIGN = 64
DEFAULT_PIECE_SIZE = 256 * 1024
"""Bytes of one shard per stripe. Memory of every codec operation is about
(K + M) * piece_size (+ one block), so 256 KiB keeps 10+6 at ~4 MiB while
zfec still runs at full speed (its per-call overhead is amortised past ~64 KiB)."""
MAX_PIECE_SIZE = 16 * 1024 * 1024
MAX_K = 128
MAX_SHARDS = 256  # zfec's limit on K + M (GF(2^8))


class ErasureError(StoreError):
    """Base of the erasure package's errors: bad parameters, bad or lying shards."""


@dataclass(frozen=True, slots=True)
class BlockRef:
    """One block of the layout: its CID and its length in bytes."""

    cid: CID
    length: int


def check_scheme(k: int, m: int) -> None:
    """Raise ErasureError unless K data + M parity shards is a scheme zfec can code."""
    if not (isinstance(k, int) and isinstance(m, int)) or isinstance(k, bool) or isinstance(m, bool):
        raise ErasureError("K and M must be integers")
    if not 1 <= k <= MAX_K or m < 0 or k + m > MAX_SHARDS:
        raise ErasureError(f"unsupported scheme {k}+{m}: need 1 <= K <= {MAX_K}, M >= 0, K + M <= {MAX_SHARDS}")


def choose_piece_size(data_length: int, k: int, piece_size: int = DEFAULT_PIECE_SIZE) -> int:
    """The piece size a layout of `data_length` bytes over K data shards uses."""
    if not PIECE_ALIGN <= piece_size <= MAX_PIECE_SIZE or piece_size % PIECE_ALIGN:
        raise ErasureError(f"piece size must be a multiple of {PIECE_ALIGN} in [{PIECE_ALIGN}, {MAX_PIECE_SIZE}]")
    # as few stripes as `piece_size` allows, then the smallest aligned piece
    # that fills them: padding stays under 64 bytes per piece, not a stripe
    stripes = max(1, -(-data_length // (k * piece_size)))
    per_piece = -(-data_length // (stripes * k))
    return min(piece_size, max(PIECE_ALIGN, -(-per_piece // PIECE_ALIGN) * PIECE_ALIGN))


@dataclass(frozen=True)
class Layout:
    """Where every byte of an object lies across K + M shards. Validated when built."""

    object_cid: CID
    k: int
    m: int
    piece_size: int
    blocks: tuple[BlockRef, ...]

    def __post_init__(self) -> None:
        check_scheme(self.k, self.m)
        if not PIECE_ALIGN <= self.piece_size <= MAX_PIECE_SIZE or self.piece_size % PIECE_ALIGN:
            raise ErasureError("bad piece size")
        if not self.blocks:
            raise ErasureError("a layout needs at least the root block")
        if bytes(self.blocks[0].cid) != bytes(self.object_cid):
            raise ErasureError("the first block of a layout must be the object's root")
        offsets = [0]
        for b in self.blocks:
            if not 0 <= b.length <= dagpb.MAX_BLOCK_SIZE:
                raise ErasureError(f"block length {b.length} out of range")
            offsets.append(offsets[-1] + b.length)
        object.__setattr__(self, "_offsets", tuple(offsets))

    @classmethod
    def plan(cls, blocks: Sequence[BlockRef], k: int, m: int,
             piece_size: int = DEFAULT_PIECE_SIZE) -> "Layout":
        """The layout of `blocks` (root first, DFS order) over K + M shards."""
        check_scheme(k, m)
        if not blocks:
            raise ErasureError("a layout needs at least the root block")
        total = sum(b.length for b in blocks)
        return cls(blocks[0].cid, k, m, choose_piece_size(total, k, piece_size), tuple(blocks))

    @property
    def n(self) -> int:
        """Shards in all: K + M."""
        return self.k + self.m

    @property
    def data_length(self) -> int:
        """Bytes of all blocks together (the unpadded stream)."""
        offsets: tuple[int, ...] = getattr(self, "_offsets")
        return offsets[-1]

    @property
    def stripe_bytes(self) -> int:
        """Stream bytes one stripe carries: K * piece_size."""
        return self.k * self.piece_size

    @property
    def stripes(self) -> int:
        """How many stripes: ceil(data_length / (K * piece_size)); 0 for an empty stream."""
        return -(-self.data_length // self.stripe_bytes)

    @property
    def shard_body_length(self) -> int:
        """Bytes of pieces in each shard: one piece per stripe."""
        return self.stripes * self.piece_size

    def block_offset(self, i: int) -> int:
        """Where block i starts in the stream."""
        offsets: tuple[int, ...] = getattr(self, "_offsets")
        return offsets[i]

    def blocks_in_stripe(self, s: int) -> range:
        """Indexes of the blocks stripe s covers: those with a byte in it, and an
        empty block whose offset falls in it."""
        if not 0 <= s < self.stripes:
            raise IndexError(s)
        lo, hi = s * self.stripe_bytes, (s + 1) * self.stripe_bytes
        offsets: tuple[int, ...] = getattr(self, "_offsets")
        # first block ending after lo (or empty and starting at lo)
        first = max(0, bisect.bisect_left(offsets, lo) - 1)
        while first < len(self.blocks) and offsets[first + 1] <= lo and not (
                self.blocks[first].length == 0 and offsets[first] >= lo):
            first += 1
        last = bisect.bisect_left(offsets, hi, lo=first)
        return range(first, min(last, len(self.blocks)))


def sha256_of(cid: CID) -> bytes:
    """The sha2-256 digest a block of `cid` must hash to (ErasureError for another hash)."""
    mh = bytes(cid.digest)
    if mh[:2] != b"\x12\x20" or len(mh) != 34:
        raise ErasureError(f"{cid}: only sha2-256 CIDs are supported")
    return multihash_digest(cid)


def dag_links(cid: CID, data: bytes | memoryview) -> list[CID]:
    """The CIDs a block links to, in stored order (none for raw blocks)."""
    if int(cid.codec.code) != DAG_PB_CODE:
        return []
    node = dagpb.decode(data)
    out = []
    for link in node.links:
        try:
            out.append(cid_from_bytes(link.hash))
        except InvalidCID as exc:
            raise MalformedBlock(f"link to an unsupported CID: {exc}") from None
    return out


def dag_blocks(root: CID, get: Callable[[CID], bytes]) -> Iterator[tuple[CID, bytes]]:
    """Every block of the DAG under `root`, once each, in the layout's order.

    `get` returns verified bytes (a Blockstore's `get` does). One block in
    memory at a time, plus the walk's stack of CIDs.
    """
    walk = DagWalk([root], key=block_identity)
    for cid in walk:
        data = get(cid)
        yield cid, data
        walk.push(dag_links(cid, data))


def dag_block_refs(root: CID, get: Callable[[CID], bytes]) -> list[BlockRef]:
    """The block table of the DAG under `root` (reads every block once)."""
    return [BlockRef(cid, len(data)) for cid, data in dag_blocks(root, get)]
