"""UnixFS HAMT sharded directories, laid out exactly as the IPFS importers do.

Why: one flat directory node holding every link of a large dataset directory
would exceed the block limit, so IPFS splits it into a hash array mapped
trie of `HAMTShard` nodes. For Shoal's CIDs to equal the npm importer's the
trie must be identical, so the rules below follow the UnixFS spec and what
`ipfs-unixfs-importer` 17.1.1 (with `hamt-sharding`) writes:

- Hash: murmur3-x64-64 of the entry name's bytes: the first 8 bytes of
  MurmurHash3_x64_128 (seed 0, h1 big-endian). The bucket index at each
  level is the next log2(fanout) bits of that hash, most significant first;
  when the 64 bits run out, the stream continues with the hash of
  name + one byte holding the rehash count (1, 2, ...).
- Trie: an entry sits in the shallowest bucket where no other name shares
  its index path; two names that collide at a slot push a sub-shard there.
  Without deletions this shape does not depend on insertion order.
- Node: dag-pb with links in slot order. A link to an entry is named
  `<slot as uppercase hex, zero-padded to the width of fanout-1><name>`, a
  link to a sub-shard just `<slot>`; Tsize is the cumulative size below.
  Data is a UnixFS HAMTShard with the occupancy bitfield as big-endian
  bytes (bit i = slot i, leading zero bytes dropped), hashType 0x22
  (murmur3-x64-64) and fanout.

Not here: deciding *when* to shard (the importer's size estimate), reading
shards (`shoal.store.dag.exporter` walks them), mutating existing shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from shoal.store.ipld import dagpb, unixfs
from shoal.store.ipld.murmur3 import murmur3_x64_64

__all__ = ["HAMT_HASH_CODE", "HamtEntry", "BuiltShard", "build", "slot_path", "bitfield"]

HAMT_HASH_CODE = 0x22  # multicodec murmur3-x64-64
DEFAULT_FANOUT = 256


@dataclass(frozen=True, slots=True)
class HamtEntry:
    """One directory entry: its name and the link to its (already built) node."""

    name: bytes
    cid_bytes: bytes
    tsize: int


@dataclass(frozen=True, slots=True)
class BuiltShard:
    """The root shard: its binary CID, cumulative size, and how many shard nodes were written."""

    cid_bytes: bytes
    tsize: int
    nodes: int


def _bits_for(fanout: int) -> int:
    if not unixfs.valid_hamt_fanout(fanout):
        raise ValueError(f"HAMT fanout must be a power of two in {unixfs.HAMT_MIN_FANOUT}.."
                         f"{unixfs.HAMT_MAX_FANOUT}, not {fanout}")
    return fanout.bit_length() - 1


def _hash_bits(name: bytes) -> Iterator[int]:
    """The name's infinite bit stream, MSB first: hash(name), hash(name+[1]), ..."""
    depth = 0
    while True:
        value = name if depth == 0 else name + bytes((depth & 0xFF,))
        h = int.from_bytes(murmur3_x64_64(value), "big")
        for shift in range(63, -1, -1):
            yield (h >> shift) & 1
        depth += 1


def slot_path(name: bytes, fanout: int = DEFAULT_FANOUT) -> Iterator[int]:
    """The slot index of `name` at depth 0, 1, 2, ... of a HAMT with this fanout."""
    bits = _bits_for(fanout)
    if 64 % bits == 0:  # slots never straddle two hashes: take them straight from each
        mask, depth = fanout - 1, 0
        while True:
            key = name if depth == 0 else name + bytes((depth & 0xFF,))
            h = int.from_bytes(murmur3_x64_64(key), "big")
            for shift in range(64 - bits, -1, -bits):
                yield (h >> shift) & mask
            depth += 1
    stream = _hash_bits(name)
    while True:
        slot = 0
        for _ in range(bits):
            slot = (slot << 1) | next(stream)
        yield slot


class _Leaf:
    __slots__ = ("entry", "_path", "_slots")

    def __init__(self, entry: HamtEntry, fanout: int) -> None:
        self.entry = entry
        self._path = slot_path(entry.name, fanout)
        self._slots: list[int] = []

    def slot(self, depth: int) -> int:
        while len(self._slots) <= depth:
            self._slots.append(next(self._path))
        return self._slots[depth]


@dataclass
class _Bucket:
    children: dict[int, "_Leaf | _Bucket"] = field(default_factory=dict)


def _insert(root: _Bucket, leaf: _Leaf) -> None:
    bucket, depth = root, 0
    while True:
        slot = leaf.slot(depth)
        existing = bucket.children.get(slot)
        if existing is None or (isinstance(existing, _Leaf) and existing.entry.name == leaf.entry.name):
            bucket.children[slot] = leaf
            return
        if isinstance(existing, _Leaf):
            sub = _Bucket()
            sub.children[existing.slot(depth + 1)] = existing
            bucket.children[slot] = sub
            existing = sub
        bucket, depth = existing, depth + 1


def bitfield(slots: Iterable[int]) -> bytes:
    """Occupancy bitfield as the JS importer writes it: big-endian, minimal, at least one byte."""
    value = 0
    for s in slots:
        value |= 1 << s
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _shard_data(slots: Iterable[int], fanout: int) -> bytes:
    return unixfs.encode(unixfs.UnixFSData(
        unixfs.DataType.HAMT_SHARD, data=bitfield(slots), hash_type=HAMT_HASH_CODE, fanout=fanout))


def build(entries: Iterable[HamtEntry], store: Callable[[bytes], bytes],
          fanout: int = DEFAULT_FANOUT) -> BuiltShard:
    """Write the shard nodes for `entries` (children first) and return the root.

    `store(block)` hashes and stores one encoded dag-pb node and returns its
    binary CID (the caller picks the CID version). Names must be unique.
    """
    width = len(f"{fanout - 1:X}")
    root = _Bucket()
    for entry in entries:
        _insert(root, _Leaf(entry, fanout))
    count = 0

    def write(bucket: _Bucket) -> tuple[bytes, int]:
        nonlocal count
        links: list[dagpb.PBLink] = []
        below = 0
        for slot in sorted(bucket.children):
            child = bucket.children[slot]
            prefix = f"{slot:0{width}X}"
            if isinstance(child, _Bucket):
                cid, tsize = write(child)
                links.append(dagpb.PBLink(cid, prefix, tsize))
            else:
                e = child.entry
                cid, tsize = e.cid_bytes, e.tsize
                name = prefix + e.name.decode("utf-8", "surrogateescape")
                links.append(dagpb.PBLink(cid, name, tsize))
            below += tsize
        block = dagpb.encode(dagpb.PBNode(tuple(links), _shard_data(bucket.children, fanout)))
        count += 1
        return store(block), len(block) + below

    cid, tsize = write(root)
    return BuiltShard(cid, tsize, count)
