"""The shard format: one byte string per (object, shard index).

A shard is

    body   : stripes * piece_size bytes; piece s (shard's share of stripe s)
             at offset s * piece_size
    header : see below, `header_len` bytes
    footer : header_len (u64 big-endian) ‖ b"shoal-ec"   (16 bytes)

Why the header sits after the body (as Parquet's footer does): the encoder
learns each piece's hash only as it writes the piece, and a shard's own
sha256 (its raw CID, what a commitment and audits cover) must be computed
in the same single pass over the bytes, front to back. A reader seeks to
the end first; a network reader fetches the tail by range first.

Header (big-endian, fixed-width integers):

    b"SHEC" ‖ version u8 (=1) ‖ shard index u16 ‖ layout
    layout = object CID (u8 length ‖ bytes) ‖ K u16 ‖ M u16 ‖ piece_size u32
             ‖ block count u32 ‖ blocks (u8 CID length ‖ CID bytes ‖ length u32)*
             ‖ piece hashes: stripes * (K + M) * 32 bytes, stripe-major

The layout part is byte-identical in every shard of one object; its hash
(`layout_id`, sha256 with a domain tag) names the encoding, and is what the
owner will sign (with each shard's CID) when shards are placed. Every shard
carries every shard's piece hashes, so a reader holding any K shards checks
each piece before it decodes and knows which shard lied, and a repairer
checks each piece it rebuilds. The stripe count is not stored: it follows
from the block lengths, K and piece_size, and the hash table must have
exactly that many rows.

Decoding is bounded and strict: the header is at most MAX_HEADER_BYTES,
every count is checked against the bytes that remain before anything is
allocated for it, every CID must parse, lengths must add up, and nothing
may follow the hash table.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import BinaryIO

from shoal.store.erasure.layout import (
    MAX_PIECE_SIZE, PIECE_ALIGN, BlockRef, ErasureError, Layout, check_scheme,
)
from shoal.store.errors import InvalidCID
from shoal.store.ipld.cid import CID, RAW, cid_for_digest, cid_from_bytes
from shoal.store.proofs.commitment import Commitment

__all__ = [
    "MalformedShard", "ShardCorrupt", "ShardHeader", "ShardReader", "ShardInfo",
    "SHARD_VERSION", "MAX_HEADER_BYTES", "MAX_BLOCKS", "FOOTER_LEN", "layout_bytes", "header_size",
]

SHARD_VERSION = 1
HASH_LEN = 32
MAGIC = b"SHEC"
FOOTER_MAGIC = b"shoal-ec"
FOOTER_LEN = 16
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_BLOCKS = 1 << 22
MAX_CID_BYTES = 64
_LAYOUT_DOMAIN = b"shoal-ec-layout-v1\x00"
_FIXED = struct.Struct(">4sBH")  # magic, version, index
_PARAMS = struct.Struct(">HHII")  # K, M, piece_size, block count
_BLOCK_LEN = struct.Struct(">I")
_FOOTER = struct.Struct(">Q8s")


class MalformedShard(ErasureError):
    """Bytes that are not a shard of this format (bad header, footer or size)."""


class ShardCorrupt(ErasureError):
    """A shard's piece whose hash is not the one the layout records: the shard lies."""

    def __init__(self, index: int, stripe: int, detail: str = "") -> None:
        super().__init__(f"shard {index} is corrupt at stripe {stripe}" + (f": {detail}" if detail else ""))
        self.index = index
        self.stripe = stripe


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedShard(what)


def layout_bytes(layout: Layout, piece_hashes: bytes) -> bytes:
    """The layout part of every shard header of `layout`."""
    cid = bytes(layout.object_cid)
    parts = [bytes([len(cid)]), cid, _PARAMS.pack(layout.k, layout.m, layout.piece_size, len(layout.blocks))]
    for b in layout.blocks:
        raw = bytes(b.cid)
        parts += [bytes([len(raw)]), raw, _BLOCK_LEN.pack(b.length)]
    parts.append(piece_hashes)
    return b"".join(parts)


def header_size(layout: Layout) -> int:
    """Bytes of a shard header of `layout` (known before any piece is encoded)."""
    size = _FIXED.size + 1 + len(bytes(layout.object_cid)) + _PARAMS.size
    size += sum(1 + len(bytes(b.cid)) + _BLOCK_LEN.size for b in layout.blocks)
    return size + layout.stripes * layout.n * HASH_LEN


@dataclass(frozen=True)
class ShardHeader:
    """What a shard says about itself and its object. Validated when built."""

    layout: Layout
    piece_hashes: bytes  # stripes * (K + M) * 32, stripe-major
    index: int

    def __post_init__(self) -> None:
        _check(isinstance(self.index, int) and 0 <= self.index < self.layout.n, "shard index out of range")
        _check(len(self.piece_hashes) == self.layout.stripes * self.layout.n * HASH_LEN,
               "piece hash table does not match the stripe count")
        _check(len(self.layout.blocks) <= MAX_BLOCKS, "too many blocks")

    def piece_hash(self, stripe: int, index: int) -> bytes:
        """The sha256 shard `index`'s piece of `stripe` must have."""
        at = (stripe * self.layout.n + index) * HASH_LEN
        return self.piece_hashes[at:at + HASH_LEN]

    def layout_bytes(self) -> bytes:
        return layout_bytes(self.layout, self.piece_hashes)

    @property
    def layout_id(self) -> bytes:
        """sha256 naming the whole encoding (equal in every shard of the object)."""
        return hashlib.sha256(_LAYOUT_DOMAIN + self.layout_bytes()).digest()

    def encode(self) -> bytes:
        out = _FIXED.pack(MAGIC, SHARD_VERSION, self.index) + self.layout_bytes()
        _check(len(out) <= MAX_HEADER_BYTES, "header too large")
        return out

    def footer(self, header_len: int) -> bytes:
        return _FOOTER.pack(header_len, FOOTER_MAGIC)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> "ShardHeader":
        """Strict, bounded decode of `encode()` output."""
        buf = memoryview(data)
        end = len(buf)
        _check(end <= MAX_HEADER_BYTES, "header too large")
        _check(end >= _FIXED.size + 1, "header truncated")
        magic, version, index = _FIXED.unpack_from(buf, 0)
        _check(magic == MAGIC, "not a shard header")
        _check(version == SHARD_VERSION, f"unknown shard format version {version}")
        pos = _FIXED.size

        def take_cid() -> CID:
            nonlocal pos
            _check(pos < end, "header truncated")
            n = buf[pos]
            _check(0 < n <= MAX_CID_BYTES and pos + 1 + n <= end, "bad CID length")
            raw = bytes(buf[pos + 1:pos + 1 + n])
            pos += 1 + n
            try:
                cid = cid_from_bytes(raw)
            except InvalidCID as exc:
                raise MalformedShard(f"bad CID: {exc}") from None
            _check(bytes(cid) == raw, "CID not in canonical form")
            return cid

        obj = take_cid()
        _check(pos + _PARAMS.size <= end, "header truncated")
        k, m, piece_size, count = _PARAMS.unpack_from(buf, pos)
        pos += _PARAMS.size
        try:
            check_scheme(k, m)
        except ErasureError as exc:
            raise MalformedShard(str(exc)) from None
        _check(PIECE_ALIGN <= piece_size <= MAX_PIECE_SIZE and piece_size % PIECE_ALIGN == 0, "bad piece size")
        # each entry takes at least 1 + 2 + 4 bytes: refuse a count the bytes cannot hold
        _check(0 < count <= MAX_BLOCKS and count * 7 <= end - pos, "bad block count")
        blocks = []
        for _ in range(count):
            cid = take_cid()
            _check(pos + _BLOCK_LEN.size <= end, "header truncated")
            (length,) = _BLOCK_LEN.unpack_from(buf, pos)
            pos += _BLOCK_LEN.size
            blocks.append(BlockRef(cid, length))
        try:
            layout = Layout(obj, k, m, piece_size, tuple(blocks))
        except ErasureError as exc:
            raise MalformedShard(f"bad layout: {exc}") from None
        _check(end - pos == layout.stripes * layout.n * HASH_LEN, "piece hash table size does not match")
        return cls(layout, bytes(buf[pos:]), index)


def shard_cid(digest: bytes) -> CID:
    """A shard's content address: raw CIDv1 of its sha256."""
    return cid_for_digest(RAW, digest, 1)


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A shard just written: its index, content address (raw CID of the whole
    shard's sha256), length in bytes, and, if asked for, the storage
    commitment over its bytes (built in the same pass; audits of the shard's
    holder are checked against it exactly as a replica's are)."""

    index: int
    cid: CID
    length: int
    commitment: Commitment | None = None


class ShardReader:
    """Random access to one shard's pieces over a seekable binary file.

    Opening reads the footer and the header only; `piece(s)` reads one piece
    and checks it against the header's hash (ShardCorrupt otherwise).
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        f.seek(0, 2)
        size = f.tell()
        _check(size >= FOOTER_LEN, "shard shorter than its footer")
        f.seek(size - FOOTER_LEN)
        header_len, magic = _FOOTER.unpack(f.read(FOOTER_LEN))
        _check(magic == FOOTER_MAGIC, "not a shard (footer)")
        _check(0 < header_len <= min(MAX_HEADER_BYTES, size - FOOTER_LEN), "bad header length")
        body = size - FOOTER_LEN - header_len
        f.seek(body)
        self.header = ShardHeader.decode(f.read(header_len))
        _check(body == self.header.layout.shard_body_length, "shard body length does not match its layout")
        self.size = size

    @property
    def index(self) -> int:
        return self.header.index

    def piece(self, stripe: int) -> bytes:
        """Shard's piece of `stripe`, verified against the piece hash table."""
        p = self.header.layout.piece_size
        self._f.seek(stripe * p)
        data = self._f.read(p)
        if len(data) != p:
            raise ShardCorrupt(self.index, stripe, "short read")
        if hashlib.sha256(data).digest() != self.header.piece_hash(stripe, self.index):
            raise ShardCorrupt(self.index, stripe, "piece hash mismatch")
        return data

    def digest(self) -> bytes:
        """sha256 of the whole shard (reads it all): its identity, for audits and repair."""
        self._f.seek(0)
        h = hashlib.sha256()
        while chunk := self._f.read(1 << 20):
            h.update(chunk)
        return h.digest()
